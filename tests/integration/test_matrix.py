"""The connectivity matrix on a real 2-node reference lab, and the demo end to end.

Uses the shared `lab2` fixture (tests/integration/conftest.py); the pods live in a namespace of
their own and are deleted afterwards. In reference mode the kubelets route each node's pod
CIDR to the other nodes, so cross-node pairs must connect as well as same-node ones.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "h5-matrix"
PODS = {  # name -> (node, containerPorts)
    "a": ("node1", [{"containerPort": 80}]),
    "b": ("node1", []),                                            # none: 8080 TCP and UDP
    "c": ("node2", [{"containerPort": 81, "protocol": "UDP"}, {"containerPort": 80}]),
}


def pod_doc(name: str, node: str, ports: list[dict]) -> dict:
    container = {"name": "app", "image": "lab"}
    if ports:
        container["ports"] = ports
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "containers": [container]}}


@pytest.fixture(scope="module")
def pods(lab2):
    from kubernetes import client
    api = lab2.client()
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NS}})
        for name, (node, ports) in PODS.items():
            core.create_namespaced_pod(NS, pod_doc(name, node, ports))
        deadline = time.monotonic() + 90
        while True:
            items = core.list_namespaced_pod(NS, _request_timeout=10).items
            ready = {p.metadata.name: p for p in items if any(
                c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))}
            if len(ready) == len(PODS):
                break
            assert time.monotonic() < deadline, f"pods not Ready: {sorted(set(PODS) - set(ready))}"
            time.sleep(0.5)
        yield {n: (p.status.pod_ip, p.spec.node_name) for n, p in ready.items()}
    finally:
        for name in PODS:
            try:
                core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
            except client.ApiException:
                pass
        try:
            core.delete_namespace(NS)
        except client.ApiException:
            pass
        api.close()


def test_matrix_json_is_all_connected_with_the_right_pods(lab2, pods):
    proc = lab2.cli("matrix", "-n", NS, "--json", "--timeout", "2", check=False, timeout=120)
    doc = json.loads(proc.stdout)
    results = doc["results"]
    # 3 sources x (a:80/TCP + b:8080/TCP + b:8080/UDP + c:81/UDP + c:80/TCP)
    assert len(results) == 3 * 5
    assert {(r["to"], r["port"], r["proto"]) for r in results} == {
        (f"{NS}/a", 80, "TCP"), (f"{NS}/b", 8080, "TCP"), (f"{NS}/b", 8080, "UDP"),
        (f"{NS}/c", 81, "UDP"), (f"{NS}/c", 80, "TCP")}
    bad = [r for r in results if r["outcome"] != "connected" or r["pod"] != r["to"]]
    assert not bad, json.dumps(bad, indent=1)
    # the answering pod saw the source pod's own IP: no NAT between pods, same node or not
    ips = {f"{NS}/{n}": ip for n, (ip, _) in pods.items()}
    assert all(r["client"].rpartition(":")[0] == ips[r["from"]] for r in results)
    assert proc.returncode == 0


def test_matrix_table_is_drawn(lab2, pods):
    proc = lab2.cli("matrix", "--namespace", NS, check=False, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f"namespace {NS}" in out
    assert "80/TCP" in out and "8080/UDP" in out and "81/UDP" in out
    assert "15/15 connected" in out.splitlines()[-1]
    assert "✗" not in out.split("legend")[0] and "\x1b[" not in out      # not a tty: no colour
    assert "probed 15 pairs" in proc.stderr


def test_probe_from_every_kind_of_source(lab2, pods):
    ip_c = pods["c"][0]
    for source in (f"{NS}/a", "node:node1", "external"):
        proc = lab2.cli("probe", "--from", source, "--json", f"{ip_c}:80", check=False)
        r = json.loads(proc.stdout)
        assert proc.returncode == 0 and r["outcome"] == "connected" and r["pod"] == f"{NS}/c", (source, r)
    proc = lab2.cli("probe", "--from", f"{NS}/a", "--udp", "--json", f"{ip_c}:81", check=False)
    assert json.loads(proc.stdout)["pod"] == f"{NS}/c"
    proc = lab2.cli("probe", "--from", f"{NS}/a", "--json", f"{ip_c}:9", check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["outcome"] == "refused"


@pytest.mark.slow
@pytest.mark.parametrize("ip_family", ["ipv4", "dual"])
def test_demo_end_to_end(ip_family):
    """`kubeweft lab demo` on a lab of its own: matrix all green, exit 0, nothing left behind; on a
    dual-stack lab the matrix has both families' columns and the Service answers on its ClusterIP
    and NodePort in each."""
    from tests.integration.conftest import KUBEWEFT, down_lab
    name = f"h5d{os.getpid()}{ip_family[0]}"
    try:
        proc = subprocess.run([KUBEWEFT, "lab", "--name", name, "demo", "--ip-family", ip_family],
                              capture_output=True, text=True, timeout=240, check=False)
        out = proc.stdout
        assert proc.returncode == 0, out + proc.stderr
        if ip_family == "dual":
            assert "80/TCP/v6" in out and "80/TCP/v4" in out, out
            # the Service's IPv6 ClusterIP from the client pod, and the NodePort at a node's IPv6 address
            assert [ln for ln in out.splitlines() if "-> svc/web" in ln and "connected    tcp [fd00:10:96::" in ln], out
            assert [ln for ln in out.splitlines() if "external ->" in ln and "connected    tcp [" in ln], out
        for heading in ("up", "waiting for the pods", "from pod client", "from node node1",
                        "from the external host", "Service web", "service table", "connectivity matrix",
                        "down"):
            assert heading in out, heading
        assert "all green" in out
        # node1's service table lists the Service's NodePort, spread over the three web pods
        nodeport = next(line for line in out.splitlines() if line.startswith("*:"))
        assert " spread " in nodeport and nodeport.count(":80") == 3, nodeport
        assert not os.path.exists(f"/run/kubeweft/{name}")
        assert not [n for n in os.listdir("/run/netns") if n.startswith(f"{name}-")]
    finally:
        down_lab(name)
