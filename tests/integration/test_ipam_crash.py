"""IPAM crash safety: a process looping reserve/release is killed with SIGKILL at random instants,
200 times, on one store; then reconcile. Every address must be reserved by a live key or free,
no address ever has two owners and no key ever holds two addresses."""
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
from kubeweft.cni.ipam import Allocator

SUBNET = "10.250.0.0/28"          # 13 usable addresses, 16 keys: exhaustion is exercised too
KEYS = [(f"ctr{i:02d}", "eth0" if i % 3 else "net1") for i in range(16)]

CHILD = r"""
import random, sys
from kubeweft.cni.ipam import Allocator
from kubeweft.cni.errors import CniError
keys = [(f"ctr{i:02d}", "eth0" if i % 3 else "net1") for i in range(16)]
a = Allocator(sys.argv[1], sys.argv[2])
print("ready", flush=True)
while True:
    k = random.choice(keys)
    if random.random() < 0.6:
        try:
            a.reserve(*k)
        except CniError:
            pass
    else:
        a.release(*k)
"""


def check_store(d: Path) -> dict:
    """The on-disk invariants that must hold after any crash: every address file is a complete
    record of a single key, and no key owns two addresses. Returns address -> key."""
    net = ipaddress.IPv4Network(SUBNET)
    owners = {}
    for p in d.iterdir():
        addr = ipam.parse_address_name(p.name, net)
        if addr is None:
            continue
        key = ipam.parse_record(p.read_bytes())
        assert key is not None, f"half-written reservation {p.name}: {p.read_bytes()!r}"
        assert key in KEYS
        assert addr not in (net.network_address, net.network_address + 1, net.broadcast_address)
        owners[addr] = key
    dup = [k for k, n in Counter(owners.values()).items() if n > 1]
    assert not dup, f"keys holding two addresses: {dup}"
    return owners


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_kill9_at_random_instants_then_reconcile(tmp_path):
    rng = random.Random(int(os.environ.get("H6B_SEED", "6")))
    store = tmp_path / "ipam"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    kills = 0
    for _ in range(200):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(store), SUBNET], env=env,
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
        check_store(store)
    assert kills == 200

    # the agent restarts: some attachments are still alive, the rest must be freed
    a = Allocator(store, SUBNET)
    before = check_store(store)
    live = set(rng.sample(KEYS, 8))
    freed = a.reconcile(live)
    after = check_store(store)
    assert {k for k, _ in freed} == set(before.values()) - live
    assert set(after.values()) <= live
    assert not [p for p in store.iterdir() if p.name.startswith(ipam.TMP_PREFIX)]
    assert a.free_count() == 13 - len(after)
    # and the store still works: every live key can get (or keeps) its address, without a duplicate
    got = {k: a.reserve(*k) for k in sorted(live)}
    assert len(set(got.values())) == len(got)
    for addr, k in after.items():
        assert got[k].ip == addr
