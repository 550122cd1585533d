"""The controllers in process: an asyncio loop, a real Store, admission on every write (as the API
server does it), the controllers started with lab.controllers.start, objects created and changed.
No network, no root needed; every wait is bounded."""
from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubeweft.lab import admission, controllers
from kubeweft.lab.config import LabConfig
from kubeweft.lab.resources import EVENTS, NODES, PODS, SLICES
from kubeweft.lab.resources import NAMESPACES as NS
from kubeweft.lab.resources import SERVICES as SVC
from kubeweft.lab.store import Store

from .apiserver_proc import terminate
from .waiting import wait_for

CFG = LabConfig(name="h2")
NSNAME = "h2"

pytestmark = pytest.mark.timeout(60)


class Cluster:
    """A store with admission in front, as lab.apiserver uses it, and the controllers running."""

    def __init__(self):
        self.store = Store()
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self):
        self.create(NS, {"metadata": {"name": NSNAME}})
        self.tasks = controllers.start(self.store, CFG)
        return self

    async def __aexit__(self, *exc):
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def controller(self, name: str):
        return next(t.controller for t in self.tasks if t.get_name() == name)

    def create(self, resource, obj):
        return self.store.create(resource, admission.admit(self.store, CFG, resource, "CREATE", obj, None))

    def update(self, resource, name, change, subresource=None):
        old = self.store.get(resource, NSNAME, name)
        new = copy.deepcopy(old)
        change(new)
        new = admission.admit(self.store, CFG, resource, "UPDATE", new, old)
        return self.store.update(resource, new, subresource)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every controller has nothing left to do."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if all(t.controller.idle for t in self.tasks):
                await asyncio.sleep(0.05)
                if all(t.controller.idle for t in self.tasks):
                    return
        raise TimeoutError("controllers did not settle")

    def slices(self, service: str) -> list[dict]:
        return self.store.list(SLICES, NSNAME,
                               lambda s: s["metadata"]["labels"].get("kubernetes.io/service-name") == service)[0]

    def endpoints(self, service: str) -> dict[str, dict]:
        return {ep["targetRef"]["name"]: ep for s in self.slices(service) for ep in s["endpoints"]}


def node(name: str, zone: str = "", ready: bool = True, labels: dict | None = None) -> dict:
    lab = dict(labels or {})
    if zone:
        lab["topology.kubernetes.io/zone"] = zone
    return {"metadata": {"name": name, "labels": lab}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(name: str, node_name: str = "", labels: dict | None = None, port: int = 8080, **spec) -> dict:
    spec = {"containers": [{"name": "c", "image": "h2:1",
                            "ports": [{"name": "web", "containerPort": port}]}], **spec}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": NSNAME, "labels": labels or {"app": "web"}}, "spec": spec}


def run_ready(c: Cluster, name: str, ip: str, ready: bool = True) -> None:
    """What the lab kubelet reports: podIP and the Ready condition."""
    def change(p):
        p["status"].update(phase="Running", podIP=ip, podIPs=[{"ip": ip}],
                           conditions=[{"type": "Ready", "status": "True" if ready else "False"}])
    c.update(PODS, name, change, "status")


def service(name: str, selector: dict | None = None, **spec) -> dict:
    return {"metadata": {"name": name, "namespace": NSNAME},
            "spec": {"selector": selector or {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "web"}], **spec}}


def test_endpointslices_follow_pod_readiness_and_deletion():
    async def go():
        async with Cluster() as c:
            c.create(NODES, node("node1", zone="zone-a"))
            c.create(NODES, node("node2", zone="zone-b"))
            c.create(SVC, service("h2-web"))
            await c.settle()
            placeholder = c.slices("h2-web")
            assert len(placeholder) == 1 and placeholder[0]["endpoints"] == []
            c.create(PODS, pod("h2-a", "node1"))
            c.create(PODS, pod("h2-b", "node2", port=8081))
            run_ready(c, "h2-a", "10.244.1.2")
            run_ready(c, "h2-b", "10.244.2.2", ready=False)
            await c.settle()
            eps = c.endpoints("h2-web")
            assert set(eps) == {"h2-a", "h2-b"}
            assert eps["h2-a"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
            assert eps["h2-a"]["zone"] == "zone-a" and eps["h2-a"]["nodeName"] == "node1"
            assert eps["h2-b"]["conditions"]["ready"] is False
            # the named targetPort resolves per pod: two port groups, two slices
            ports = sorted(s["ports"][0]["port"] for s in c.slices("h2-web"))
            assert ports == [8080, 8081]
            owner = c.slices("h2-web")[0]["metadata"]["ownerReferences"][0]
            assert owner["uid"] == c.store.get(SVC, NSNAME, "h2-web")["metadata"]["uid"]

            run_ready(c, "h2-b", "10.244.2.2", ready=True)
            await c.settle()
            assert c.endpoints("h2-web")["h2-b"]["conditions"]["ready"] is True

            # a heartbeat-like status write that changes nothing published costs no slice write
            slice_ctl = c.controller("endpointslice-controller")
            before = slice_ctl.writes
            c.update(PODS, "h2-a", lambda p: p["status"].update(startTime="2026-01-01T00:00:00Z"), "status")
            await c.settle()
            assert slice_ctl.writes == before

            # terminating (graceful delete): not ready, still serving
            c.update(PODS, "h2-a", lambda p: p["metadata"].update(deletionTimestamp="2026-01-01T00:00:30Z"))
            await c.settle()
            assert c.endpoints("h2-web")["h2-a"]["conditions"] == {"ready": False, "serving": True,
                                                                  "terminating": True}
            c.store.delete(PODS, NSNAME, "h2-a")
            await c.settle()
            assert set(c.endpoints("h2-web")) == {"h2-b"} and len(c.slices("h2-web")) == 1

            # relabelled away from the selector: gone; back to the placeholder
            c.update(PODS, "h2-b", lambda p: p["metadata"].update(labels={"app": "other"}))
            await c.settle()
            assert c.endpoints("h2-web") == {} and len(c.slices("h2-web")) == 1

            # a Service without selector is left alone; deleting the Service deletes its slices
            c.create(SVC, {"metadata": {"name": "h2-manual", "namespace": NSNAME},
                           "spec": {"ports": [{"port": 80}]}})
            c.store.delete(SVC, NSNAME, "h2-web")
            await c.settle()
            assert c.slices("h2-web") == [] and c.slices("h2-manual") == []
    asyncio.run(go())


def test_pod_cidrs_assigned_and_reused():
    async def go():
        async with Cluster() as c:
            for n in ("node1", "node2", "node3"):
                c.create(NODES, node(n))
            await c.settle()
            cidrs = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in c.store.list(NODES)[0]}
            assert cidrs == {"node1": "10.244.0.0/24", "node2": "10.244.1.0/24", "node3": "10.244.2.0/24"}
            assert c.store.get(NODES, "", "node2")["spec"]["podCIDRs"] == ["10.244.1.0/24"]
            assert c.store.get(NODES, "", "node2")["status"]["conditions"][0]["type"] == "Ready"
            c.store.delete(NODES, "", "node2")
            c.create(NODES, node("node4"))
            await c.settle()
            assert c.store.get(NODES, "", "node4")["spec"]["podCIDR"] == "10.244.1.0/24"
    asyncio.run(go())


def test_pods_scheduled_spread_and_unschedulable_retried():
    async def go():
        async with Cluster() as c:
            c.create(NODES, node("node1"))
            c.create(NODES, node("node2"))
            c.create(NODES, node("node3", ready=False))
            c.create(PODS, pod("h2-pinned", "node1"))
            for i in range(5):
                c.create(PODS, pod(f"h2-p{i}"))
            c.create(PODS, pod("h2-ssd", nodeSelector={"disk": "ssd"}))
            await c.settle()
            placed = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in c.store.list(PODS)[0]}
            assert placed["h2-pinned"] == "node1"
            spread = [placed[f"h2-p{i}"] for i in range(5)]
            assert spread.count("node1") == 2 and spread.count("node2") == 3     # 3 and 3 with the pinned one
            bound = c.store.get(PODS, NSNAME, "h2-p0")
            assert {"type": "PodScheduled", "status": "True"}.items() <= bound["status"]["conditions"][0].items()
            pending = c.store.get(PODS, NSNAME, "h2-ssd")
            assert placed["h2-ssd"] is None
            cond = pending["status"]["conditions"][0]
            assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
            assert cond["message"].startswith("0/3 nodes are available: 1 node(s) had untolerated taint")
            events = {(e["involvedObject"]["name"], e["reason"]): e["message"]
                      for e in c.store.list(EVENTS, NSNAME)[0]}
            assert events[("h2-p0", "Scheduled")] == f"Successfully assigned {NSNAME}/h2-p0 to {placed['h2-p0']}"
            assert events[("h2-ssd", "FailedScheduling")] == cond["message"]
            # a matching node arrives: the pod is retried and bound there
            c.create(NODES, node("node9", labels={"disk": "ssd"}))
            await c.settle()
            assert c.store.get(PODS, NSNAME, "h2-ssd")["spec"]["nodeName"] == "node9"
    asyncio.run(go())


def test_load_balancer_ingress_ip():
    async def go():
        async with Cluster() as c:
            c.create(SVC, service("h2-lb1", type="LoadBalancer"))
            c.create(SVC, service("h2-lb2", type="LoadBalancer", loadBalancerIP="198.51.100.40"))
            await c.settle()
            lb1 = c.store.get(SVC, NSNAME, "h2-lb1")
            assert lb1["status"]["loadBalancer"] == {"ingress": [{"ip": "198.51.100.2", "ipMode": "VIP"}]}
            assert lb1["spec"]["ports"][0]["nodePort"] >= 30000
            assert c.store.get(SVC, NSNAME, "h2-lb2")["status"]["loadBalancer"]["ingress"][0]["ip"] == \
                "198.51.100.40"
            c.update(SVC, "h2-lb1", lambda s: s["spec"].update(type="ClusterIP"))
            await c.settle()
            assert c.store.get(SVC, NSNAME, "h2-lb1")["status"]["loadBalancer"] == {}
            c.create(SVC, service("h2-lb3", type="LoadBalancer"))
            await c.settle()
            assert c.store.get(SVC, NSNAME, "h2-lb3")["status"]["loadBalancer"]["ingress"][0]["ip"] == \
                "198.51.100.2"
    asyncio.run(go())


def test_a_pod_change_reconciles_only_the_services_it_touches():
    async def go():
        async with Cluster() as c:
            c.create(NODES, node("node1"))
            n = 3000
            for i in range(n):
                c.create(SVC, service(f"h2-s{i}", selector={"app": f"a{i}"}))
            c.create(PODS, pod("h2-x", "node1", labels={"app": "a7"}))
            await c.settle(timeout=40)
            ctl = c.controller("endpointslice-controller")
            assert len(c.store.list(SLICES)[0]) == n
            synced, writes = ctl.synced, ctl.writes
            t0 = time.monotonic()
            run_ready(c, "h2-x", "10.244.0.9")
            await c.settle()
            assert time.monotonic() - t0 < 2.0
            assert ctl.synced - synced <= 2 and ctl.writes - writes == 1
            assert set(c.endpoints("h2-s7")) == {"h2-x"}
            # relabel to another Service: exactly the old and the new one are reconciled
            synced = ctl.synced
            c.update(PODS, "h2-x", lambda p: p["metadata"].update(labels={"app": "a9"}))
            await c.settle()
            assert ctl.synced - synced <= 4
            assert c.endpoints("h2-s7") == {} and set(c.endpoints("h2-s9")) == {"h2-x"}
    asyncio.run(go())


# --- through the real API server process and a real kubectl ------------------------------------

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory):
    """`kubectl(*args)` against a lab API server process of our own (loopback only, no netns)."""
    tmp = tmp_path_factory.mktemp("h2api")
    name = f"h2c{os.getpid() % 100000}"
    env = dict(os.environ, KUBEWEFT_LAB_ROOT=str(tmp))
    with open(tmp / "apiserver.log", "wb") as log:      # the child keeps its own copy of the fd
        proc = subprocess.Popen([sys.executable, "-m", "kubeweft.lab.apiserver", "--lab", name], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (tmp / name / "apiserver.ready").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("apiserver did not start:\n" + (tmp / "apiserver.log").read_text())
            time.sleep(0.1)
        kenv = dict(os.environ, KUBECONFIG=str(tmp / name / "kubeconfig"), HOME=str(tmp))

        def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run([str(KUBECTL), *args], check=False, capture_output=True, text=True,
                                  input=input, env=kenv, timeout=20, cwd=tmp)
        yield run
    finally:
        terminate(proc)


def test_kubectl_sees_allocation_validation_and_controllers(kubectl):
    assert kubectl("create", "service", "nodeport", "h2-web", "--tcp=80:8080").returncode == 0
    np = kubectl("get", "svc", "h2-web", "-o", "jsonpath={.spec.ports[0].nodePort}").stdout
    p = kubectl("create", "service", "nodeport", "h2-web2", "--tcp=80:8080", f"--node-port={np}")
    assert p.returncode != 0
    assert (f'Service "h2-web2" is invalid: spec.ports[0].nodePort: Invalid value: {np}: '
            f'provided port is already allocated') in p.stderr
    p = kubectl("create", "service", "clusterip", "h2-two", "--tcp=80:80,443,443")
    assert '[spec.ports[2].name: Duplicate value: "443", spec.ports[2]: Duplicate value: core.ServicePort{' \
        in p.stderr
    p = kubectl("create", "service", "clusterip", "h2-out", "--clusterip=10.0.0.1", "--tcp=80:80")
    assert "The range of valid IPs is 10.96.0.0/12" in p.stderr
    manifest = """
apiVersion: v1
kind: Node
metadata: {name: h2n1, labels: {topology.kubernetes.io/zone: h2-zone}}
status: {conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h2-p1, namespace: default, labels: {app: h2-web}}
spec: {containers: [{name: c, image: "h2:1", ports: [{containerPort: 8080, name: web}]}]}
"""
    assert kubectl("apply", "-f", "-", input=manifest).returncode == 0
    assert "Successfully assigned default/h2-p1 to h2n1" in wait_for(
        "the Scheduled event",
        lambda: "Successfully" in (out := kubectl("describe", "pod", "h2-p1").stdout) and out, 10)
    assert wait_for("h2n1's podCIDR",
                    lambda: kubectl("get", "node", "h2n1", "-o", "jsonpath={.spec.podCIDR}").stdout, 10) \
        == "10.244.0.0/24"
    assert wait_for("h2-p1 scheduled",
                    lambda: kubectl("get", "pod", "h2-p1", "-o", "jsonpath={.spec.nodeName}").stdout, 10) == "h2n1"
    patch = '{"status":{"podIP":"10.244.0.5","conditions":[{"type":"Ready","status":"True"}]}}'
    assert kubectl("patch", "pod", "h2-p1", "--subresource=status", "--type=merge", "-p", patch).returncode == 0

    def slice_ep():
        out = kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=h2-web", "-o", "json").stdout
        items = json.loads(out)["items"] if out else []
        return items and items[0]["endpoints"] and items[0]
    s = wait_for("an EndpointSlice with the endpoint", slice_ep, 10)
    assert s and s["endpoints"][0]["addresses"] == ["10.244.0.5"] and s["endpoints"][0]["zone"] == "h2-zone"
    assert s["ports"] == [{"name": "80-8080", "port": 8080, "protocol": "TCP"}]
    p = kubectl("apply", "-f", "-", input=manifest.replace("containerPort: 8080", "containerPort: 8081"))
    assert "spec: Forbidden: pod updates may not change fields other than" in p.stderr
    assert kubectl("delete", "svc", "h2-web").returncode == 0
    # only the API server's own default/kubernetes slice is left
    wait_for("only the kubernetes slice left", lambda: kubectl("get", "endpointslices", "-o", "name").stdout.split()
             == ["endpointslice.discovery.k8s.io/kubernetes"], 10)
    kubectl("delete", "pod", "h2-p1", "--grace-period=0", "--force")


def test_controllers_started_late_catch_up_with_the_store():
    async def go():
        store = Store()
        store.create(NS, {"metadata": {"name": NSNAME}})
        store.create(NODES, node("node1"))
        store.create(SLICES, {"metadata": {"name": "h2-gone-abcde", "namespace": NSNAME, "labels": {
            "kubernetes.io/service-name": "h2-gone",
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4", "endpoints": []})
        store.create(SVC, admission.admit(store, CFG, SVC, "CREATE", service("h2-web"), None))
        store.create(PODS, admission.admit(store, CFG, PODS, "CREATE", pod("h2-a"), None))
        c = Cluster()
        c.store = store
        c.tasks = controllers.start(store, CFG)
        try:
            await c.settle()
            assert store.get(NODES, "", "node1")["spec"]["podCIDR"] == "10.244.0.0/24"
            assert store.get(PODS, NSNAME, "h2-a")["spec"]["nodeName"] == "node1"
            assert len(c.slices("h2-web")) == 1 and c.slices("h2-gone") == []
        finally:
            await c.__aexit__(None, None, None)
    asyncio.run(go())


def test_slices_edited_or_deleted_by_someone_else_are_put_right():
    async def go():
        async with Cluster() as c:
            c.create(NODES, node("node1"))
            c.create(SVC, service("h2-web"))
            c.create(PODS, pod("h2-a", "node1"))
            run_ready(c, "h2-a", "10.244.0.2")
            await c.settle()
            (s,) = c.slices("h2-web")
            edited = copy.deepcopy(s)
            edited["endpoints"] = []
            c.store.update(SLICES, edited)
            await c.settle()
            assert set(c.endpoints("h2-web")) == {"h2-a"}
            c.store.delete(SLICES, NSNAME, s["metadata"]["name"])
            await c.settle()
            assert set(c.endpoints("h2-web")) == {"h2-a"} and len(c.slices("h2-web")) == 1
            # relabelled to claim another Service: both Services get put right
            c.create(SVC, service("h2-other", selector={"app": "none"}))
            await c.settle()
            (s,) = c.slices("h2-web")
            moved = copy.deepcopy(s)
            moved["metadata"]["labels"]["kubernetes.io/service-name"] = "h2-other"
            c.store.update(SLICES, moved)
            await c.settle()
            assert set(c.endpoints("h2-web")) == {"h2-a"} and c.endpoints("h2-other") == {}
            assert len(c.slices("h2-other")) == 1 and len(c.slices("h2-web")) == 1
    asyncio.run(go())
