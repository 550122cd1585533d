"""Smoke test of the service proxy on the shared kubeweft lab (labk), plus the golden nft files
loaded into a kernel for real.

- a ClusterIP reached from a pod spreads over both endpoints (on two nodes), and the endpoints
  see the pod's own address (pod-to-ClusterIP is not masqueraded);
- a Service without endpoints refuses at once;
- every golden file of tests/unit/golden/services loads into nft 1.0.6 in a netns of ours.
The full feature matrix with real traffic is tests/integration/test_services_*.py.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from kubeweft.lab import netns as lab_netns

NS = "h9smoke"
GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden" / "services"
KUBEWEFT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubeweft"

MANIFEST = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-a, namespace: {NS}, labels: {{app: web}}}}
spec:
  nodeName: node1
  containers: [{{name: w, image: lab, ports: [{{containerPort: 8080, name: http}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-b, namespace: {NS}, labels: {{app: web}}}}
spec:
  nodeName: node2
  containers: [{{name: w, image: lab, ports: [{{containerPort: 8080, name: http}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}, labels: {{app: client}}}}
spec:
  nodeName: node1
  containers: [{{name: w, image: lab, ports: [{{containerPort: 9000}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nobody, namespace: {NS}}}
spec:
  selector: {{app: nobody}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


def probe(lab, source: str, target: str, count: int = 1, timeout: float = 2.0) -> list[dict]:
    proc = lab.cli("probe", "--from", source, "--count", str(count), "--timeout", str(timeout), "--json",
                   target, check=False, timeout=30 + count * timeout)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip().startswith("{")]


@pytest.fixture(scope="module")
def smoke(labk):
    labk.kubectl("apply", "-f", "-", input=MANIFEST)
    try:
        labk.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod", "--all", "--timeout=90s", timeout=120)
        ips = {p["metadata"]["name"]: p["status"]["podIP"]
               for p in json.loads(labk.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]}
        svcs = {s["metadata"]["name"]: s["spec"]["clusterIP"]
                for s in json.loads(labk.kubectl("get", "svc", "-n", NS, "-o", "json").stdout)["items"]}
        yield labk, ips, svcs
    finally:
        labk.kubectl("delete", "namespace", NS, "--wait=false", check=False)


@pytest.mark.timeout(180)
def test_clusterip_from_pod_reaches_both_endpoints(smoke):
    lab, ips, svcs = smoke
    seen: dict[str, set[str]] = {}
    deadline = time.monotonic() + 60          # endpoints and the agents' syncs follow the pods
    while time.monotonic() < deadline:
        for r in probe(lab, f"{NS}/client", f"{svcs['web']}:80", count=10):
            if r["outcome"] == "connected":
                seen.setdefault(r["pod"], set()).add(r["client"].rsplit(":", 1)[0])
        if len(seen) == 2:
            break
        time.sleep(1)
    assert set(seen) == {f"{NS}/web-a", f"{NS}/web-b"}, seen
    # pod-to-ClusterIP keeps the pod's address, on the local and on the remote endpoint alike
    assert all(clients == {ips["client"]} for clients in seen.values()), seen


@pytest.mark.timeout(120)
def test_service_without_endpoints_refuses_at_once(smoke):
    lab, _, svcs = smoke
    deadline = time.monotonic() + 30
    while True:
        (r,) = probe(lab, f"{NS}/client", f"{svcs['nobody']}:80")
        if r["outcome"] == "refused" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r["outcome"] == "refused", r
    assert r["ms"] < 500, r                    # a reset, not a timeout


@pytest.mark.timeout(120)
def test_kubeweft_services_lists_what_the_kernel_does_with_each_frontend(smoke):
    lab, ips, svcs = smoke
    want = sorted(f"{ips[p]}:8080" for p in ("web-a", "web-b"))
    deadline = time.monotonic() + 60
    while True:
        proc = lab.cli("node-exec", "node1", "--", str(KUBEWEFT), "services", "--json", timeout=60)
        rows = {(f["address"], f["clients"]): f for f in json.loads(proc.stdout)}
        web = rows.get((f"{svcs['web']}:80/tcp", "all"))
        if web and sorted(web["backends"]) == want or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert web is not None and web["action"] == "spread" and sorted(web["backends"]) == want, web
    assert rows[(f"{svcs['nobody']}:80/tcp", "all")]["action"] == "reject"
    text = lab.cli("node-exec", "node1", "--", str(KUBEWEFT), "services", timeout=60).stdout
    assert text.splitlines()[0].split() == ["FRONTEND", "CLIENTS", "SCHEDULER", "ACTION", "BACKENDS", "NOTES"]
    assert any(line.startswith(f"{svcs['web']}:80/tcp") for line in text.splitlines())


@pytest.fixture
def scratch_netns():
    name = "h9-golden"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


@pytest.mark.timeout(60)
def test_golden_files_load_into_the_kernel(scratch_netns):
    files = sorted(GOLDEN.glob("*.nft"))
    assert files
    for f in files:
        lab_netns.run(scratch_netns, ["nft", "flush", "ruleset"], check=True, timeout=10)
        proc = lab_netns.run(scratch_netns, ["nft", "-f", str(f)], capture_output=True, text=True,
                             timeout=20, check=False)
        assert proc.returncode == 0, f"{f.name}: {proc.stderr}"
