"""IPAM crash safety: a process looping reserve/release is killed with SIGKILL at random instants,
200 times, on one store; then reconcile. Every address must be reserved by a live key or free,
no address ever has two owners and no key ever holds two addresses of one family. For an IPv4
range, an IPv6 one, and both (a dual-stack Pool, where a kill may fall between the two claims)."""
from __future__ import annotations

import ipaddress
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from kubeweft.cni import ipam
from kubeweft.cni.ipam import Pool

# 13 usable IPv4 addresses, 14 IPv6 ones, 16 keys: exhaustion is exercised too
RANGES = {"ipv4": ["10.250.0.0/28"], "ipv6": ["fd00:250::/124"], "dual": ["10.250.0.0/28", "fd00:250::/124"]}
KEYS = [(f"ctr{i:02d}", "eth0" if i % 3 else "net1") for i in range(16)]

CHILD = r"""
import random, sys
from kubeweft.cni.ipam import Pool
from kubeweft.cni.errors import CniError
keys = [(f"ctr{i:02d}", "eth0" if i % 3 else "net1") for i in range(16)]
a = Pool(sys.argv[1], sys.argv[2])
print("ready", flush=True)
while True:
    k = random.choice(keys)
    if random.random() < 0.6:
        try:
            a.claim(*k)
        except CniError:
            pass
    else:
        a.release(*k)
"""


def check_store(d: Path, ranges: list[str]) -> dict:
    """The on-disk invariants that must hold after any crash: every address file is a complete
    record of a single key, and no key owns two addresses of one family. Returns address -> key."""
    owners = {}
    for cidr in ranges:
        net = ipaddress.ip_network(cidr)
        mine = {}
        for p in d.iterdir():
            addr = ipam.parse_address_name(p.name, net)
            if addr is None:
                continue
            key = ipam.parse_record(p.read_bytes())
            assert key is not None, f"half-written reservation {p.name}: {p.read_bytes()!r}"
            assert key in KEYS
            forbidden = {net.network_address, net.network_address + 1} | (
                {net.broadcast_address} if net.version == 4 else set())     # IPv6 has no broadcast
            assert addr not in forbidden
            mine[addr] = key
        dup = [k for k, n in Counter(mine.values()).items() if n > 1]
        assert not dup, f"keys holding two addresses of {net}: {dup}"
        owners.update(mine)
    return owners


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.parametrize("family", list(RANGES))
def test_kill9_at_random_instants_then_reconcile(tmp_path, family):
    ranges = RANGES[family]
    rng = random.Random(int(os.environ.get("H6B_SEED", "6")))
    store = tmp_path / "ipam"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    kills = 0
    for _ in range(200):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(store), ",".join(ranges)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert child.stdout.readline().strip() == b"ready", child.stderr.read()
            time.sleep(rng.uniform(0, 0.03))
            assert child.poll() is None, child.stderr.read()
            child.send_signal(signal.SIGKILL)
            kills += 1
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)
            child.stdout.close()
            child.stderr.close()
        check_store(store, ranges)
    assert kills == 200

    # the agent restarts: some attachments are still alive, the rest must be freed
    a = Pool(store, ranges)
    before = check_store(store, ranges)
    live = set(rng.sample(KEYS, 8))
    freed = a.reconcile(live)
    after = check_store(store, ranges)
    assert {k for k, _ in freed} == set(before.values()) - live
    assert set(after.values()) <= live
    assert not [p for p in store.iterdir() if p.name.startswith(ipam.TMP_PREFIX)]
    for alloc in a.ranges:
        held = [addr for addr in after if addr in alloc.subnet]
        assert alloc.free_count() == ipam.count_usable(alloc.subnet) - len(held)
    # and the store still works: every live key gets an address of every range (keeping the one
    # it held, also a key a kill left with one family only), without a duplicate
    got = {k: a.claim(*k)[0] for k in sorted(live)}
    assert all(len(addrs) == len(ranges) for addrs in got.values())
    flat = [addr for addrs in got.values() for addr in addrs]
    assert len(set(flat)) == len(flat)
    for addr, k in after.items():
        assert addr in {g.ip for g in got[k]}
