"""Crash safety of the whole CNI path: the agent is killed with SIGKILL at random instants while
runtimes run 200 ADD/DEL cycles through the real executable, and restarted each time. A runtime
does what kubelet does: a failed ADD is followed by a DEL (which the shim does in-process while
the agent is down). At the end, after a GC with the attachments the runtimes believe in, every
address is either held by a live, wired sandbox or free: no duplicate, no leak, no stray veth.
On an IPv4 node and a dual-stack one (where a kill may fall between a pod's two claims)."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time

import pytest
from kubeweft.lab import netns as lab_netns

from .test_cni_conformance import ScratchNode

pytestmark = pytest.mark.integration

CYCLES = 200
WORKERS = 4
SLOTS_PER_WORKER = 3


def _run(node: ScratchNode, command: str, cid: str = "", pod: str | None = None,
         conf: dict | None = None) -> tuple[int, dict | None]:
    # nsenter rather than preexec_fn: these run on several threads at once
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
           "CNI_PATH": str(node.bin_dir), "CNI_NETNS": str(lab_netns.path(pod)) if pod else ""}
    env = {k: v for k, v in env.items() if v}
    proc = subprocess.run(["nsenter", f"--net={lab_netns.path(node.node)}", str(node.bin_dir / "kubeweft")],
                          input=json.dumps(conf or node.conf()).encode(), env=env, capture_output=True,
                          timeout=60, check=False)
    out = proc.stdout.decode()
    return proc.returncode, (json.loads(out) if out.strip() else None)


RANGES = {"ipv4": ("10.245.0.0/24",), "dual": ("10.245.0.0/24", "fd00:245::/64")}


@pytest.mark.parametrize("family", list(RANGES))
def test_kill_9_during_200_add_del_cycles(tmp_path, family):
    rng = random.Random(6)
    ranges = RANGES[family]
    with ScratchNode(tmp_path, pod_cidr=",".join(ranges), bridge="kwk") as node:
        slots = [node.new_pod() for _ in range(WORKERS * SLOTS_PER_WORKER)]
        attached: dict[str, str] = {}              # pod netns -> container id (the runtime's view)
        lock = threading.Lock()
        done = threading.Event()
        counts = {"cycles": 0, "add_ok": 0, "add_failed": 0, "kills": 0}
        errors: list[str] = []

        def worker(w: int) -> None:
            mine = slots[w * SLOTS_PER_WORKER:(w + 1) * SLOTS_PER_WORKER]
            n = 0
            while not done.is_set():
                with lock:
                    if counts["cycles"] >= CYCLES:
                        return
                    counts["cycles"] += 1
                pod = mine[n % len(mine)]
                n += 1
                cid = attached.get(pod)
                if cid is None:
                    cid = f"w{w}c{n}"
                    rc, out = _run(node, "ADD", cid, pod)
                    if rc == 0:
                        attached[pod] = cid
                        counts["add_ok"] += 1
                        continue
                    counts["add_failed"] += 1
                    if out is None or out.get("code") not in (11, 100, 104):
                        errors.append(f"ADD {cid}: {out}")
                # DEL (also after a failed ADD, as kubelet does); it must always succeed
                rc, out = _run(node, "DEL", cid, pod)
                if rc != 0:
                    errors.append(f"DEL {cid}: {out}")
                attached.pop(pod, None)

        def killer() -> None:
            while not done.is_set():
                time.sleep(rng.uniform(0.1, 0.8))
                if done.is_set():
                    return
                node.stop_agent(signal.SIGKILL)
                counts["kills"] += 1
                time.sleep(rng.uniform(0.0, 0.3))    # some calls meet no agent at all
                node.start_agent()

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
        k = threading.Thread(target=killer)
        for t in [*threads, k]:
            t.start()
        for t in threads:
            t.join(240)
        done.set()
        k.join(60)
        assert not any(t.is_alive() for t in [*threads, k]), "workers or killer hung"
        assert not errors, errors[:5]
        assert counts["kills"] >= 5 and counts["add_ok"] >= 20, counts

        # the runtime's GC with the attachments it believes in
        valid = [{"containerID": cid, "ifname": "eth0"} for cid in attached.values()]
        rc, out = _run(node, "GC", conf=node.conf(**{"cni.dev/valid-attachments": valid}))
        assert rc == 0, out

        reserved = node.reserved()                        # address -> container id
        by_cid: dict[str, list[str]] = {}
        for addr, cid in sorted(reserved.items()):
            by_cid.setdefault(cid, []).append(addr)
        # one address of every range per container: none twice in a family, none missing
        assert all(len(a) == len(ranges) and len({":" in x for x in a}) == len(ranges) for a in by_cid.values()), \
            by_cid
        assert set(by_cid) == set(attached.values()), (sorted(by_cid), sorted(attached.values()))
        prefix = {":" in r: r.split("/")[1] for r in ranges}
        for pod in slots:
            addrs = sorted(node.pod_addrs(pod, family="all"))
            if pod in attached:
                assert addrs == sorted(f"{a}/{prefix[':' in a]}" for a in by_cid[attached[pod]]), (pod, addrs)
            else:
                assert addrs == [], (pod, addrs)
        assert len(node.host_veths()) == len(attached)
        # and the agent still works after all that
        extra = node.new_pod()
        rc, out = _run(node, "ADD", "after", extra)
        assert rc == 0 and len(out["ips"]) == len(ranges), out
        assert not {ip["address"].split("/")[0] for ip in out["ips"]} & set(reserved), out
