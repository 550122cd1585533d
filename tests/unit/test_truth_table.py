"""The truth-table model (lab/truth_table.py) against hand-written upstream cases: the e2e netpol
suite's and Cyclonus's x/y/z world, each case's expected table written out by hand."""
from __future__ import annotations

import pytest
from kubeweft.lab import matrix
from kubeweft.lab.truth_table import (
    Endpoint,
    allowed,
    diff_tables,
    expected_table,
    policy_types,
    selector_matches,
)

NSS, PODS = ("x", "y", "z"), ("a", "b", "c")
PORTS = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"))


def world() -> dict[str, Endpoint]:
    out = {}
    for i, ns in enumerate(NSS):
        for j, pod in enumerate(PODS):
            doc = matrix.xyz_pod_doc(ns, pod, node=f"node{j + 1}")
            doc["status"] = {"podIP": f"10.244.{j}.{10 + i}"}
            out[f"{ns}/{pod}"] = matrix.xyz_endpoint(doc)
    out["node:node1"] = Endpoint("node:node1", "192.168.56.11", node="node1")
    out["external"] = Endpoint("external", "203.0.113.2")
    return out


W = world()
ALL_PODS = [W[f"{n}/{p}"] for n in NSS for p in PODS]


def netpol(ns: str, spec: dict, name: str = "p") -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def reach(policies, port=80, proto="TCP", sources=None) -> set[tuple[str, str]]:
    """The (from, to) pod pairs allowed on one port, a pod to itself left out (loopback, always
    allowed: test_loopback_always_passes)."""
    srcs = sources or ALL_PODS
    return {(s.key, d.key) for s in srcs for d in ALL_PODS
            if s.key != d.key and allowed(policies, s, d, port, proto)}


EVERY = {(s.key, d.key) for s in ALL_PODS for d in ALL_PODS if s.key != d.key}


def into(dest: str, sources) -> set[tuple[str, str]]:
    return {(s, dest) for s in sources if s != dest}


ALL_KEYS = [p.key for p in ALL_PODS]


# --- policyTypes and isolation -------------------------------------------------------------------
def test_no_policy_allows_everything():
    assert reach([]) == EVERY


def test_loopback_always_passes():
    deny = [netpol("x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})]
    assert allowed(deny, W["x/a"], W["x/a"], 80, "TCP")
    assert not allowed(deny, W["x/a"], W["x/b"], 80, "TCP")


def test_policy_types_default():
    assert policy_types(netpol("x", {"podSelector": {}})) == {"Ingress"}
    assert policy_types(netpol("x", {"podSelector": {}, "egress": [{}]})) == {"Ingress", "Egress"}
    assert policy_types(netpol("x", {"podSelector": {}, "egress": []})) == {"Ingress"}
    assert policy_types(netpol("x", {"podSelector": {}, "policyTypes": ["Egress"]})) == {"Egress"}


def test_deny_all_ingress_in_x_isolates_only_x_and_only_ingress():
    pols = [netpol("x", {"podSelector": {}})]
    assert reach(pols) == {pair for pair in EVERY if not pair[1].startswith("x/")}
    # egress from x pods is untouched: x/a -> y/b still passes
    assert ("x/a", "y/b") in reach(pols)


def test_deny_all_egress_only():
    pols = [netpol("x", {"podSelector": {}, "policyTypes": ["Egress"]})]
    assert reach(pols) == {pair for pair in EVERY if not pair[0].startswith("x/")}


def test_ingress_only_policy_with_egress_rules_listed_ignores_them():
    # policyTypes [Ingress] given explicitly: the egress rules do not isolate egress
    pols = [netpol("x", {"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{"to": []}]})]
    assert ("x/a", "y/a") in reach(pols)


def test_allow_all_ingress_rule_undoes_deny():
    pols = [netpol("x", {"podSelector": {}}), netpol("x", {"podSelector": {}, "ingress": [{}]}, "all")]
    assert reach(pols) == EVERY


def test_pod_selector_selects_one_pod():
    pols = [netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}}})]
    assert reach(pols) == EVERY - into("x/a", ALL_KEYS)


# --- peers ---------------------------------------------------------------------------------------
def test_allow_from_same_namespace_pod_selector():
    pols = [netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}},
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})]
    assert {p for p in reach(pols) if p[1] == "x/a"} == {("x/b", "x/a")}


def test_allow_from_namespace():
    pols = [netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}},
                         "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})]
    assert {p for p in reach(pols) if p[1] == "x/a"} == into("x/a", ["y/a", "y/b", "y/c"])


def test_empty_namespace_selector_means_all_namespaces():
    pols = [netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}},
                         "ingress": [{"from": [{"namespaceSelector": {}}]}]})]
    assert {p for p in reach(pols) if p[1] == "x/a"} == into("x/a", ALL_KEYS)
    # but not non-pods
    assert not allowed(pols, W["external"], W["x/a"], 80, "TCP")


def test_empty_pod_selector_peer_means_own_namespace():
    pols = [netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}},
                         "ingress": [{"from": [{"podSelector": {}}]}]})]
    assert {p for p in reach(pols) if p[1] == "x/a"} == into("x/a", ["x/a", "x/b", "x/c"])


def test_and_of_selectors_in_one_peer():
    pols = [netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}},
                         "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                                "podSelector": {"matchLabels": {"pod": "c"}}}]}]})]
    assert {p for p in reach(pols) if p[1] == "x/a"} == {("y/c", "x/a")}


def test_or_of_selectors_in_two_peers():
    pols = [netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}},
                         "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                                               {"podSelector": {"matchLabels": {"pod": "c"}}}]}]})]
    assert {p for p in reach(pols) if p[1] == "x/a"} == into("x/a", ["y/a", "y/b", "y/c", "x/c"])


def test_match_expressions():
    assert selector_matches({"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]}, {})
    assert not selector_matches({"matchExpressions": [{"key": "pod", "operator": "Exists"}]}, {})
    pols = [netpol("x", {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In",
                                                               "values": ["a", "b"]}]},
                         "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                             {"key": "ns", "operator": "NotIn", "values": ["x", "y"]}]}}]}]})]
    r = reach(pols)
    assert {p for p in r if p[1] == "x/a"} == into("x/a", ["z/a", "z/b", "z/c"])
    assert {p for p in r if p[1] == "x/c"} == into("x/c", ALL_KEYS)


def test_union_of_two_policies_any_order():
    p1 = netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}},
                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}, "p1")
    p2 = netpol("x", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]},
                "p2")
    r = reach([p1, p2])
    assert r == reach([p2, p1])
    assert {p for p in r if p[1] == "x/a"} == into("x/a", ["x/b", "z/a", "z/b", "z/c"])
    assert {p for p in r if p[1] == "x/b"} == into("x/b", ["z/a", "z/b", "z/c"])


# --- ports ---------------------------------------------------------------------------------------
def test_port_number_and_protocol_apart():
    pols = [netpol("x", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})]
    assert ("y/a", "x/a") in reach(pols, 80, "TCP")
    assert ("y/a", "x/a") not in reach(pols, 81, "TCP")
    assert ("y/a", "x/a") not in reach(pols, 80, "UDP")   # protocol defaults to TCP


def test_protocol_only():
    pols = [netpol("x", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]})]
    assert ("y/a", "x/a") in reach(pols, 81, "UDP")
    assert ("y/a", "x/a") in reach(pols, 80, "UDP")
    assert ("y/a", "x/a") not in reach(pols, 80, "TCP")


def test_named_port_resolves_name_and_protocol_on_the_destination():
    pols = [netpol("x", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]})]
    assert ("y/a", "x/a") in reach(pols, 81, "UDP")
    assert ("y/a", "x/a") not in reach(pols, 81, "TCP")
    assert ("y/a", "x/a") not in reach(pols, 80, "UDP")
    # the name with the wrong protocol (TCP by default) matches nothing
    wrong = [netpol("x", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-udp"}]}]})]
    assert all(("y/a", "x/a") not in reach(wrong, port, proto) for port, proto in PORTS)


def test_named_port_differs_per_destination():
    a = Endpoint("x/a", "10.0.0.1", "x", {"pod": "a"}, {"ns": "x"}, "n1", (("web", 80, "TCP"),))
    b = Endpoint("x/b", "10.0.0.2", "x", {"pod": "b"}, {"ns": "x"}, "n1", (("web", 81, "TCP"),))
    pols = [netpol("x", {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]})]
    assert allowed(pols, W["y/a"], a, 80, "TCP") and not allowed(pols, W["y/a"], a, 81, "TCP")
    assert allowed(pols, W["y/a"], b, 81, "TCP") and not allowed(pols, W["y/a"], b, 80, "TCP")


def test_end_port_range():
    pols = [netpol("x", {"podSelector": {}, "ingress": [{"ports": [{"port": 81, "endPort": 90}]}]})]
    assert ("y/a", "x/a") in reach(pols, 81, "TCP")
    assert ("y/a", "x/a") not in reach(pols, 80, "TCP")
    assert ("y/a", "x/a") not in reach(pols, 81, "UDP")


def test_ports_and_peers_are_anded_within_a_rule_and_ored_across_rules():
    pols = [netpol("x", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 80}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": 81}]}]})]
    assert {p for p in reach(pols, 80) if p[1] == "x/a"} == into("x/a", ["y/a", "y/b", "y/c"])
    assert {p for p in reach(pols, 81) if p[1] == "x/a"} == into("x/a", ["z/a", "z/b", "z/c"])


# --- ipBlock, egress, node, external -------------------------------------------------------------
def test_ip_block_with_except():
    pols = [netpol("x", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}}]}]})]
    r = reach(pols)
    # pods b (node2, 10.244.1.x) are excepted
    assert {p[0] for p in r if p[1] == "x/a"} == {k for k in ALL_KEYS if not k.endswith("/b") and k != "x/a"}
    assert not allowed(pols, W["external"], W["x/a"], 80, "TCP")
    ext = [netpol("x", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]})]
    assert allowed(ext, W["external"], W["x/a"], 80, "TCP")
    assert not allowed(ext, W["y/a"], W["x/a"], 80, "TCP")
    exc = [netpol("x", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "203.0.113.0/24", "except": ["203.0.113.2/32"]}}]}]})]
    assert not allowed(exc, W["external"], W["x/a"], 80, "TCP")


def test_egress_to_namespace_and_both_directions_needed():
    eg = netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}},
                      "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})
    assert policy_types(eg) == {"Ingress", "Egress"}
    r = reach([eg])
    assert {p for p in r if p[0] == "x/a"} == {("x/a", d) for d in ["y/a", "y/b", "y/c"]}
    # the same policy isolates x/a's ingress with no ingress rule: nobody reaches it
    assert not {p for p in r if p[1] == "x/a"}
    deny_y = netpol("y", {"podSelector": {}})
    assert not {p for p in reach([eg, deny_y]) if p[0] == "x/a"}


def test_egress_named_port_resolves_on_the_destination():
    eg = netpol("x", {"podSelector": {}, "policyTypes": ["Egress"],
                      "egress": [{"ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]})
    assert ("x/a", "y/b") in reach([eg], 80, "UDP")
    assert ("x/a", "y/b") not in reach([eg], 80, "TCP")
    assert not allowed([eg], W["x/a"], W["external"], 80, "UDP")   # no pod, no name


def test_own_node_always_passes_other_sources_do_not():
    deny = [netpol("x", {"podSelector": {}})]
    assert allowed(deny, W["node:node1"], W["x/a"], 80, "TCP")          # x/a on node1
    assert not allowed(deny, W["node:node1"], W["x/b"], 80, "TCP")      # x/b on node2
    assert not allowed(deny, W["external"], W["x/a"], 80, "TCP")


def test_expected_table_and_diff():
    deny = [netpol("x", {"podSelector": {"matchLabels": {"pod": "a"}}})]
    t = expected_table(deny, [W["y/a"]], [W["x/a"], W["x/b"]], [(80, "TCP")])
    assert t == {("y/a", "x/a", 80, "TCP"): False, ("y/a", "x/b", 80, "TCP"): True}
    actual = dict(t)
    actual[("y/a", "x/a", 80, "TCP")] = True
    assert diff_tables(t, actual) == ["y/a -> x/a 80/TCP: expected deny, got allow"]
    assert diff_tables(t, t) == []


@pytest.mark.parametrize("op", ["In", "NotIn"])
def test_unknown_keys_in_expressions(op):
    sel = {"matchExpressions": [{"key": "missing", "operator": op, "values": ["v"]}]}
    assert selector_matches(sel, {"pod": "a"}) is (op == "NotIn")


# --- the world and its table ---------------------------------------------------------------------
def test_world_docs_have_the_upstream_shape():
    docs = matrix.xyz_world_docs(["node1", "node2", "node3"])
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Namespace") == 3 and kinds.count("Pod") == 9 and kinds.count("Service") == 9
    ns = next(d for d in docs if d["kind"] == "Namespace" and d["metadata"]["name"] == "y")
    assert ns["metadata"]["labels"] == {"ns": "y", "kubernetes.io/metadata.name": "y"}
    pods = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "Pod"}
    assert {d["spec"]["nodeName"] for d in pods.values()} == {"node1", "node2", "node3"}
    ports = pods[("z", "c")]["spec"]["containers"][0]["ports"]
    assert {(p["name"], p["containerPort"], p["protocol"]) for p in ports} == {
        ("serve-80-tcp", 80, "TCP"), ("serve-81-tcp", 81, "TCP"),
        ("serve-80-udp", 80, "UDP"), ("serve-81-udp", 81, "UDP")}
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["namespace"] == "z"
               and d["metadata"]["name"] == "s-c")
    assert svc["spec"]["selector"] == {"pod": "c"} and len(svc["spec"]["ports"]) == 4


def _result(src, dst, port, proto, outcome):
    return {"from": src, "to": dst, "port": port, "proto": proto, "outcome": outcome, "pod": dst}


def test_world_cells_mark_mismatches():
    results = [_result("x/a", "y/a", 80, "TCP", "connected"), _result("x/a", "y/a", 81, "TCP", "timeout"),
               _result("x/a", "y/b", 80, "TCP", "connected"), _result("x/a", "y/b", 81, "TCP", "timeout")]
    expected = {("x/a", "y/a", 80, "TCP"): True, ("x/a", "y/a", 81, "TCP"): False,
                ("x/a", "y/b", 80, "TCP"): False, ("x/a", "y/b", 81, "TCP"): True}
    cells = matrix.world_cells(results, expected)
    assert cells == {("x/a", ("y/a", "T80")): "allow", ("x/a", ("y/a", "T81")): "deny",
                     ("x/a", ("y/b", "T80")): "ALLOW", ("x/a", ("y/b", "T81")): "DENY"}
    lines = matrix.render_world(results, expected, "service")
    assert "ClusterIP" in lines[0] and lines[-1] == "2/4 as expected (2 mismatches)"
    row = next(line for line in lines if line.startswith("x/a "))
    assert row.split()[1:] == ["✓", "·", "X", "x"]


def test_parse_policy_docs_takes_policies_from_lists_and_streams():
    pol = netpol("x", {"podSelector": {}})
    docs = [None, {"kind": "Namespace"}, pol, {"kind": "List", "items": [pol, {"kind": "Pod"}]}]
    assert matrix.parse_policy_docs(docs) == [pol, pol]


def test_sctp_is_a_protocol_of_its_own():
    pols = [netpol("x", {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]})]
    assert allowed(pols, W["y/a"], W["x/a"], 80, "SCTP")
    assert not allowed(pols, W["y/a"], W["x/a"], 80, "TCP")
    assert not allowed(pols, W["y/a"], W["x/a"], 80, "UDP")


def test_cli_matrix_world_flags():
    from kubeweft.lab.cli import _parser
    args = _parser().parse_args(["--name", "t1", "matrix", "--world", "xyz", "--via", "service",
                                 "--expect", "p.yaml"])
    assert (args.world, args.via, args.expect) == ("xyz", "service", "p.yaml")
    args = _parser().parse_args(["matrix"])
    assert (args.world, args.via, args.expect) == (None, "pod", None)
