"""32 pods ADDed at once on one node, then DELeted at once, through the real executable and agent:
no duplicate address, every pod wired, then no leftover veth, reservation or pod interface."""
from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubeweft.lab import netns as lab_netns

from .test_cni_conformance import ScratchNode, sh

pytestmark = pytest.mark.integration

PODS = 32


def _run(node: ScratchNode, command: str, cid: str, pod: str) -> tuple[int, dict | None, str]:
    # nsenter rather than preexec_fn: these run on many threads at once
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": str(lab_netns.path(pod)),
           "CNI_IFNAME": "eth0", "CNI_PATH": str(node.bin_dir),
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=par;K8S_POD_NAME={cid}"}
    proc = subprocess.run(["nsenter", f"--net={lab_netns.path(node.node)}", str(node.bin_dir / "kubeweft")],
                          input=json.dumps(node.conf()).encode(), env=env, capture_output=True,
                          timeout=60, check=False)
    out = proc.stdout.decode()
    return proc.returncode, (json.loads(out) if out.strip() else None), proc.stderr.decode()


def test_32_parallel_adds_then_dels(tmp_path):
    with ScratchNode(tmp_path, pod_cidr="10.249.0.0/24", bridge="kwp") as node:
        pods = [node.new_pod() for _ in range(PODS)]
        cids = [f"par{i:02d}" for i in range(PODS)]
        with ThreadPoolExecutor(PODS) as pool:
            adds = list(pool.map(lambda a: _run(node, "ADD", *a), zip(cids, pods, strict=True)))
        failed = [(cid, out, err) for cid, (rc, out, err) in zip(cids, adds, strict=True) if rc != 0]
        assert not failed, failed
        addrs = [out["ips"][0]["address"] for _, out, _ in adds]
        assert len(set(addrs)) == PODS, "duplicate address handed out"
        veths = {out["interfaces"][1]["name"] for _, out, _ in adds}
        assert len(veths) == PODS and sorted(veths) == node.host_veths()
        assert sorted(node.reserved().values()) == sorted(cids)
        for pod, addr in zip(pods, addrs, strict=True):
            assert node.pod_addrs(pod) == [addr]
        # pods reach each other across the bridge
        sh("ping", "-c1", "-W2", addrs[-1].split("/")[0], netns=pods[0])

        with ThreadPoolExecutor(PODS) as pool:
            dels = list(pool.map(lambda a: _run(node, "DEL", *a), zip(cids, pods, strict=True)))
        assert all(rc == 0 and out is None for rc, out, _ in dels), dels
        assert node.host_veths() == []
        assert node.reserved() == {}
        assert all(node.pod_addrs(pod) == [] for pod in pods)
