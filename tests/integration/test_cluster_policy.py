"""ClusterNetworkPolicy on the shared kubeweft labs (`klab`: once per IP family, over IPv4 on the
ipv4 lab and over IPv6 on the ipv6 and dual labs), with real packets: an Admin Deny beats
a NetworkPolicy allow, Pass hands over to NetworkPolicy, a Baseline Deny is the default that
NetworkPolicy overrides, priorities decide, a pod's egress to its own node (input hook) is
judged, and a new pod is covered before its first packet. Objects go through the real kubectl
(`apply`, `get clusternetworkpolicies`, `get cnp`).

Plus, without a lab: a rendered table with every kind of rule loads into a real kernel beside
NetworkPolicy's.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from kubeweft.lab import netns
from kubeweft.lab.probe import CONNECTED, probe_once, read_pods

from .netpol_helpers import ROOT, apply_policies, netpol
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

X, Y = "cnp-x", "cnp-y"
SETTLE = 10.0


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="cnpprobe")


def probe(src_netns: str, ip: str, port: int = 80, timeout: float = 0.5) -> str:
    with _pool() as pool:
        return pool.submit(probe_once, src_netns, ip, port, timeout=timeout).result(timeout + 5)["outcome"]


def tcp_connects(src_netns: str, ip: str, port: int, timeout: float = 0.5) -> bool:
    """A TCP handshake completes (any listener, not only the lab's workload)."""
    def attempt() -> bool:
        with netns.entered(src_netns):
            s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((ip, port))
            return True
        except OSError:
            return False
        finally:
            s.close()
    with _pool() as pool:
        return pool.submit(attempt).result(timeout + 5)


def pod(ns: str, name: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "w", "image": "lab", "ports": [
                {"containerPort": 80, "name": "http"}, {"containerPort": 80, "protocol": "UDP"}]}]}}


def cnp(name: str, tier: str, priority: int, subject_ns: str, ingress=(), egress=()) -> dict:
    spec = {"tier": tier, "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": subject_ns}}}}
    if ingress:
        spec["ingress"] = list(ingress)
    if egress:
        spec["egress"] = list(egress)
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}


def from_ns(ns: str) -> list:
    return [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}]


def apply(lab, *objs: dict) -> None:
    apply_policies(lab, objs)


@pytest.fixture(scope="module")
def world(klab):
    """x/a on node1, x/b on node2, y/c on node1, y/d on node2; removed afterwards. Each pod's
    "ip" is its address of the family the run sends over (klab.version)."""
    lab = klab
    try:
        for ns in (X, Y):
            lab.kubectl("create", "namespace", ns)
        apply(lab, pod(X, "a", "node1"), pod(X, "b", "node2"), pod(Y, "c", "node1"), pod(Y, "d", "node2"))
        for ns, names in ((X, ("pod/a", "pod/b")), (Y, ("pod/c", "pod/d"))):
            lab.kubectl("wait", "-n", ns, "--for=condition=Ready", *names, "--timeout=90s", timeout=100)
        pods = {k.split("/")[1]: dict(v, ip=lab.pick(v.get("ips") or [v["ip"]]))
                for k, v in read_pods(lab.cfg).items() if k.split("/")[0] in (X, Y)}
        assert set(pods) == {"a", "b", "c", "d"}
        yield lab, pods
    finally:
        lab.kubectl("delete", "clusternetworkpolicies", "--all", "--ignore-not-found", check=False, timeout=30)
        for ns in (X, Y):
            lab.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False, timeout=30)


@pytest.fixture
def clean(world):
    lab, _ = world
    yield
    lab.kubectl("delete", "clusternetworkpolicies", "--all", "--ignore-not-found", check=False, timeout=30)
    for ns in (X, Y):
        lab.kubectl("delete", "networkpolicy", "--all", "-n", ns, "--ignore-not-found", check=False, timeout=30)


def dropped(src: dict, dst: dict, port: int = 80):
    return lambda: probe(src["netns"], dst["ip"], port, timeout=0.3) == "timeout"


def connected(src: dict, dst: dict, port: int = 80):
    return lambda: probe(src["netns"], dst["ip"], port, timeout=0.5) == CONNECTED


def test_kubectl_serves_the_kind(world, clean):
    lab, _ = world
    apply(lab, cnp("shown", "Admin", 42, X, ingress=[{"action": "Pass", "from": from_ns(Y)}]))
    out = lab.kubectl("get", "clusternetworkpolicies").stdout
    assert "shown" in out and "Admin" in out and "42" in out and "TIER" in out
    assert "shown" in lab.kubectl("get", "cnp", "shown", "-o", "name").stdout
    got = json.loads(lab.kubectl("get", "cnp", "shown", "-o", "json").stdout)
    assert got["spec"]["ingress"][0]["action"] == "Pass"


def test_admin_deny_beats_a_networkpolicy_allow(world, clean):
    lab, pods = world
    a, b, c, d = (pods[k] for k in "abcd")
    apply(lab, netpol(X, "allow-all", {"podSelector": {}, "ingress": [{}]}))
    wait_for("c -> a", connected(c, a), SETTLE)
    apply(lab, cnp("deny-y", "Admin", 10, X, ingress=[{"action": "Deny", "from": from_ns(Y)}]))
    wait_for("c -> a dropped (same node)", dropped(c, a), SETTLE)
    assert probe(d["netns"], a["ip"]) == "timeout"                       # across nodes
    assert probe(b["netns"], a["ip"]) == CONNECTED                       # x itself is not denied


def test_pass_hands_over_to_networkpolicy_and_priorities_decide(world, clean):
    lab, pods = world
    a, b, c = pods["a"], pods["b"], pods["c"]
    apply(lab, netpol(X, "a-from-x", {"podSelector": {"matchLabels": {"app": "a"}},
                                      "ingress": [{"from": [{"podSelector": {}}]}]}),
          cnp("pass-y", "Admin", 10, X, ingress=[{"action": "Pass", "from": from_ns(Y)}]),
          cnp("deny-y", "Admin", 20, X, ingress=[{"action": "Deny", "from": from_ns(Y)}]))
    wait_for("c -> a dropped by the NetworkPolicy", dropped(c, a), SETTLE)
    wait_for("c -> b connected: Pass skips deny-y, no NetworkPolicy isolates b", connected(c, b), SETTLE)
    # the Deny first: b is denied too
    apply(lab, cnp("pass-y", "Admin", 30, X, ingress=[{"action": "Pass", "from": from_ns(Y)}]))
    wait_for("c -> b dropped by deny-y, now before pass-y", dropped(c, b), SETTLE)
    # an Admin Accept before both is final: the NetworkPolicy that isolates a does not apply
    apply(lab, cnp("accept-y", "Admin", 5, X, ingress=[{"action": "Accept", "from": from_ns(Y)}]))
    wait_for("c -> a connected by accept-y", connected(c, a), SETTLE)
    assert probe(c["netns"], b["ip"]) == CONNECTED


def test_baseline_deny_is_the_default_that_networkpolicy_overrides(world, clean):
    lab, pods = world
    a, b, c, d = (pods[k] for k in "abcd")
    apply(lab, cnp("base-deny-y", "Baseline", 10, X, ingress=[{"action": "Deny", "from": from_ns(Y)}]))
    wait_for("c -> a dropped by the Baseline", dropped(c, a), SETTLE)
    assert probe(d["netns"], b["ip"]) == "timeout"
    assert probe(b["netns"], a["ip"]) == CONNECTED
    apply(lab, netpol(X, "a-from-all", {"podSelector": {"matchLabels": {"app": "a"}},
                                        "ingress": [{"from": [{"namespaceSelector": {}}]}]}))
    wait_for("c -> a connected: NetworkPolicy over Baseline", connected(c, a), SETTLE)
    assert probe(c["netns"], b["ip"]) == "timeout"                       # b: still the Baseline


def test_a_pods_egress_to_its_own_node_is_judged(world, clean):
    lab, pods = world
    a = pods["a"]
    node_ip, other_ip = (lab.pick(lab.kubectl("get", "node", node, "-o", "jsonpath={.status.addresses[?("
                                              "@.type=='InternalIP')].address}").stdout.split())
                         for node in ("node1", "node2"))
    assert tcp_connects(a["netns"], node_ip, 10256)                     # the agent's /healthz
    apply(lab, cnp("no-node1", "Admin", 1, X, egress=[{
        "action": "Deny", "to": [{"nodes": {"matchLabels": {"kubernetes.io/hostname": "node1"}}}],
        "protocols": [{"tcp": {"destinationPort": {"number": 10256}}}]}]))
    wait_for("a -> node1:10256 dropped (input hook)", lambda: not tcp_connects(a["netns"], node_ip, 10256), SETTLE)
    assert tcp_connects(a["netns"], other_ip, 10256)                    # node2 is not selected
    assert tcp_connects(pods["c"]["netns"], node_ip, 10256)             # y is no subject


def test_a_new_pod_is_covered_before_its_first_packet(world, clean):
    """c floods node1's pod range (TCP SYNs and UDP "whoami" to port 80) while pods are created
    there under an Admin Deny from y: not one answer may come from them. Then the policy goes,
    and the same flood must reach them (the test is not blind)."""
    lab, pods = world
    c = pods["c"]
    cidr = lab.pick(lab.kubectl("get", "node", "node1", "-o", "jsonpath={.spec.podCIDRs[*]}").stdout.split())
    apply(lab, cnp("deny-y", "Admin", 10, X, ingress=[{"action": "Deny", "from": from_ns(Y)}]))
    wait_for("c -> a dropped", dropped(c, pods["a"]), SETTLE)
    names = [f"n{i}" for i in range(5)]
    attacker = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.netpol_helpers", "flood", cidr, "80", "120"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=netns.preexec(c["netns"]))  # noqa: PLW1509 - the child enters the netns before exec
    try:
        time.sleep(1.0)
        apply(lab, *(pod(X, n, "node1") for n in names))
        lab.kubectl("wait", "-n", X, "--for=condition=Ready", *(f"pod/{n}" for n in names), "--timeout=90s",
                    timeout=100)
        time.sleep(2.0)
        deleted = time.time()
        lab.kubectl("delete", "cnp", "deny-y")
        time.sleep(5.0)
        attacker.terminate()
        out, err = attacker.communicate(timeout=30)
        assert out.strip(), f"the attacker printed nothing: {err[-2000:]}"
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.communicate(timeout=10)
        lab.kubectl("delete", "pod", "-n", X, *names, "--ignore-not-found", "--wait=false", check=False, timeout=30)
    doc = json.loads(out)
    ours = [a for a in doc["answers"] if any(f'"{X}/{n}"' in a["answer"] for n in names)]
    before = [a for a in ours if a["t"] < deleted]
    after = {a["answer"] for a in ours if a["t"] >= deleted}
    print(f"flood: {doc['rounds']} rounds, answers from new pods under the policy: {len(before)}, after: {len(after)}")
    assert not before, f"a new pod answered y under an Admin Deny: {before[:5]}"
    assert after, "the flood reached no new pod after the policy went: the test would be blind"


# ---- without a lab -----------------------------------------------------------------------------

def test_rendered_tables_load_into_the_kernel_beside_networkpolicy():
    from kubeweft.proxy import cluster_policy_model as cm
    from kubeweft.proxy import policy_model as pm
    from kubeweft.proxy import render_cluster_policy as rc
    from kubeweft.proxy import render_policy as rp
    from kubeweft.proxy.nftables import Nft

    pols = [cm.parse_cluster_policy(cnp("all", "Admin", 1, X, ingress=[
        {"action": "Deny", "from": from_ns(Y), "protocols": [{"destinationNamedPort": "http"}]},
        {"action": "Accept", "from": [{"pods": {"namespaceSelector": {}, "podSelector": {}}}]}], egress=[
        {"action": "Pass", "to": [{"networks": ["203.0.113.0/24", "2001:db8::/32"]}, {"nodes": {}}],
         "protocols": [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 90}}}}, {"udp": {}}]}])),
            cm.parse_cluster_policy(cnp("base", "Baseline", 3, Y, egress=[{"action": "Deny", "to": from_ns(X)}]))]
    pods = (cm.Pod(X, "a", ("10.244.0.2", "fd00::2"), "n0", frozenset({("app", "a")}),
                   (pm.ContainerPort("http", "tcp", 80),)),
            cm.Pod(Y, "c", ("10.244.1.3", "fd00:1::3"), "n1"))
    world = rc.World("n0", tuple(pols), pods, {}, (cm.Node("n0", frozenset(), ("192.168.56.10", "fd56::10")),))
    name = f"cnp-load-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        nft = Nft(name)
        nft.run(rp.render_table(rp.render_decls(rp.index_policies([]), "10.244.0.0/24"), []))
        nft.run(rc.render_table(*rc.render_world(world)))
        nft.run(rc.render_table(*rc.render_world(world)))            # replaces itself
        for chain in (rc.ADMIN_FORWARD, rc.BASE_INPUT, rc.ADMIN_IN, rc.BASE_EG):
            assert nft.exists(f"chain {rc.T} {chain}"), chain
        listed = subprocess.run(["ip", "netns", "exec", name, "nft", "list", "table", rc.T],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        assert "priority filter - 10" in listed and "priority filter + 10" in listed
        assert "fd00::2" in listed and "meta mark set meta mark | 0x00000800" in listed
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
