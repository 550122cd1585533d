"""render_policy: golden nft text for whole tables, and the properties the controller relies on
(a label change is a few element changes; a policy change touches only its own chains; one
transaction's commands come in an order nft accepts).

Regenerate the golden files after an intended change with: UPDATE_GOLDEN=1 pytest tests/unit/test_render_policy.py
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import replace
from pathlib import Path

import pytest
from kubeweft.proxy import policy_model as pm
from kubeweft.proxy import render_policy as rp

GOLDEN = Path(__file__).parent / "golden" / "policy"

NSS = {n: pm.parse_namespace({"metadata": {"name": n, "labels": {"team": t}}}) for n, t in
       (("x", "red"), ("y", "blue"), ("z", "red"))}


FAMILIES = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}
NODE1_RANGES = {4: "10.244.0.0/24", 6: "fd00:10:244::/64"}


def ipv6_twin(ip: str) -> str:
    """10.244.N.H -> fd00:10:244:N::H: the pod's address in the IPv6 pod range of its node."""
    _, _, n, h = ip.split(".")
    return str(ipaddress.ip_address(f"fd00:10:244:{int(n):x}::{int(h):x}"))


def pod(ns, name, ip, node, labels, ports=(), family="ipv4"):
    ips = [ip if v == 4 else ipv6_twin(ip) for v in FAMILIES[family]]
    return pm.parse_pod({"metadata": {"namespace": ns, "name": name, "labels": labels},
                         "spec": {"nodeName": node, "containers": [{"ports": [
                             {"name": n, "protocol": p, "containerPort": c} for n, p, c in ports]}]},
                         "status": {"podIP": ips[0], "podIPs": [{"ip": i} for i in ips]}})


def pods_of(family):
    return [pod("x", "a", "10.244.0.2", "node1", {"pod": "a"}, [("http", "TCP", 80), ("dns", "UDP", 53)], family),
            pod("x", "b", "10.244.1.2", "node2", {"pod": "b"}, family=family),
            pod("y", "a", "10.244.0.3", "node1", {"pod": "a"}, [("http", "TCP", 8080)], family),
            pod("z", "c", "10.244.1.3", "node2", {"pod": "c"}, family=family)]


PODS = pods_of("ipv4")


def pol(ns, name, spec):
    return pm.parse_policy({"metadata": {"namespace": ns, "name": name}, "spec": spec})


CASES = {
    "deny-all-ingress": [pol("x", "deny", {"podSelector": {}})],
    "allow-named-and-ranges": [pol("x", "web", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}},
                              {"namespaceSelector": {"matchLabels": {"team": "red"}},
                               "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["c"]}]}}],
                     "ports": [{"port": "http"}, {"protocol": "UDP", "port": "dns"},
                               {"protocol": "SCTP", "port": 9000, "endPort": 9100}]}]})],
    "egress-ipblock-except": [pol("y", "out", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}},
                           {"ipBlock": {"cidr": "fd00:10:244::/56", "except": ["fd00:10:244:1::/64"]}}],
                    "ports": [{"protocol": "UDP"}]},
                   {"to": [{"namespaceSelector": {}}]}]})],
    "two-policies": [pol("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
                     pol("z", "allow-x", {"podSelector": {}, "ingress": [{"from": [
                         {"namespaceSelector": {"matchLabels": {pm.NAME_LABEL: "x"}}}]}]})],
}


def members_on(index, node, family="ipv4"):
    out = set()
    for p in pods_of(family):
        out |= rp.plan_pod_members(index, p, NSS[p.namespace], p.node == node)
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_table(case, family):
    """node1's table: ipv4 in <case>.nft, the others in <case>.<family>.nft."""
    index = rp.index_policies(CASES[case])
    cidrs = [NODE1_RANGES[v] for v in FAMILIES[family]]
    text = "\n".join(rp.render_table(rp.render_decls(index, cidrs), members_on(index, "node1", family))) + "\n"
    path = GOLDEN / (f"{case}.nft" if family == "ipv4" else f"{case}.{family}.nft")
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text()


def test_every_set_counter_and_chain_has_a_comment():
    for case in CASES.values():
        for d in rp.render_decls(rp.index_policies(case)).values():
            assert d.comment, d


def test_members_are_only_local_for_selection_but_everywhere_for_peers():
    index = rp.index_policies(CASES["allow-named-and-ranges"])
    pid = rp.policy_id("x/web")
    a, b = PODS[0], PODS[1]
    here = rp.plan_pod_members(index, a, NSS["x"], local=True)
    assert (f"{pid}_sel", a.ips[0]) in here and (rp.IN_ISOLATED, a.ips[0]) in here
    assert (rp.EG_ISOLATED, a.ips[0]) not in here                     # ingress-only policy
    assert ("np_tcp_http", "10.244.0.2 . tcp . 80") in here
    assert ("np_udp_dns", "10.244.0.2 . udp . 53") in here
    elsewhere = rp.plan_pod_members(index, a, NSS["x"], local=False)
    assert not any(s in (f"{pid}_sel", rp.IN_ISOLATED) for s, _ in elsewhere)
    # b is a peer (podSelector in the policy's namespace) wherever it runs
    assert (f"{pid}_i0", b.ips[0]) in rp.plan_pod_members(index, b, NSS["x"], local=False)
    # z/c: namespace team=red AND pod in (c); y/a: blue namespace, no
    assert (f"{pid}_i0", PODS[3].ips[0]) in rp.plan_pod_members(index, PODS[3], NSS["z"], local=False)
    assert not any(s.startswith(pid) for s, _ in rp.plan_pod_members(index, PODS[2], NSS["y"], local=True))


def test_pods_without_address_or_on_the_host_network_are_in_no_set():
    index = rp.index_policies(CASES["deny-all-ingress"])
    for p in (replace(PODS[0], ips=()), replace(PODS[0], host_network=True), replace(PODS[0], terminal=True)):
        assert rp.plan_pod_members(index, p, NSS["x"], True) == frozenset()


def test_a_label_change_is_a_few_element_changes_and_no_structure():
    policies = CASES["allow-named-and-ranges"] + CASES["two-policies"]
    index = rp.index_policies(policies)
    decls = rp.render_decls(index)
    b = PODS[1]
    before = rp.plan_pod_members(index, b, NSS["x"], local=True)
    after = rp.plan_pod_members(index, replace(b, labels=frozenset({("pod", "zz")})), NSS["x"], local=True)
    lines = rp.plan_update(decls, decls, before - after, after - before)
    assert lines == [f"delete element {rp.T} {rp.policy_id('x/web')}_i0 {{ 10.244.1.2 }}"]


def test_a_namespace_label_change_moves_its_pods_between_peer_sets():
    index = rp.index_policies(CASES["allow-named-and-ranges"])
    c = PODS[3]
    pid = rp.policy_id("x/web")
    blue = replace(NSS["z"], labels=frozenset({("team", "blue"), (pm.NAME_LABEL, "z")}))
    assert (f"{pid}_i0", c.ips[0]) in rp.plan_pod_members(index, c, NSS["z"], False)
    assert (f"{pid}_i0", c.ips[0]) not in rp.plan_pod_members(index, c, blue, False)


def test_changing_one_policy_rewrites_only_its_chains_and_dispatch_stays():
    a = pol("x", "a", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})
    b = pol("x", "b", {"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]})
    b2 = pol("x", "b", {"podSelector": {}, "ingress": [{"ports": [{"port": 82}]}]})
    old = rp.render_decls(rp.index_policies([a, b]))
    new = rp.render_decls(rp.index_policies([a, b2]))
    lines = rp.plan_update(old, new, [], [])
    pb = rp.policy_id("x/b")
    assert lines[0] == f"flush chain {rp.T} {pb}_in"
    assert all(f" {pb}_in " in line for line in lines[1:]) and len(lines) == 2


def test_removing_a_policy_orders_refill_before_deletes_and_skips_its_elements():
    a = pol("x", "a", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    old = rp.render_decls(rp.index_policies([a]))
    new = rp.render_decls(rp.index_policies([]))
    pa = rp.policy_id("x/a")
    lines = rp.plan_update(old, new, [(f"{pa}_i0", "10.244.0.2"), (rp.IN_ISOLATED, "10.244.0.2")], [])
    text = "\n".join(lines)
    assert f"flush chain {rp.T} {rp.CHAIN_INGRESS}" in lines
    assert lines.index(f"flush chain {rp.T} {rp.CHAIN_INGRESS}") < lines.index(f"delete chain {rp.T} {pa}_in")
    assert lines.index(f"delete chain {rp.T} {pa}_in") < lines.index(f"delete set {rp.T} {pa}_i0")
    assert f"delete element {rp.T} in_isolated {{ 10.244.0.2 }}" in lines
    assert f"{pa}_i0 {{" not in text                   # its set goes whole: no element deletes


@pytest.mark.parametrize("blocks,want", [
    ([pm.IPBlock("10.0.0.0/8", ("10.128.0.0/9",))], ("10.0.0.0/9",)),
    ([pm.IPBlock("10.0.0.0/30", ("10.0.0.1/32",))], ("10.0.0.0/32", "10.0.0.2/31")),
    ([pm.IPBlock("10.0.0.0/24"), pm.IPBlock("10.0.0.0/25")], ("10.0.0.0/24",)),   # overlaps merged
    ([pm.IPBlock("10.0.0.0/24", ("10.0.0.0/24",))], ()),
    ([pm.IPBlock("fd00::/64")], ()),
])
def test_ip_block_prefixes(blocks, want):
    assert rp.plan_ip_block_prefixes(blocks) == want


def test_ipv6_ip_block_prefixes_take_out_their_excepts():
    blocks = [pm.IPBlock("fd00::/62", ("fd00:0:0:1::/64",)), pm.IPBlock("10.0.0.0/8")]
    assert rp.plan_ip_block_prefixes(blocks, 6) == ("fd00::/64", "fd00:0:0:2::/63")
    assert rp.plan_ip_block_prefixes(blocks, 4) == ("10.0.0.0/8",)


def test_a_dual_stack_pod_is_in_each_set_once_per_family():
    index = rp.index_policies(CASES["allow-named-and-ranges"])
    pid = rp.policy_id("x/web")
    a, b = pods_of("dual")[:2]
    here = rp.plan_pod_members(index, a, NSS["x"], local=True)
    for name in (f"{pid}_sel", rp.IN_ISOLATED, rp.LOCAL_PODS):
        assert {(name, "10.244.0.2"), (f"{name}_v6", "fd00:10:244::2")} <= here
    assert {("np_tcp_http", "10.244.0.2 . tcp . 80"), ("np6_tcp_http", "fd00:10:244::2 . tcp . 80")} <= here
    assert rp.plan_pod_members(index, b, NSS["x"], local=False) == {
        (f"{pid}_i0", "10.244.1.2"), (f"{pid}_i0_v6", "fd00:10:244:1::2")}


def test_a_dual_stack_table_doubles_only_the_address_rules():
    index = rp.index_policies(CASES["allow-named-and-ranges"])
    v4 = rp.render_decls(index, "10.244.0.0/24")
    dual = rp.render_decls(index, "10.244.0.0/24,fd00:10:244::/64")
    assert {k for k, d in dual.items() if isinstance(d, rp.CounterDecl)} == \
        {k for k, d in v4.items() if isinstance(d, rp.CounterDecl)}         # one counter pair, shared
    assert {k for k in dual if k.startswith("chain")} == {k for k in v4 if k.startswith("chain")}
    pid = rp.policy_id("x/web")
    rules = [rp.render_rule(f"{pid}_in", r) for r in dual[f"chain {pid}_in"].rules]
    # named ports pair with the address family of their peer only; the sctp range is shared
    assert not any("ip saddr" in r and "ip6 daddr" in r or "ip6 saddr" in r and "ip daddr" in r for r in rules)
    v4_rules = [rp.render_rule(f"{pid}_in", r) for r in v4[f"chain {pid}_in"].rules]
    assert sum("9000-9100" in r for r in rules) == 2 and sum("9000-9100" in r for r in v4_rules) == 1


def test_names_are_stable_short_and_log_prefixes_round_trip():
    pid = rp.policy_id("some-namespace/some-very-long-policy-name-" + "x" * 200)
    assert pid == rp.policy_id("some-namespace/some-very-long-policy-name-" + "x" * 200)
    assert len(f"{pid}_in_drop") < 32 and pid.isalnum()
    assert rp.parse_log_prefix(rp.log_prefix("eg", pid)) == ("eg", pid)
    assert rp.parse_log_prefix("someone else ") is None
    assert rp.named_port_set("udp", "dns-tcp") == "np_udp_dns_tcp"
    assert rp.family_set(rp.named_port_set("tcp", "http"), 6) == "np6_tcp_http" != \
        rp.named_port_set("tcp", "http-v6")
    assert rp.family_set(f"{pid}_sel", 6) == f"{pid}_sel_v6" and rp.family_set(f"{pid}_sel", 4) == f"{pid}_sel"


def test_hostile_names_cannot_leave_their_comment():
    evil = pm.Policy('x"\n', 'p"; flush ruleset\nadd table ip evil', pm.Selector(), frozenset({pm.INGRESS}))
    lines = rp.render_table(rp.render_decls(rp.index_policies([evil])), [])
    assert not any("\n" in line for line in lines)
    for line in lines:
        if "comment" in line:
            inner = line.split("comment ", 1)[1]
            assert inner.count('"') == 2, line
