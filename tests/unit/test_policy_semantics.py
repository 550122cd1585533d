"""The rendered rules mean what networking.k8s.io/v1 says.

A reference evaluator written straight from the API's documentation (`allowed`) is compared with
an interpreter of the rendered IR (render_policy's chains and the sets plan_pod_members fills on
each node) over generated worlds: namespaces x, y, z, pods on two nodes, policies with every
kind of peer, port and policyTypes, and packets from pods and from outside to pods and to
outside. A connection crosses the source node's forward hook and then the destination node's
(once when both are the same node), as in the kernel. Every world is built in each IP family:
IPv4, IPv6, and dual-stack pods holding one address of each, where connections run in both
families (a packet's family decides which `ip`/`ip6` matches can match it, as in an inet table).
"""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeweft.proxy import policy_model as pm
from kubeweft.proxy import render_policy as rp

NODES = ("n0", "n1")
FAMILIES = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}
RANGES = {4: {"n0": "10.244.0.0/24", "n1": "10.244.1.0/24"},
          6: {"n0": "fd00:10:244::/64", "n1": "fd00:10:244:1::/64"}}
EXTERNAL_OF = {4: ("203.0.113.2", "192.168.56.99"), 6: ("2001:db8:113::2", "2001:db8:56::99")}
CIDRS_OF = {n: RANGES[4][n] for n in NODES}


def cidrs_of(family: str, node: str) -> str:
    return ",".join(RANGES[v][node] for v in FAMILIES[family])


def externals(family: str) -> list[str]:
    return [ip for v in FAMILIES[family] for ip in EXTERNAL_OF[v]]
LABEL_KEYS = ("app", "tier")
LABEL_VALUES = ("a", "b")
PORT_NAMES = ("web", "dns")
CIDRS = (("10.244.0.0/16", ("10.244.1.0/24",)), ("10.244.0.2/32", ()), ("203.0.113.0/24", ()),
         ("0.0.0.0/0", ("10.244.0.0/24",)), ("10.244.1.0/24", ("10.244.1.2/31", "10.244.1.4/32")),
         ("fd00::/64", ()), ("fd00:10:244::/56", ("fd00:10:244:1::/64",)),
         ("::/0", ("fd00:10:244::/64",)), ("2001:db8:113::/64", ()),
         ("fd00:10:244:1::/64", ("fd00:10:244:1::2/127", "fd00:10:244:1::4/128")))


# ---- the reference: the API documentation, read literally ------------------------------------

def _peer_matches(peer: pm.Peer, pol: pm.Policy, ip: str, pod: pm.Pod | None, nss: dict) -> bool:
    if peer.ip_block is not None:
        net = ipaddress.ip_network(peer.ip_block.cidr)
        a = ipaddress.ip_address(ip)
        if a.version != net.version or a not in net:
            return False
        return not any(a in ipaddress.ip_network(x) for x in peer.ip_block.excepts)
    if pod is None:
        return False
    if peer.namespace_selector is None:
        ns_ok = pod.namespace == pol.namespace
    else:
        ns_ok = peer.namespace_selector.matches(nss[pod.namespace].labels)
    pod_ok = peer.pod_selector is None or peer.pod_selector.matches(pod.labels)
    return ns_ok and pod_ok


def _port_matches(ps: pm.PortSpec, proto: str, port: int, dst: pm.Pod | None) -> bool:
    if ps.protocol != proto:
        return False
    if ps.port is None:
        return True
    if isinstance(ps.port, str):
        return dst is not None and any(c.name == ps.port and c.protocol == proto and c.port == port
                                       for c in dst.ports)
    return ps.port <= port <= (ps.end_port or ps.port)


def _direction_ok(direction: str, subject: pm.Pod | None, other_ip: str, other: pm.Pod | None,
                  dst: pm.Pod | None, proto: str, port: int, policies, nss) -> bool:
    if subject is None:
        return True
    isolating = [p for p in policies if p.namespace == subject.namespace and direction in p.types
                 and p.pod_selector.matches(subject.labels)]
    if not isolating:
        return True
    for pol in isolating:
        for rule in (pol.ingress if direction == pm.INGRESS else pol.egress):
            peer_ok = not rule.peers or any(_peer_matches(pe, pol, other_ip, other, nss) for pe in rule.peers)
            port_ok = not rule.ports or any(_port_matches(ps, proto, port, dst) for ps in rule.ports)
            if peer_ok and port_ok:
                return True
    return False


def allowed(src_ip, dst_ip, proto, port, pods_by_ip, policies, nss) -> bool:
    src, dst = pods_by_ip.get(src_ip), pods_by_ip.get(dst_ip)
    return (_direction_ok(pm.EGRESS, src, dst_ip, dst, dst, proto, port, policies, nss)
            and _direction_ok(pm.INGRESS, dst, src_ip, src, dst, proto, port, policies, nss))


# ---- the interpreter of the rendered IR --------------------------------------------------------

def _match(m: rp.Match, pkt: dict, sets: dict) -> bool:
    version = ipaddress.ip_address(pkt["saddr"]).version
    if m.expr.startswith(("ip ", "ip6 ")) and m.expr.startswith("ip6 ") != (version == 6):
        return False               # an address match of the other family: no match, even with !=
    if m.expr == "ct state":
        hit = pkt["ct"] in m.values[0].split(",")
    elif m.expr.startswith("meta mark & "):
        hit = pkt.get("mark", 0) & int(m.expr[12:], 0) == int(m.values[0], 0)
    elif m.expr == "meta nfproto":
        hit = f"ipv{version}" in m.values
    elif m.expr == "icmpv6 type":
        hit = version == 6 and pkt["proto"] == "icmpv6" and pkt["type"] in m.values
    elif m.expr in ("ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr"):
        ip = pkt["saddr" if m.expr.endswith("saddr") else "daddr"]
        if m.set:
            hit = ip in sets.get(m.set, ())
        else:
            hit = any(ipaddress.ip_address(ip) in ipaddress.ip_network(v) for v in m.values)
    elif m.expr == "meta l4proto":
        hit = pkt["proto"] in m.values
    elif m.expr == "th dport":
        lo, _, hi = m.values[0].partition("-")
        hit = int(lo) <= pkt["dport"] <= int(hi or lo)
    elif m.expr.split()[0] in ("ip", "ip6") and " . " in m.expr:
        ip = pkt[m.expr.split()[1]]
        hit = f"{ip} . {pkt['proto']} . {pkt['dport']}" in sets.get(m.set, ())
    else:
        raise AssertionError(f"the interpreter does not know {m.expr!r}")
    return hit if m.op == "==" else not hit


def run_chain(decls: dict, sets: dict, name: str, pkt: dict, depth: int = 0) -> str | None:
    assert depth < 10, "jump loop"
    chain = decls[f"chain {name}"]
    for rule in chain.rules:
        if not all(_match(m, pkt, sets) for m in rule.matches):
            continue
        if rule.mark:
            pkt["mark"] = pkt.get("mark", 0) | rule.mark
        v = rule.verdict
        if v == "return":
            return None
        if v in ("accept", "drop"):
            return v
        if v.startswith("jump "):
            r = run_chain(decls, sets, v[5:], pkt, depth + 1)
            if r:
                return r
        elif v.startswith("goto "):
            return run_chain(decls, sets, v[5:], pkt, depth + 1)
    return None


def node_sets(index, pods, nss, node) -> dict[str, set]:
    sets: dict[str, set] = {}
    for pod in pods:
        for s, e in rp.plan_pod_members(index, pod, nss[pod.namespace], pod.node == node):
            sets.setdefault(s, set()).add(e)
    return sets


def node_decls(index, family: str = "ipv4") -> dict[str, dict]:
    return {n: rp.render_decls(index, cidrs_of(family, n)) for n in NODES}


def kernel_allows(decls_by_node, sets_by_node, src_ip, dst_ip, proto, port, pods_by_ip) -> bool:
    """A new connection's first packet through the forward hook of each node it crosses."""
    pkt = {"saddr": src_ip, "daddr": dst_ip, "proto": proto, "dport": port, "ct": "new"}
    nodes = []
    for ip in (src_ip, dst_ip):
        pod = pods_by_ip.get(ip)
        if pod is not None and pod.node not in nodes:
            nodes.append(pod.node)
    for node in nodes:
        if run_chain(decls_by_node[node], sets_by_node[node], rp.CHAIN_FORWARD, dict(pkt)) == "drop":
            return False
    return True


# ---- worlds ------------------------------------------------------------------------------------

labels = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)
expression = st.one_of(
    st.builds(lambda k, op, vs: {"key": k, "operator": op, "values": vs}, st.sampled_from(LABEL_KEYS),
              st.sampled_from(["In", "NotIn"]), st.lists(st.sampled_from(LABEL_VALUES), min_size=1, max_size=2)),
    st.builds(lambda k, op: {"key": k, "operator": op}, st.sampled_from(LABEL_KEYS),
              st.sampled_from(["Exists", "DoesNotExist"])))
selector = st.builds(lambda ml, me: {**({"matchLabels": ml} if ml else {}), **({"matchExpressions": me} if me else {})},
                     labels, st.lists(expression, max_size=2))
ns_selector = st.one_of(selector, st.builds(lambda n: {"matchLabels": {pm.NAME_LABEL: n}},
                                            st.sampled_from("xyz")))
ip_block = st.builds(lambda c: {"cidr": c[0], **({"except": list(c[1])} if c[1] else {})}, st.sampled_from(CIDRS))
peer = st.one_of(st.builds(lambda s: {"podSelector": s}, selector),
                 st.builds(lambda s: {"namespaceSelector": s}, ns_selector),
                 st.builds(lambda a, b: {"podSelector": a, "namespaceSelector": b}, selector, ns_selector),
                 st.builds(lambda b: {"ipBlock": b}, ip_block))
protocol = st.sampled_from(["TCP", "UDP", "SCTP", None])
port = st.one_of(
    st.builds(lambda p: {"protocol": p} if p else {}, protocol),
    st.builds(lambda p, n: {"port": n, **({"protocol": p} if p else {})}, protocol, st.sampled_from([80, 81])),
    st.builds(lambda p: {"port": 80, "endPort": 81, **({"protocol": p} if p else {})}, protocol),
    st.builds(lambda p, n: {"port": n, **({"protocol": p} if p else {})}, protocol, st.sampled_from(PORT_NAMES)))


def rule(peer_field):
    return st.builds(lambda ps, ports: {**({peer_field: ps} if ps is not None else {}),
                                        **({"ports": ports} if ports is not None else {})},
                     st.one_of(st.none(), st.lists(peer, max_size=3)),
                     st.one_of(st.none(), st.lists(port, max_size=3)))


policy = st.builds(
    lambda ns, sel, ing, eg, types: {
        "metadata": {"namespace": ns, "name": "p"},
        "spec": {"podSelector": sel, **({"ingress": ing} if ing is not None else {}),
                 **({"egress": eg} if eg is not None else {}), **({"policyTypes": types} if types else {})}},
    st.sampled_from("xyz"), selector, st.one_of(st.none(), st.lists(rule("from"), max_size=2)),
    st.one_of(st.none(), st.lists(rule("to"), max_size=2)),
    st.one_of(st.none(), st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]])))
container_ports = st.lists(st.tuples(st.sampled_from(PORT_NAMES), st.sampled_from(["TCP", "UDP", "SCTP"]),
                                     st.sampled_from([80, 81])), max_size=2, unique_by=lambda t: t[0])
pod_spec = st.tuples(st.sampled_from("xyz"), labels, container_ports)


def pod_ips(i: int, family: str) -> list[str]:
    """Pod i's addresses: on node i % 2, host 2 + i // 2 of that node's range of each family."""
    return [str(ipaddress.ip_network(RANGES[v][NODES[i % 2]])[2 + i // 2]) for v in FAMILIES[family]]


def build_world(pod_specs, ns_labels, policy_objs, family: str = "ipv4"):
    nss = {n: pm.parse_namespace({"metadata": {"name": n, "labels": ns_labels.get(n, {})}}) for n in "xyz"}
    pods = []
    for i, (ns, lab, ports) in enumerate(pod_specs):
        node = NODES[i % 2]
        ips = pod_ips(i, family)
        pods.append(pm.parse_pod({
            "metadata": {"namespace": ns, "name": f"pod{i}", "labels": lab},
            "spec": {"nodeName": node, "containers": [{"ports": [
                {"name": n, "protocol": p, "containerPort": c} for n, p, c in ports]}]},
            "status": {"podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}}))
    policies = []
    for i, obj in enumerate(policy_objs):
        obj["metadata"]["name"] = f"p{i}"
        policies.append(pm.parse_policy(obj))
    return nss, pods, policies


def same_family(a: str, b: str) -> bool:
    return ipaddress.ip_address(a).version == ipaddress.ip_address(b).version


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod_specs=st.lists(pod_spec, min_size=2, max_size=6),
       ns_labels=st.dictionaries(st.sampled_from("xyz"), labels),
       policy_objs=st.lists(policy, max_size=4))
def test_rendered_rules_agree_with_the_api_semantics(family, pod_specs, ns_labels, policy_objs):
    nss, pods, policies = build_world(pod_specs, ns_labels, policy_objs, family)
    index = rp.index_policies(policies)
    decls = node_decls(index, family)
    sets_by_node = {n: node_sets(index, pods, nss, n) for n in NODES}
    pods_by_ip = {ip: p for p in pods for ip in p.ips}
    ips = list(pods_by_ip)
    outside = externals(family)
    for src in ips + outside:
        for dst in ips + outside:
            if src == dst or (src in outside and dst in outside) or not same_family(src, dst):
                continue
            for proto in ("tcp", "udp", "sctp"):
                for port in (80, 81):
                    want = allowed(src, dst, proto, port, pods_by_ip, policies, nss)
                    got = kernel_allows(decls, sets_by_node, src, dst, proto, port, pods_by_ip)
                    assert got == want, (f"{proto} {src} -> {dst}:{port}: rendered {got}, API {want}\n"
                                         f"{policies}")


def test_replies_pass_whatever_the_policy():
    nss, pods, policies = build_world([("x", {"app": "a"}, []), ("x", {"app": "b"}, [])], {},
                                      [{"metadata": {"namespace": "x"}, "spec": {
                                          "podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}])
    index = rp.index_policies(policies)
    decls = rp.render_decls(index, CIDRS_OF["n0"])
    sets = node_sets(index, pods, nss, "n0")
    new = {"saddr": pods[1].ips[0], "daddr": pods[0].ips[0], "proto": "tcp", "dport": 80, "ct": "new"}
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, new) == "drop"
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, dict(new, ct="established")) == "accept"
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, dict(new, ct="related")) == "accept"


def test_a_pods_egress_to_its_own_node_is_checked_in_input():
    nss, pods, policies = build_world([("x", {"app": "a"}, [])], {}, [
        {"metadata": {"namespace": "x"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                                                  "egress": [{"to": [{"ipBlock": {"cidr": "192.168.56.10/32"}}]}]}}])
    index = rp.index_policies(policies)
    decls = rp.render_decls(index, CIDRS_OF["n0"])
    sets = node_sets(index, pods, nss, "n0")
    pkt = {"saddr": pods[0].ips[0], "daddr": "192.168.56.10", "proto": "tcp", "dport": 10250, "ct": "new"}
    assert run_chain(decls, sets, rp.CHAIN_INPUT, pkt) == "accept"
    assert run_chain(decls, sets, rp.CHAIN_INPUT, dict(pkt, daddr="192.168.56.11")) == "drop"


def _verdicts(pod_specs, policy_objs, family: str = "ipv4"):
    """(src, dst, proto, port) -> (rendered, API) over a small world, for targeted cases."""
    nss, pods, policies = build_world(pod_specs, {}, policy_objs, family)
    index = rp.index_policies(policies)
    decls = node_decls(index, family)
    sets_by_node = {n: node_sets(index, pods, nss, n) for n in NODES}
    by_ip = {ip: p for p in pods for ip in p.ips}
    out = {}
    for src in list(by_ip) + externals(family):
        for dst in by_ip:
            if src != dst and same_family(src, dst):
                for proto in ("tcp", "udp", "sctp"):
                    for port in (80, 81):
                        out[(src, dst, proto, port)] = (
                            kernel_allows(decls, sets_by_node, src, dst, proto, port, by_ip),
                            allowed(src, dst, proto, port, by_ip, policies, nss))
    return out


def test_named_ports_resolve_per_destination_pod_and_protocol():
    # pod0 (n0) names 81/UDP "dns"; pod1 (n1) names 80/SCTP "dns"; pod2 (n0) names 80/TCP "dns"
    specs = [("x", {"app": "a"}, [("dns", "UDP", 81)]), ("x", {"app": "a"}, [("dns", "SCTP", 80)]),
             ("x", {"app": "a"}, [("dns", "TCP", 80)])]
    policies = [{"metadata": {"namespace": "x"}, "spec": {"podSelector": {}, "ingress": [
        {"ports": [{"port": "dns", "protocol": "UDP"}, {"port": "dns", "protocol": "SCTP"}]}]}}]
    v = _verdicts(specs, policies)
    assert all(got == want for got, want in v.values())
    allowed_now = {k for k, (got, _) in v.items() if got}
    assert {(d, p, n) for _, d, p, n in allowed_now} == {("10.244.0.2", "udp", 81), ("10.244.1.2", "sctp", 80)}


def test_ip_block_excepts_apply_to_pod_addresses_too():
    specs = [("x", {"app": "a"}, []), ("y", {}, []), ("y", {}, [])]   # 10.244.0.2, 10.244.1.2, 10.244.0.3
    policies = [{"metadata": {"namespace": "x"}, "spec": {"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}}]}]}}]
    v = _verdicts(specs, policies)
    assert all(got == want for got, want in v.values())
    assert v[("10.244.0.3", "10.244.0.2", "tcp", 80)] == (True, True)
    assert v[("10.244.1.2", "10.244.0.2", "tcp", 80)] == (False, False)
    assert v[("203.0.113.2", "10.244.0.2", "tcp", 80)] == (False, False)


@pytest.mark.parametrize("family", ["ipv4", "dual"])
@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod_specs=st.lists(pod_spec, min_size=1, max_size=5),
       ns_labels=st.dictionaries(st.sampled_from("xyz"), labels),
       before=st.lists(policy, max_size=4), after=st.lists(policy, max_size=4))
def test_the_delta_after_policy_changes_equals_a_full_plan(family, pod_specs, ns_labels, before, after):
    """What the controller does on a policy change: only the changed policies are evaluated."""
    nss, pods, old_pols = build_world(pod_specs, ns_labels, before, family)
    _, _, new_pols = build_world(pod_specs, ns_labels, after, family)
    old_index, new_index = rp.index_policies(old_pols), rp.index_policies(new_pols)
    old_by_id = dict(old_index.policies)
    new_by_id = dict(new_index.policies)
    changed = frozenset(pid for pid in old_by_id.keys() | new_by_id.keys()
                        if old_by_id.get(pid) != new_by_id.get(pid))
    for pod in pods:
        for local in (True, False):
            old = rp.plan_pod_members(old_index, pod, nss[pod.namespace], local)
            full = rp.plan_pod_members(new_index, pod, nss[pod.namespace], local)
            assert rp.plan_pod_members_delta(new_index, pod, nss[pod.namespace], local, old, changed) == full
            if old_index.named_ports == new_index.named_ports:     # else the planner plans every pod
                matched = {s.removesuffix("_v6") for s, _ in full if s[:13] in changed}
                gone, came = rp.plan_pod_members_change(new_index, pod, old, changed, matched)
                assert (old - gone) | came == full and not gone & came


def test_an_address_of_the_nodes_pods_that_no_pod_holds_gets_nothing():
    """Else packets wait in the neighbour queue and reach the pod that comes next, unchecked."""
    nss, pods, policies = build_world([("x", {}, [])], {}, [])
    index = rp.index_policies(policies)
    decls = rp.render_decls(index, CIDRS_OF["n0"])
    sets = node_sets(index, pods, nss, "n0")
    pkt = {"saddr": "203.0.113.2", "daddr": "10.244.0.99", "proto": "udp", "dport": 80, "ct": "new"}
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, pkt) == "drop"
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, dict(pkt, daddr=pods[0].ips[0])) != "drop"
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, dict(pkt, daddr="10.244.1.99")) != "drop"  # not ours


# ---- dual-stack pods: either address -------------------------------------------------------------

DUAL = [("x", {"app": "a"}, []), ("x", {"app": "b"}, []), ("x", {"app": "c"}, [])]
# pod0 on n0: 10.244.0.2 and fd00:10:244::2; pod1 on n1: 10.244.1.2 and fd00:10:244:1::2;
# pod2 on n0: 10.244.0.3 and fd00:10:244::3


def test_a_policy_selecting_a_dual_stack_pod_isolates_both_of_its_addresses():
    v = _verdicts(DUAL, [{"metadata": {"namespace": "x"}, "spec": {"podSelector": {"matchLabels": {"app": "a"}}}}],
                  "dual")
    assert all(got == want for got, want in v.values())
    assert v[("10.244.1.2", "10.244.0.2", "tcp", 80)] == (False, False)
    assert v[("fd00:10:244:1::2", "fd00:10:244::2", "tcp", 80)] == (False, False)
    assert v[("fd00:10:244:1::2", "fd00:10:244::3", "tcp", 80)] == (True, True)     # not selected


def test_a_pod_selector_peer_admits_both_addresses_of_the_peer():
    v = _verdicts(DUAL, [{"metadata": {"namespace": "x"}, "spec": {
        "podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}}], "dual")
    assert all(got == want for got, want in v.values())
    assert v[("10.244.1.2", "10.244.0.2", "udp", 81)] == (True, True)
    assert v[("fd00:10:244:1::2", "fd00:10:244::2", "udp", 81)] == (True, True)
    assert v[("fd00:10:244::3", "fd00:10:244::2", "udp", 81)] == (False, False)
    assert v[("2001:db8:113::2", "fd00:10:244::2", "udp", 81)] == (False, False)


def test_an_ipv6_ip_block_with_except_admits_only_addresses_of_its_own_family():
    v = _verdicts(DUAL, [{"metadata": {"namespace": "x"}, "spec": {
        "podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:10:244::/56", "except": ["fd00:10:244:1::/64"]}},
                              {"ipBlock": {"cidr": "2001:db8:113::/64"}}]}]}}], "dual")
    assert all(got == want for got, want in v.values())
    assert v[("fd00:10:244::3", "fd00:10:244::2", "tcp", 80)] == (True, True)
    assert v[("2001:db8:113::2", "fd00:10:244::2", "tcp", 80)] == (True, True)
    assert v[("fd00:10:244:1::2", "fd00:10:244::2", "tcp", 80)] == (False, False)       # the except
    assert v[("10.244.0.3", "10.244.0.2", "tcp", 80)] == (False, False)    # same pod, its IPv4 address
    assert v[("203.0.113.2", "10.244.0.2", "tcp", 80)] == (False, False)


def test_a_family_without_pod_ranges_on_the_node_is_not_policed():
    nss, pods, policies = build_world(DUAL[:1], {}, [
        {"metadata": {"namespace": "x"}, "spec": {"podSelector": {}}}])
    index = rp.index_policies(policies)
    decls = rp.render_decls(index, CIDRS_OF["n0"])
    sets = node_sets(index, pods, nss, "n0")
    pkt = {"saddr": "2001:db8:113::2", "daddr": "2001:db8:56::11", "proto": "tcp", "dport": 80, "ct": "new"}
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, pkt) == "accept"
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, dict(pkt, saddr="203.0.113.2", daddr=pods[0].ips[0])) == "drop"


def test_ipv6_neighbour_discovery_passes_isolated_pods_both_ways():
    """Without it an isolated pod loses its neighbours: NDP is not tracked, never "established"."""
    nss, pods, policies = build_world(DUAL[:2], {}, [{"metadata": {"namespace": "x"}, "spec": {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}], "dual")
    index = rp.index_policies(policies)
    decls = rp.render_decls(index, cidrs_of("dual", "n0"))
    sets = node_sets(index, pods, nss, "n0")
    ns_ = {"saddr": pods[0].ips[1], "daddr": "fd00:10:244::1", "proto": "icmpv6", "dport": 0, "ct": "invalid",
           "type": "nd-neighbor-solicit"}
    assert run_chain(decls, sets, rp.CHAIN_INPUT, ns_) == "accept"
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, dict(ns_, daddr=pods[1].ips[1], type="nd-neighbor-advert")) \
        == "accept"
    assert run_chain(decls, sets, rp.CHAIN_FORWARD, dict(ns_, daddr=pods[1].ips[1], type="echo-request")) == "drop"
