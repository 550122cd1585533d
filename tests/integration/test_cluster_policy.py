"""ClusterNetworkPolicy on the shared kubeweft labs (`klab`: once per IP family, over IPv4 on the
ipv4 lab and over IPv6 on the ipv6 and dual labs), with real packets: an Admin Deny beats
a NetworkPolicy allow, Pass hands over to NetworkPolicy, a Baseline Deny is the default that
NetworkPolicy overrides, priorities decide, a pod's egress to its own node (input hook) is
judged, and a new pod is covered before its first packet. Objects go through the real kubectl
(`apply`, `get clusternetworkpolicies`, `get cnp`). What an operator sees: the CRD deploy/ installs,
established by the lab; each policy's Accepted condition (FailedClosed for domainNames, with
packets showing it); each rule's counter on the agent's /metrics and each drop in the agent's log.

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
import urllib.request

import pytest
from kubeweft.lab import netns
from kubeweft.lab.install import agent_log_text
from kubeweft.lab.probe import CONNECTED, probe_once, read_pods
from kubeweft.proxy.metrics import parse_samples

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


def test_the_crd_deploy_installs_is_established(world):
    lab, _ = world
    crd = "crd/clusternetworkpolicies.policy.networking.k8s.io"
    lab.kubectl("wait", "--for=condition=Established", crd, "--timeout=10s", timeout=30)
    got = json.loads(lab.kubectl("get", crd, "-o", "json").stdout)
    assert got["spec"]["names"]["shortNames"] == ["cnp"] and got["status"]["storedVersions"] == ["v1alpha2"]
    assert "clusternetworkpolicies.policy.networking.k8s.io" in lab.kubectl("get", "crds").stdout
    # applied again, as a user re-running `kubectl apply -k deploy/lab` does: unchanged
    out = lab.kubectl("apply", "-f", str(ROOT / "deploy" / "base" / "crds" / "clusternetworkpolicies.yaml")).stdout
    assert "unchanged" in out or "configured" in out


def condition(lab, name: str) -> dict:
    got = json.loads(lab.kubectl("get", "cnp", name, "-o", "json").stdout)
    return next((c for c in (got.get("status") or {}).get("conditions") or [] if c["type"] == "Accepted"), {})


def test_status_says_enforced_or_failed_closed_and_packets_agree(world, clean):
    lab, pods = world
    a, c = pods["a"], pods["c"]
    apply(lab, cnp("plain", "Admin", 40, Y, ingress=[{"action": "Pass", "from": from_ns(X)}]),
          cnp("names", "Admin", 41, X, egress=[
              {"name": "to-docs", "action": "Accept", "to": [{"domainNames": ["kubernetes.io"]}]},
              {"action": "Deny", "to": from_ns(Y)}]))
    wait_for("plain: Accepted/Enforced", lambda: condition(lab, "plain").get("reason") == "Enforced", 30)
    wait_for("names: Accepted/FailedClosed", lambda: condition(lab, "names").get("reason") == "FailedClosed", 30)
    cond = condition(lab, "names")
    assert cond["status"] == "True" and cond["observedGeneration"] == 1
    assert "egress rule 0 (to-docs): domainNames peers are not supported" in cond["message"]
    # the Accept rule matches nothing, so the Deny after it decides: a -> c dropped
    wait_for("a -> c dropped", dropped(a, c), SETTLE)
    # written once: a resync does not write it again
    rv = json.loads(lab.kubectl("get", "cnp", "names", "-o", "json").stdout)["metadata"]["resourceVersion"]
    time.sleep(3)
    assert json.loads(lab.kubectl("get", "cnp", "names", "-o", "json").stdout)["metadata"]["resourceVersion"] == rv
    lease = json.loads(lab.kubectl("get", "lease", "-n", "kube-system", "kubeweft-cnp-status", "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] in ("node1", "node2", "node3")


def metrics(lab, node: str) -> dict[str, float]:
    def get() -> str:
        with netns.entered(lab.cfg.node_netns(node)):
            return urllib.request.urlopen("http://127.0.0.1:10249/metrics", timeout=5).read().decode()
    with _pool() as pool:
        return parse_samples(pool.submit(get).result(15))


def test_each_rule_counts_its_packets_and_each_drop_is_logged(world, clean):
    lab, pods = world
    a, b, c = pods["a"], pods["b"], pods["c"]
    apply(lab, cnp("count-y", "Admin", 50, X, ingress=[
        {"name": "from-y", "action": "Deny", "from": from_ns(Y)},
        {"action": "Accept", "from": from_ns(X)}]))
    wait_for("c -> a dropped", dropped(c, a), SETTLE)
    assert probe(b["netns"], a["ip"]) == CONNECTED
    key = 'kubeweft_clusternetworkpolicy_packets_total{{action="{}",direction="Ingress",policy="count-y",' \
          'rule="{}",tier="Admin"}}'
    # ingress is judged, and counted, on the destination's node (a: node1)
    wait_for("the Deny rule counted", lambda: metrics(lab, "node1").get(key.format("Deny", "from-y"), 0) > 0, 10)
    samples = metrics(lab, "node1")
    assert samples.get(key.format("Accept", "1"), 0) > 0, {k: v for k, v in samples.items() if "cluster" in k}
    # a policy added elsewhere replaces the table: the counter does not fall
    before = samples[key.format("Deny", "from-y")]
    apply(lab, cnp("another", "Baseline", 5, Y, egress=[{"action": "Pass", "to": from_ns(X)}]))
    wait_for("another: Enforced", lambda: condition(lab, "another").get("reason") == "Enforced", 30)
    time.sleep(2.5)                                     # past the scrape's reuse of one listing
    assert metrics(lab, "node1")[key.format("Deny", "from-y")] >= before
    line = f"denied ingress by ClusterNetworkPolicy count-y (Admin) ingress rule from-y: Deny: tcp {lab.hostport(c['ip'], 0)[:-1]}"
    wait_for("the drop in node1's agent log", lambda: line in agent_log_text(lab.cfg, "node1"), 10)


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
