"""The lab kubelet on the shared 2-node reference lab (`lab2`): pods get IPs and go Ready, 20 at a
time; cross-node pod traffic keeps pod addresses (the kubelets' routes); readiness probes flip
Ready; deletion removes the netns and the veth, gracefully (unready at once, SIGKILL after the
grace period); hostPorts reach pods from the external host; a pod that cannot start is reported
while the others run; a kubelet killed with -9 leaves the API server and the pods up, and a restarted one
adopts its pods, tears down what was deleted meanwhile and starts what was created meanwhile.

Everything lives in the k8s namespace NS, removed at the end.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from kubeweft.lab import netns as lab_netns

from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "h4-kubelet"
PROBE_PERIOD = 1


# --- helpers ------------------------------------------------------------------------------------
def pod_doc(name: str, node: str, ports: list[dict] | None = None, probe: dict | None = None,
            host_network: bool = False, grace: int | None = None) -> dict:
    container: dict = {"name": "app", "image": "lab"}
    if ports:
        container["ports"] = ports
    if probe:
        container["readinessProbe"] = probe
    spec: dict = {"nodeName": node, "containers": [container]}
    if host_network:
        spec["hostNetwork"] = True
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS,
                                                            "labels": {"app": "h4"}}, "spec": spec}


def is_ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def http_get(lab, netns_name: str, url: str, timeout: float = 3.0) -> str:
    """GET `url` from inside `netns_name` (a fresh python there: real packets, real sockets)."""
    code = ("import sys, urllib.request\n"
            "try:\n"
            f"    print(urllib.request.urlopen({url!r}, timeout={timeout}).read().decode())\n"
            "except Exception as e:\n"
            "    print('ERROR', e)\n")
    return lab.run_in(netns_name, [sys.executable, "-c", code], timeout=timeout + 10).stdout.strip()


def pods_json(lab, node: str) -> dict:
    try:
        return json.loads((lab.cfg.node_dir(node) / "pods.json").read_text())
    except (OSError, ValueError):
        return {}


def bridge_ports(lab, node: str) -> set[str]:
    out = lab.run_in(lab.cfg.node_netns(node), ["ip", "-j", "link", "show", "master", "cni0"]).stdout
    return {link["ifname"] for link in json.loads(out or "[]")}


def kubelet_pids(lab, node: str) -> list[int]:
    from kubeweft.lab import lifecycle
    token = json.loads(lab.cfg.state_file.read_text())["token"]
    out = []
    for pid in lifecycle.find_processes(lab.name, token):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kubeweft.lab.kubelet" in cmd and node.encode() in cmd:
            out.append(pid)
    return out


def start_kubelet(lab, node: str) -> int:
    """Restart a kubelet exactly as `lab up` starts one."""
    from kubeweft.lab import lifecycle
    token = json.loads(lab.cfg.state_file.read_text())["token"]
    return lifecycle.start_kubelet(lab.cfg, node, token).pid


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def core(lab2):
    from kubernetes import client
    api = lab2.client()
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": NS}})
    try:
        yield v1
    finally:
        for node in ("node1", "node2"):     # a test that failed half-way must not leave a kubelet down
            if not kubelet_pids(lab2, node):
                start_kubelet(lab2, node)
        try:
            v1.delete_namespace(NS, _request_timeout=10)
        except client.ApiException:
            pass
        # the kubelets tear the sandboxes down once the pods are gone
        wait_for("the test's sandboxes to go",
                 lambda: not any(e.get("namespace") == NS for n in ("node1", "node2")
                                 for e in pods_json(lab2, n).values()), timeout=60)
        api.close()


def list_pods(core, **kw):
    return core.list_namespaced_pod(NS, _request_timeout=10, **kw).items


# --- tests --------------------------------------------------------------------------------------
def test_nodes_registered_ready_with_zone_address_and_routes(lab2, core):
    for i, name in ((1, "node1"), (2, "node2")):
        node = core.read_node(name, _request_timeout=10)
        assert node.metadata.labels["kubernetes.io/hostname"] == name
        assert node.metadata.labels["kubernetes.io/os"] == "linux"
        assert node.metadata.labels["topology.kubernetes.io/zone"] == ("zone-a" if i % 2 else "zone-b")
        addrs = {a.type: a.address for a in node.status.addresses}
        assert addrs == {"InternalIP": lab2.cfg.node_ip(i), "Hostname": name}
        assert node.status.node_info.kubelet_version.startswith("v1.35.0")
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True" and ready.last_heartbeat_time is not None
        conf = json.loads((lab2.cfg.cni_conf_dir(name) / "10-lab.conflist").read_text())
        assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": node.spec.pod_cidr}]]
        assert (lab2.cfg.cni_bin_dir(name) / "bridge").exists()
    # the route controller: each node routes the other's podCIDR via the other's address
    other = core.read_node("node2", _request_timeout=10)
    routes = json.loads(lab2.run_in(lab2.cfg.node_netns("node1"), ["ip", "-j", "route", "show",
                                                                     other.spec.pod_cidr]).stdout)
    assert routes and routes[0]["gateway"] == lab2.cfg.node_ip(2)


def test_twenty_pods_get_ips_go_ready_and_reach_each_other_unmasqueraded(lab2, core):
    t0 = time.monotonic()
    for i in range(20):
        core.create_namespaced_pod(NS, pod_doc(f"web-{i}", f"node{1 + i % 2}",
                                               [{"containerPort": 80}, {"containerPort": 81, "protocol": "UDP"}]))
    def all_ready():
        ps = [p for p in list_pods(core) if p.metadata.name.startswith("web-")]
        return ps if len(ps) == 20 and all(map(is_ready, ps)) else None
    pods = wait_for("20 Ready pods", all_ready, timeout=60)
    took = time.monotonic() - t0
    assert took < 30, f"20 pods took {took:.1f}s to be Ready"
    pods = {p.metadata.name: p for p in pods}
    ips = [p.status.pod_ip for p in pods.values()]
    assert len(set(ips)) == 20
    for p in pods.values():
        node = core.read_node(p.spec.node_name, _request_timeout=10)
        assert ipaddress.ip_address(p.status.pod_ip) in ipaddress.ip_network(node.spec.pod_cidr)
        assert p.status.host_ip == lab2.cfg.node_ip(int(p.spec.node_name[-1]))
        assert p.status.phase == "Running"
        assert p.status.container_statuses[0].ready and p.status.container_statuses[0].state.running
        entry = pods_json(lab2, p.spec.node_name)[p.metadata.uid]
        assert entry["ip"] == p.status.pod_ip and lab_netns.exists(entry["netns"])
    # pod on node1 -> pod on node2: the server sees the client's pod IP (no masquerade)
    a, b = pods["web-0"], pods["web-1"]
    assert (a.spec.node_name, b.spec.node_name) == ("node1", "node2")
    a_ns = pods_json(lab2, "node1")[a.metadata.uid]["netns"]
    seen = http_get(lab2, a_ns, f"http://{b.status.pod_ip}:80/clientip")
    assert seen.rpartition(":")[0] == a.status.pod_ip, seen
    assert http_get(lab2, a_ns, f"http://{pods['web-2'].status.pod_ip}:80/hostname") == "web-2"


def test_readiness_probe_flips_ready(lab2, core):
    probe = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": PROBE_PERIOD, "failureThreshold": 1}
    core.create_namespaced_pod(NS, pod_doc("probed", "node2", [{"containerPort": 80, "name": "http"}], probe))
    pod = wait_for("probed Ready", lambda: next((p for p in list_pods(core) if p.metadata.name == "probed"
                                                 and is_ready(p)), None))
    node_ns = lab2.cfg.node_netns("node2")
    assert http_get(lab2, node_ns, f"http://{pod.status.pod_ip}/ready/off") == "ok"
    wait_for("probed not Ready", lambda: not is_ready(core.read_namespaced_pod("probed", NS)), timeout=15)
    pod = core.read_namespaced_pod("probed", NS)
    assert pod.status.phase == "Running" and not pod.status.container_statuses[0].ready
    assert http_get(lab2, node_ns, f"http://{pod.status.pod_ip}/ready/on") == "ok"
    wait_for("probed Ready again", lambda: is_ready(core.read_namespaced_pod("probed", NS)), timeout=15)


def test_delete_removes_netns_veth_and_address(lab2, core):
    before_ports = bridge_ports(lab2, "node1")
    core.create_namespaced_pod(NS, pod_doc("doomed", "node1", grace=5))
    pod = wait_for("doomed Ready", lambda: next((p for p in list_pods(core) if p.metadata.name == "doomed"
                                                 and is_ready(p)), None))
    entry = pods_json(lab2, "node1")[pod.metadata.uid]
    veths = bridge_ports(lab2, "node1") - before_ports
    assert len(veths) == 1 and lab_netns.exists(entry["netns"])
    ipam_file = next(lab2.cfg.cni_data_dir("node1").glob(f"ipam/*/{pod.status.pod_ip}"))
    core.delete_namespaced_pod("doomed", NS, _request_timeout=10)       # graceful: the kubelet finishes it
    wait_for("doomed gone from the API",
             lambda: "doomed" not in {p.metadata.name for p in list_pods(core)}, timeout=20)
    assert not lab_netns.exists(entry["netns"])
    assert not (veths & bridge_ports(lab2, "node1"))
    assert not ipam_file.exists()
    assert pod.metadata.uid not in pods_json(lab2, "node1")
    cmdline = Path(f"/proc/{entry['pid']}/cmdline")
    assert not cmdline.exists() or b"kubeweft.lab.workload" not in cmdline.read_bytes()


def test_a_pod_that_cannot_start_is_reported_and_the_others_run(lab2, core):
    # two hostNetwork pods on one port of one node: the second cannot bind
    core.create_namespaced_pod(NS, pod_doc("hostnet-a", "node2", [{"containerPort": 8089}], host_network=True))
    a = wait_for("hostnet-a Ready", lambda: next((p for p in list_pods(core) if p.metadata.name == "hostnet-a"
                                                  and is_ready(p)), None))
    assert a.status.pod_ip == lab2.cfg.node_ip(2)          # hostNetwork: the node's address, no CNI
    assert http_get(lab2, lab2.cfg.node_netns("node1"), f"http://{a.status.pod_ip}:8089/hostname") == "hostnet-a"
    core.create_namespaced_pod(NS, pod_doc("hostnet-b", "node2", [{"containerPort": 8089}], host_network=True))

    def b_failed():
        b = core.read_namespaced_pod("hostnet-b", NS)
        cs = (b.status.container_statuses or [None])[0]
        crashed = cs is not None and cs.last_state.terminated is not None
        return b if crashed and cs.state.waiting is not None and not is_ready(b) else None
    # its workload exits (the port is taken): CrashLoopBackOff, as on a real node
    b = wait_for("hostnet-b reported as failing", b_failed, timeout=20)
    cs = b.status.container_statuses[0]
    assert cs.last_state.terminated.exit_code == 1 and cs.last_state.terminated.reason == "Error"
    assert cs.restart_count >= 1 and cs.state.waiting.reason in ("CrashLoopBackOff", "ContainerCreating")
    assert b.status.phase == "Running"
    core.create_namespaced_pod(NS, pod_doc("after-bad", "node2"))
    wait_for("after-bad Ready", lambda: is_ready(core.read_namespaced_pod("after-bad", NS)), timeout=20)
    core.delete_namespaced_pod("hostnet-b", NS, grace_period_seconds=0, _request_timeout=10)
    core.delete_namespaced_pod("hostnet-a", NS, _request_timeout=10)
    wait_for("hostnet pods gone", lambda: not {"hostnet-a", "hostnet-b"} & {p.metadata.name
                                                                            for p in list_pods(core)}, timeout=20)
    assert lab_netns.exists(lab2.cfg.node_netns("node2"))    # a hostNetwork teardown keeps the node netns


def test_kubelet_kill9_keeps_api_and_pods_and_restart_adopts(lab2, core):
    for name in ("keep", "gone-while-down"):
        core.create_namespaced_pod(NS, pod_doc(name, "node1", [{"containerPort": 80}]))
    wait_for("keep and gone-while-down Ready",
             lambda: all(is_ready(core.read_namespaced_pod(n, NS)) for n in ("keep", "gone-while-down")))
    keep = core.read_namespaced_pod("keep", NS)
    gone = core.read_namespaced_pod("gone-while-down", NS)
    before = pods_json(lab2, "node1")
    keep_entry, gone_entry = before[keep.metadata.uid], before[gone.metadata.uid]

    pids = kubelet_pids(lab2, "node1")
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    wait_for("the kubelet to die", lambda: not kubelet_pids(lab2, "node1"), timeout=10)

    # the API server is fine, the pod still serves, and the API may change under the dead kubelet
    assert core.read_namespaced_pod("keep", NS, _request_timeout=5).status.pod_ip == keep.status.pod_ip
    node2_pod_ns = pods_json(lab2, "node2")
    assert http_get(lab2, lab2.cfg.node_netns("node2"), f"http://{keep.status.pod_ip}/hostname") == "keep"
    core.delete_namespaced_pod("gone-while-down", NS, grace_period_seconds=0, _request_timeout=10)
    core.create_namespaced_pod(NS, pod_doc("born-while-down", "node1"))
    time.sleep(1)
    assert lab_netns.exists(gone_entry["netns"])          # nobody tore it down yet

    start_kubelet(lab2, "node1")

    def born_ready():
        p = core.read_namespaced_pod("born-while-down", NS)
        return p if is_ready(p) else None
    born = wait_for("born-while-down Ready", born_ready, timeout=30)
    wait_for("gone-while-down's sandbox removed", lambda: not lab_netns.exists(gone_entry["netns"]), timeout=20)
    after = pods_json(lab2, "node1")
    assert gone.metadata.uid not in after
    assert after[keep.metadata.uid]["pid"] == keep_entry["pid"]          # adopted, not restarted
    assert after[keep.metadata.uid]["ip"] == keep.status.pod_ip
    assert born.metadata.uid in after
    keep_now = core.read_namespaced_pod("keep", NS)
    assert is_ready(keep_now) and keep_now.status.container_statuses[0].restart_count == 0
    assert len(kubelet_pids(lab2, "node1")) == 1
    assert node2_pod_ns == pods_json(lab2, "node2")      # the other node did not notice
    # and the adopted pod is still managed: deleting it tears it down
    core.delete_namespaced_pod("keep", NS, _request_timeout=10)
    wait_for("keep's sandbox removed", lambda: not lab_netns.exists(keep_entry["netns"]), timeout=20)
    wait_for("keep gone from the API", lambda: "keep" not in {p.metadata.name for p in list_pods(core)},
             timeout=20)


def test_graceful_delete_unready_at_once_serves_through_grace_then_killed(lab2, core):
    doc = pod_doc("lingering", "node2", [{"containerPort": 80}], grace=3)
    doc["spec"]["containers"][0]["env"] = [{"name": "KUBEWEFT_TERM_DELAY", "value": "60"}]   # ignores SIGTERM
    core.create_namespaced_pod(NS, doc)
    pod = wait_for("lingering Ready", lambda: next((p for p in list_pods(core) if p.metadata.name == "lingering"
                                                    and is_ready(p)), None))
    entry = pods_json(lab2, "node2")[pod.metadata.uid]
    t0 = time.monotonic()
    core.delete_namespaced_pod("lingering", NS, _request_timeout=10)

    def unready_but_serving():
        p = core.read_namespaced_pod("lingering", NS)
        return p.metadata.deletion_timestamp and not is_ready(p)
    wait_for("lingering marked not Ready", unready_but_serving, timeout=5, interval=0.1)
    node_ns = lab2.cfg.node_netns("node2")
    assert http_get(lab2, node_ns, f"http://{pod.status.pod_ip}/hostname") == "lingering"   # still serving
    wait_for("lingering gone from the API", lambda: "lingering" not in {p.metadata.name for p in list_pods(core)},
             timeout=20)
    took = time.monotonic() - t0
    assert 2.5 <= took < 12, f"deleted after {took:.1f}s with a 3 s grace period"
    assert not lab_netns.exists(entry["netns"])


def test_host_port_reaches_the_pod_from_the_external_host(lab2, core):
    core.create_namespaced_pod(NS, pod_doc("hostport", "node1", [{"containerPort": 80, "hostPort": 18080}]))
    wait_for("hostport Ready", lambda: is_ready(core.read_namespaced_pod("hostport", NS)))
    url = f"http://{lab2.cfg.node_ip(1)}:18080/hostname"
    assert http_get(lab2, lab2.cfg.external_netns, url) == "hostport"
    core.delete_namespaced_pod("hostport", NS, grace_period_seconds=0, _request_timeout=10)
    def dnat_gone():
        return "18080" not in lab2.run_in(lab2.cfg.node_netns("node1"), ["iptables-save", "-t", "nat"]).stdout
    wait_for("the hostPort DNAT removed", dnat_gone, timeout=20)


def test_a_dead_workload_is_restarted_in_the_same_sandbox(lab2, core):
    core.create_namespaced_pod(NS, pod_doc("phoenix", "node1", [{"containerPort": 80}]))
    pod = wait_for("phoenix Ready", lambda: next((p for p in list_pods(core) if p.metadata.name == "phoenix"
                                                  and is_ready(p)), None))
    entry = pods_json(lab2, "node1")[pod.metadata.uid]
    os.kill(entry["pid"], signal.SIGKILL)            # this test's own pod's workload

    def restarted():
        p = core.read_namespaced_pod("phoenix", NS)
        cs = (p.status.container_statuses or [None])[0]
        return p if cs is not None and cs.restart_count == 1 and is_ready(p) else None
    p = wait_for("phoenix restarted and Ready", restarted, timeout=20)
    again = pods_json(lab2, "node1")[pod.metadata.uid]
    assert again["pid"] != entry["pid"] and again["netns"] == entry["netns"]
    assert p.status.pod_ip == pod.status.pod_ip
    assert http_get(lab2, lab2.cfg.node_netns("node1"), f"http://{p.status.pod_ip}/hostname") == "phoenix"
