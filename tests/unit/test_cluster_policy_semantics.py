"""The rendered Admin / NetworkPolicy / Baseline chains mean what policy.networking.k8s.io/v1alpha2
says, in the order its conformance cases check.

A reference evaluator written from the API's documentation (`reference_allows`) is compared
with an interpreter of what the nodes' kernels would hold (`kernel_allows`): the ClusterNetwork-
Policy table's base chains at filter - 10 and filter + 10 around NetworkPolicy's at filter, in
that order, one packet mark per node, on the forward hook of every node a connection crosses
(the input hook for a pod's own node's address). Every case checks named connections and then
that the two agree on every pod-to-pod, pod-to-node and pod-to-outside connection, both families.
"""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeweft.proxy import cluster_policy_model as cm
from kubeweft.proxy import policy_model as pm
from kubeweft.proxy import render_cluster_policy as rc
from kubeweft.proxy import render_policy as rp

from .test_policy_semantics import node_sets, run_chain

NODE_IPS = {"n0": ("192.168.56.10", "fd56::10"), "n1": ("192.168.56.11", "fd56::11")}
CIDRS_OF = {"n0": "10.244.0.0/24,fd00:0::/64", "n1": "10.244.1.0/24,fd00:1::/64"}
OUTSIDE = ("203.0.113.5", "198.51.100.7", "2001:db8::5")
NSS = {"x": {"team": "a"}, "y": {"team": "b"}}
POD_SPECS = (("x", "a", "n0", 2), ("x", "b", "n1", 3), ("y", "c", "n0", 4), ("y", "d", "n1", 5))


def _pod(ns: str, name: str, node: str, n: int) -> cm.Pod:
    return cm.Pod(ns, name, (f"10.244.{node[1]}.{n}", str(ipaddress.ip_address(f"fd00:{node[1]}::{n}"))), node,
                  frozenset({("app", name)}), (pm.ContainerPort("web", "tcp", 80),))


PODS = tuple(_pod(*s) for s in POD_SPECS)
NAMESPACES = {n: frozenset({**labels, pm.NAME_LABEL: n}.items()) for n, labels in NSS.items()}
NODES = tuple(cm.Node(n, frozenset({("role", "worker" if n == "n0" else "edge")}), ips)
              for n, ips in NODE_IPS.items())


def cnp(name, tier, priority, subject, ingress=(), egress=()) -> cm.ClusterPolicy:
    return cm.parse_cluster_policy({"metadata": {"name": name}, "spec": {
        "tier": tier, "priority": priority, "subject": subject, "ingress": list(ingress), "egress": list(egress)}})


def netpol(ns, name, spec) -> pm.Policy:
    return pm.parse_policy({"metadata": {"namespace": ns, "name": name}, "spec": spec})


def ns_sel(team):
    return {"namespaces": {"matchLabels": {"team": team}}}


# ---- the reference: the API documentation, read literally ------------------------------------

def _by_ip():
    return {ip: p for p in PODS for ip in p.ips}


def _peer_hits(peer: cm.Peer, ip: str, pod: cm.Pod | None) -> bool:
    if peer.unknown:
        return True
    if peer.networks:
        a = ipaddress.ip_address(ip)
        return any(a.version == n.version and a in n for n in map(ipaddress.ip_network, peer.networks))
    if peer.nodes is not None:
        return any(ip in n.ips and peer.nodes.matches(n.labels) for n in NODES)
    return pod is not None and cm.selects_pod(peer, pod, NAMESPACES[pod.namespace])


def _rule_hits(rule: cm.Rule, ip: str, pod, dst: cm.Pod | None, proto: str, port: int) -> bool:
    if rule.action == cm.ACCEPT:
        peers = any(_peer_hits(pe, ip, pod) for pe in rule.peers if not pe.unknown)
    else:
        peers = any(_peer_hits(pe, ip, pod) for pe in rule.peers)
    if not peers:
        return False
    if not rule.protocols:
        return True
    for pr in rule.protocols:
        if pr.named_port:
            if dst is not None and any(c.name == pr.named_port and c.protocol == proto and c.port == port
                                       for c in dst.ports):
                return True
        elif pr.protocol == proto and (pr.port is None or pr.port <= port <= (pr.end_port or pr.port)):
            return True
    return False


def _tier(policies, tier, direction, subject: cm.Pod, ip, other, dst, proto, port) -> str | None:
    """The tier's verdict for one direction: Accept, Deny, Pass, or None (no rule matched)."""
    for pol in sorted((p for p in policies if p.tier == tier), key=lambda p: p.order):
        if not cm.selects_pod(pol.subject, subject, NAMESPACES[subject.namespace]):
            continue
        for rule in (pol.egress if direction == cm.EGRESS else pol.ingress):
            if _rule_hits(rule, ip, other, dst, proto, port):
                return rule.action
    return None


def _np_direction(direction, subject: cm.Pod, ip, other, dst, proto, port, netpols) -> bool | None:
    """NetworkPolicy's verdict, None when no policy isolates the pod in this direction."""
    isolating = [p for p in netpols if p.namespace == subject.namespace and direction in p.types
                 and p.pod_selector.matches(subject.labels)]
    if not isolating:
        return None
    v4 = lambda p: None if p is None else pm.Pod(p.namespace, p.name, p.ips[0], p.node, p.labels, p.ports)
    nss = {n: pm.Namespace(n, labels) for n, labels in NAMESPACES.items()}
    for pol in isolating:
        for rule in (pol.ingress if direction == pm.INGRESS else pol.egress):
            peer_ok = not rule.peers or any(
                _np_peer(pe, pol, ip, v4(other), nss) for pe in rule.peers)
            port_ok = not rule.ports or any(
                ps.protocol == proto and (ps.port is None or (
                    isinstance(ps.port, int) and ps.port <= port <= (ps.end_port or ps.port)) or (
                    isinstance(ps.port, str) and dst is not None and any(
                        c.name == ps.port and c.protocol == proto and c.port == port for c in dst.ports)))
                for ps in rule.ports)
            if peer_ok and port_ok:
                return True
    return False


def _np_peer(peer: pm.Peer, pol: pm.Policy, ip: str, pod: pm.Pod | None, nss) -> bool:
    if peer.ip_block is not None:
        a = ipaddress.ip_address(ip)
        net = ipaddress.ip_network(peer.ip_block.cidr)
        return a.version == net.version and a in net and not any(
            a in ipaddress.ip_network(x) for x in peer.ip_block.excepts)
    if pod is None:
        return False
    ns_ok = pod.namespace == pol.namespace if peer.namespace_selector is None else \
        peer.namespace_selector.matches(nss[pod.namespace].labels)
    return ns_ok and (peer.pod_selector is None or peer.pod_selector.matches(pod.labels))


def _direction(direction, subject, ip, other, dst, proto, port, policies, netpols) -> bool:
    if subject is None:
        return True
    admin = _tier(policies, cm.ADMIN, direction, subject, ip, other, dst, proto, port)
    if admin in (cm.ACCEPT, cm.DENY):
        return admin == cm.ACCEPT
    np = _np_direction(direction, subject, ip, other, dst, proto, port, netpols)
    if np is not None:
        return np
    return _tier(policies, cm.BASELINE, direction, subject, ip, other, dst, proto, port) != cm.DENY


def reference_allows(src_ip, dst_ip, proto, port, policies, netpols) -> bool:
    pods = _by_ip()
    src, dst = pods.get(src_ip), pods.get(dst_ip)
    return (_direction(cm.EGRESS, src, dst_ip, dst, dst, proto, port, policies, netpols)
            and _direction(cm.INGRESS, dst, src_ip, src, dst, proto, port, policies, netpols))


# ---- the kernels -------------------------------------------------------------------------------

class Kernels:
    """Each node's two tables as the renderers make them."""

    def __init__(self, policies, netpols):
        world = {n: rc.World(n, tuple(policies), PODS, NAMESPACES, NODES) for n in NODE_IPS}
        self.cnp = {}
        for n, w in world.items():
            decls, members = rc.render_world(w)
            self.cnp[n] = ({f"chain {d.name}": d for d in decls if isinstance(d, rc.Chain)},
                           {k: set(v) for k, v in members.items()})
        index = rp.index_policies(list(netpols))
        np_pods = [pm.Pod(p.namespace, p.name, p.ips, p.node, p.labels, p.ports) for p in PODS]
        nss = {n: pm.Namespace(n, labels) for n, labels in NAMESPACES.items()}
        self.np = {n: (rp.render_decls(index, CIDRS_OF[n]), node_sets(index, np_pods, nss, n)) for n in NODE_IPS}

    def node_allows(self, node: str, hook: str, pkt: dict) -> bool:
        pkt = dict(pkt, mark=0)                  # the mark does not cross the wire
        cnp_decls, cnp_sets = self.cnp[node]
        np_decls, np_sets = self.np[node]
        tables = [(cnp_decls, cnp_sets, rc.ADMIN_FORWARD if hook == "forward" else rc.ADMIN_INPUT),
                  (np_decls, np_sets, rp.CHAIN_FORWARD if hook == "forward" else rp.CHAIN_INPUT),
                  (cnp_decls, cnp_sets, rc.BASE_FORWARD if hook == "forward" else rc.BASE_INPUT)]
        for decls, sets, chain in tables:
            if run_chain(decls, sets, chain, pkt) == "drop":
                return False
        return True

    def allows(self, src_ip, dst_ip, proto, port) -> bool:
        pods = _by_ip()
        pkt = {"saddr": src_ip, "daddr": dst_ip, "proto": proto, "dport": port, "ct": "new"}
        src, dst = pods.get(src_ip), pods.get(dst_ip)
        own_node = src is not None and dst_ip in NODE_IPS[src.node]
        nodes = list(dict.fromkeys(p.node for p in (src, dst) if p is not None))
        hook = "input" if own_node else "forward"
        return all(self.node_allows(n, hook, pkt) for n in nodes)


def destinations():
    return [ip for p in PODS for ip in p.ips] + [ip for ips in NODE_IPS.values() for ip in ips] + list(OUTSIDE)


def check_agree(policies, netpols=()) -> Kernels:
    k = Kernels(policies, netpols)
    for src in PODS:
        for src_ip in src.ips:
            for dst_ip in destinations():
                family = ipaddress.ip_address(src_ip).version
                if ipaddress.ip_address(dst_ip).version != family or dst_ip == src_ip:
                    continue
                for proto, port in (("tcp", 80), ("tcp", 81), ("udp", 53)):
                    want = reference_allows(src_ip, dst_ip, proto, port, policies, netpols)
                    assert k.allows(src_ip, dst_ip, proto, port) == want, (src_ip, dst_ip, proto, port, want)
    return k


A, B, C, D = PODS          # x/a on n0, x/b on n1, y/c on n0, y/d on n1
V4, V6 = 0, 1


# ---- the conformance cases ---------------------------------------------------------------------

def test_admin_deny_beats_a_networkpolicy_allow():
    pols = [cnp("deny-y-to-x", cm.ADMIN, 10, ns_sel("a"), ingress=[{"action": "Deny", "from": [ns_sel("b")]}])]
    nps = [netpol("x", "allow-all", {"podSelector": {}, "ingress": [{}]})]
    k = check_agree(pols, nps)
    assert not k.allows(C.ips[V4], A.ips[V4], "tcp", 80)
    assert not k.allows(D.ips[V4], A.ips[V4], "tcp", 80)          # across nodes
    assert k.allows(B.ips[V4], A.ips[V4], "tcp", 80)
    assert not Kernels(pols, ()).allows(C.ips[V6], A.ips[V6], "tcp", 80)      # and in IPv6


def test_admin_pass_hands_over_to_networkpolicy_and_skips_later_admin_rules():
    pols = [cnp("pass-y", cm.ADMIN, 10, ns_sel("a"), ingress=[{"action": "Pass", "from": [ns_sel("b")]}]),
            cnp("deny-y", cm.ADMIN, 20, ns_sel("a"), ingress=[{"action": "Deny", "from": [ns_sel("b")]}])]
    nps = [netpol("x", "only-x", {"podSelector": {"matchLabels": {"app": "a"}},
                                  "ingress": [{"from": [{"podSelector": {}}]}]})]
    k = check_agree(pols, nps)
    assert not k.allows(C.ips[V4], A.ips[V4], "tcp", 80)        # NetworkPolicy isolates a: y not allowed
    assert k.allows(C.ips[V4], B.ips[V4], "tcp", 80)            # b not isolated: default allow
    assert k.allows(B.ips[V4], A.ips[V4], "tcp", 80)


def test_baseline_deny_is_the_default_and_networkpolicy_overrides_it():
    pols = [cnp("baseline", cm.BASELINE, 10, ns_sel("a"), ingress=[{"action": "Deny", "from": [ns_sel("b")]}])]
    k = check_agree(pols)
    assert not k.allows(C.ips[V4], A.ips[V4], "tcp", 80)
    assert not k.allows(D.ips[V6], B.ips[V6], "tcp", 80)
    nps = [netpol("x", "allow-y", {"podSelector": {"matchLabels": {"app": "a"}},
                                   "ingress": [{"from": [{"namespaceSelector": {}}]}]})]
    k = check_agree(pols, nps)
    assert k.allows(C.ips[V4], A.ips[V4], "tcp", 80)            # NetworkPolicy over Baseline
    assert not k.allows(C.ips[V4], B.ips[V4], "tcp", 80)        # b: no NetworkPolicy, Baseline denies


def test_priority_order_within_the_admin_tier():
    accept = {"action": "Accept", "from": [ns_sel("b")]}
    deny = {"action": "Deny", "from": [ns_sel("b")]}
    first_accept = [cnp("p-accept", cm.ADMIN, 5, ns_sel("a"), ingress=[accept]),
                    cnp("p-deny", cm.ADMIN, 50, ns_sel("a"), ingress=[deny])]
    first_deny = [cnp("p-accept", cm.ADMIN, 50, ns_sel("a"), ingress=[accept]),
                  cnp("p-deny", cm.ADMIN, 5, ns_sel("a"), ingress=[deny])]
    deny_all_np = [netpol("x", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})]
    assert check_agree(first_accept, deny_all_np).allows(C.ips[V4], A.ips[V4], "tcp", 80)   # Accept is final
    assert not check_agree(first_deny).allows(C.ips[V4], A.ips[V4], "tcp", 80)
    base = [cnp("b-deny", cm.BASELINE, 1, ns_sel("a"), ingress=[deny])]
    assert check_agree(first_accept + base).allows(D.ips[V6], A.ips[V6], "tcp", 80)


def test_rules_of_one_policy_in_the_order_written():
    pols = [cnp("ordered", cm.ADMIN, 1, ns_sel("a"), ingress=[
        {"action": "Accept", "from": [ns_sel("b")], "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]},
        {"action": "Deny", "from": [ns_sel("b")]}])]
    k = check_agree(pols)
    assert k.allows(C.ips[V4], A.ips[V4], "tcp", 80)
    assert not k.allows(C.ips[V4], A.ips[V4], "tcp", 81)
    assert not k.allows(C.ips[V6], A.ips[V6], "udp", 53)


def test_egress_to_networks_of_both_families():
    pols = [cnp("no-doc-nets", cm.ADMIN, 1, ns_sel("a"), egress=[
        {"action": "Deny", "to": [{"networks": ["203.0.113.0/24", "2001:db8::/32"]}]}])]
    k = check_agree(pols)
    assert not k.allows(A.ips[V4], "203.0.113.5", "tcp", 80)
    assert not k.allows(B.ips[V6], "2001:db8::5", "tcp", 80)
    assert k.allows(A.ips[V4], "198.51.100.7", "tcp", 80)
    assert k.allows(C.ips[V4], "203.0.113.5", "tcp", 80)        # y is no subject


def test_egress_to_nodes_on_the_input_and_forward_hooks():
    pols = [cnp("no-workers", cm.ADMIN, 1, ns_sel("a"), egress=[
        {"action": "Deny", "to": [{"nodes": {"matchLabels": {"role": "worker"}}}]}])]
    k = check_agree(pols)
    assert not k.allows(A.ips[V4], NODE_IPS["n0"][0], "tcp", 80)     # its own node: input
    assert not k.allows(B.ips[V6], NODE_IPS["n0"][1], "tcp", 80)     # another node: forward
    assert k.allows(A.ips[V4], NODE_IPS["n1"][0], "tcp", 80)
    base = [cnp("base-nodes", cm.BASELINE, 1, ns_sel("b"), egress=[
        {"action": "Deny", "to": [{"nodes": {}}]}])]
    k = check_agree(base)
    assert not k.allows(C.ips[V4], NODE_IPS["n0"][0], "tcp", 80)
    egress_np = [netpol("y", "allow-eg", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})]
    assert check_agree(base, egress_np).allows(C.ips[V4], NODE_IPS["n0"][0], "tcp", 80)


def test_named_ports():
    pols = [cnp("no-web", cm.ADMIN, 1, ns_sel("a"), ingress=[
        {"action": "Deny", "from": [ns_sel("b")], "protocols": [{"destinationNamedPort": "web"}]}])]
    k = check_agree(pols)
    assert not k.allows(C.ips[V4], A.ips[V4], "tcp", 80)
    assert not k.allows(D.ips[V6], A.ips[V6], "tcp", 80)
    assert k.allows(C.ips[V4], A.ips[V4], "tcp", 81)
    assert k.allows(C.ips[V4], A.ips[V4], "udp", 80)


def test_port_ranges_and_protocols():
    pols = [cnp("ranges", cm.BASELINE, 1, ns_sel("b"), egress=[
        {"action": "Deny", "to": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a"}}}}],
         "protocols": [{"tcp": {"destinationPort": {"range": {"start": 79, "end": 80}}}}, {"udp": {}}]}])]
    k = check_agree(pols)
    assert not k.allows(C.ips[V4], A.ips[V4], "tcp", 80)
    assert k.allows(C.ips[V4], A.ips[V4], "tcp", 81)
    assert not k.allows(D.ips[V6], A.ips[V6], "udp", 53)
    assert k.allows(D.ips[V4], B.ips[V4], "tcp", 80)


def test_a_peer_it_cannot_read_fails_closed():
    deny = [cnp("future-deny", cm.ADMIN, 1, ns_sel("a"), egress=[{"action": "Deny", "to": [{"domainNames": ["x."]}]}])]
    accept = [cnp("future-accept", cm.ADMIN, 1, ns_sel("a"), egress=[
        {"action": "Accept", "to": [{"domainNames": ["x."]}]}])]
    assert not check_agree(deny).allows(A.ips[V4], C.ips[V4], "tcp", 80)
    deny_all_np = [netpol("x", "deny-eg", {"podSelector": {}, "policyTypes": ["Egress"]})]
    assert not check_agree(accept, deny_all_np).allows(A.ips[V4], C.ips[V4], "tcp", 80)


# ---- generated worlds --------------------------------------------------------------------------

peer = st.one_of(st.sampled_from([ns_sel("a"), ns_sel("b"), {"namespaces": {}}]),
                 st.builds(lambda app: {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": app}}}},
                           st.sampled_from("abcd")),
                 st.just({"networks": ["203.0.113.0/24", "fd00:1::/64"]}),
                 st.just({"nodes": {"matchLabels": {"role": "worker"}}}))
proto = st.sampled_from([{"tcp": {"destinationPort": {"number": 80}}}, {"udp": {}}, {"destinationNamedPort": "web"}])
rule = st.builds(lambda a, ps, prs: {"action": a, "peers": ps, "protocols": prs},
                 st.sampled_from(["Accept", "Deny", "Pass"]), st.lists(peer, min_size=1, max_size=2),
                 st.lists(proto, max_size=2))


def _policy(i, tier, prio, subject, ingress, egress):
    ing = [{"action": r["action"], "from": [p for p in r["peers"] if "networks" not in p and "nodes" not in p]
            or [ns_sel("a")], **({"protocols": r["protocols"]} if r["protocols"] else {})} for r in ingress]
    eg = [{"action": r["action"], "to": r["peers"], **({"protocols": r["protocols"]} if r["protocols"] else {})}
          for r in egress]
    return cnp(f"g{i}", tier, prio, subject, ing, eg)


policy = st.tuples(st.sampled_from([cm.ADMIN, cm.BASELINE]), st.integers(0, 3),
                   st.sampled_from([ns_sel("a"), ns_sel("b"), {"namespaces": {}},
                                    {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a"}}}}]),
                   st.lists(rule, max_size=2), st.lists(rule, max_size=2))
netpols = st.lists(st.sampled_from([
    netpol("x", "deny-in", {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]}),
    netpol("y", "allow-eg-x", {"podSelector": {}, "policyTypes": ["Egress"],
                               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}),
    netpol("x", "allow-in-y", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})]),
    max_size=2, unique_by=lambda p: p.key)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(policy, max_size=4), netpols)
def test_generated_worlds_agree_with_the_api(specs, nps):
    check_agree([_policy(i, *s) for i, s in enumerate(specs)], nps)


@pytest.mark.parametrize("spec, error", [
    ({"tier": "Developer", "priority": 1, "subject": {"namespaces": {}}}, "tier"),
    ({"tier": "Admin", "priority": 1001, "subject": {"namespaces": {}}}, "priority"),
    ({"tier": "Admin", "priority": 1, "subject": {}}, "subject"),
    ({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}, "pods": {}}}, "subject"),
    ({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
      "ingress": [{"action": "Allow", "from": [{"namespaces": {}}]}]}, "action"),
    ({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
      "ingress": [{"action": "Deny", "from": []}]}, "from"),
    ({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
      "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.300/8"]}]}]}, "networks"),
    ({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
      "egress": [{"action": "Deny", "to": [{"namespaces": {}}],
                  "protocols": [{"tcp": {"destinationPort": {"range": {"start": 90, "end": 80}}}}]}]}, "range"),
    ({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
      "egress": [{"action": "Deny", "to": [{"namespaces": {}}], "protocols": [{"icmp": {}}]}]}, "protocol"),
])
def test_model_refuses_what_the_crd_forbids(spec, error):
    with pytest.raises(pm.ModelError, match=error):
        cm.parse_cluster_policy({"metadata": {"name": "bad"}, "spec": spec})


def test_model_reads_every_field():
    pol = cm.parse_cluster_policy({"metadata": {"name": "all"}, "spec": {
        "tier": "Baseline", "priority": 7,
        "subject": {"pods": {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {}}},
        "ingress": [{"name": "r0", "action": "Accept", "from": [{"namespaces": {}}],
                     "protocols": [{"destinationNamedPort": "web"}]}],
        "egress": [{"action": "Pass", "to": [{"networks": ["10.0.0.0/8", "fd00::/8"]}, {"nodes": {}}],
                    "protocols": [{"sctp": {"destinationPort": {"number": 9}}}]}]}})
    assert (pol.tier, pol.priority, pol.ingress[0].name) == (cm.BASELINE, 7, "r0")
    assert pol.subject.pods is not None and pol.ingress[0].protocols == (cm.Protocol(named_port="web"),)
    assert pol.egress[0].peers[0].networks == ("10.0.0.0/8", "fd00::/8")
    assert pol.egress[0].protocols == (cm.Protocol("sctp", 9),)
    pod = cm.parse_pod({"metadata": {"namespace": "x", "name": "p"}, "spec": {"nodeName": "n0"},
                        "status": {"podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}, {"ip": "fd00::9"}]}})
    assert pod.ips == ("10.244.0.9", "fd00::9")
    node = cm.parse_node({"metadata": {"name": "n0", "labels": {"r": "w"}}, "status": {"addresses": [
        {"type": "InternalIP", "address": "192.168.56.10"}, {"type": "Hostname", "address": "n0"},
        {"type": "InternalIP", "address": "fd56::10"}]}})
    assert node.ips == ("192.168.56.10", "fd56::10")


def test_rendered_table_text_is_one_transaction_nft_accepts_shape():
    pols = [cnp("t", cm.ADMIN, 1, ns_sel("a"), ingress=[{"action": "Deny", "from": [ns_sel("b")]}])]
    decls, members = rc.render_world(rc.World("n0", tuple(pols), PODS, NAMESPACES, NODES))
    lines = rc.render_table(decls, members)
    assert lines[:2] == [f"add table {rc.T}", f"delete table {rc.T}"]
    assert any("hook forward priority filter - 10" in x for x in lines)
    assert any("hook forward priority filter + 10" in x for x in lines)
    pid = rc.policy_id("t")
    assert f"add element {rc.T} {pid}_s_4 {{ 10.244.0.2 }}" in lines        # local subjects only
    assert f"add element {rc.T} {pid}_i0_6 {{ fd00:1::5, fd00::4 }}" in lines     # peers: every node
