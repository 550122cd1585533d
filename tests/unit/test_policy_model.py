"""NetworkPolicy, Pod and Namespace JSON -> the model: defaulting, selectors, and objects that
must be refused whole (ModelError) rather than half-applied."""
from __future__ import annotations

import pytest
from kubeweft.proxy import policy_model as pm


def policy(spec: dict, ns: str = "x", name: str = "p") -> dict:
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


# ---- policyTypes defaulting ----------------------------------------------------------------------

def test_policy_types_default_to_ingress_only_without_egress_rules():
    p = pm.parse_policy(policy({"podSelector": {}}))
    assert p.types == {pm.INGRESS}
    assert p.ingress == () and p.egress == ()


def test_policy_types_default_to_both_with_egress_rules():
    p = pm.parse_policy(policy({"podSelector": {}, "egress": [{}]}))
    assert p.types == {pm.INGRESS, pm.EGRESS}
    assert p.egress == (pm.Rule(),)


def test_listed_policy_types_win_and_drop_the_other_directions_rules():
    p = pm.parse_policy(policy({"podSelector": {}, "ingress": [{}], "egress": [{}], "policyTypes": ["Egress"]}))
    assert p.types == {pm.EGRESS}
    assert p.ingress == () and p.egress == (pm.Rule(),)


def test_empty_ingress_list_isolates_with_no_rule():
    p = pm.parse_policy(policy({"podSelector": {}, "ingress": []}))
    assert p.types == {pm.INGRESS} and p.ingress == ()


# ---- selectors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("expr,labels,want", [
    ({"key": "a", "operator": "In", "values": ["1", "2"]}, {"a": "2"}, True),
    ({"key": "a", "operator": "In", "values": ["1"]}, {}, False),
    ({"key": "a", "operator": "NotIn", "values": ["1"]}, {}, True),          # absent key matches NotIn
    ({"key": "a", "operator": "NotIn", "values": ["1"]}, {"a": "1"}, False),
    ({"key": "a", "operator": "Exists"}, {"a": ""}, True),
    ({"key": "a", "operator": "DoesNotExist"}, {"a": "1"}, False),
])
def test_match_expressions(expr, labels, want):
    sel = pm.parse_selector({"matchExpressions": [expr]})
    assert sel.matches(frozenset(labels.items())) is want


def test_match_labels_and_expressions_are_anded_and_empty_matches_all():
    sel = pm.parse_selector({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]})
    assert sel.matches(frozenset({("a", "1"), ("b", "x")}))
    assert not sel.matches(frozenset({("a", "1")}))
    assert pm.parse_selector({}).empty and pm.parse_selector(None).matches(frozenset())


def test_peers_keep_absent_and_empty_selectors_apart():
    p = pm.parse_policy(policy({"podSelector": {}, "ingress": [{"from": [
        {"podSelector": {}}, {"namespaceSelector": {}}, {"podSelector": {}, "namespaceSelector": {"matchLabels": {"n": "y"}}},
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]}))
    a, b, c, d = p.ingress[0].peers
    assert a.pod_selector == pm.Selector() and a.namespace_selector is None
    assert b.pod_selector is None and b.namespace_selector == pm.Selector()
    assert c.pod_selector is not None and c.namespace_selector is not None
    assert d.ip_block == pm.IPBlock("10.0.0.0/8", ("10.1.0.0/16",))


# ---- ports -------------------------------------------------------------------------------------

def test_ports_number_name_range_and_protocol_only():
    p = pm.parse_policy(policy({"podSelector": {}, "ingress": [{"ports": [
        {"port": 80}, {"protocol": "UDP", "port": "dns"}, {"port": 8000, "endPort": 8080, "protocol": "SCTP"},
        {"protocol": "UDP"}, {"port": "443"}]}]}))
    assert p.ingress[0].ports == (pm.PortSpec("tcp", 80), pm.PortSpec("udp", "dns"),
                                  pm.PortSpec("sctp", 8000, 8080), pm.PortSpec("udp"), pm.PortSpec("tcp", 443))


# ---- hostile or broken objects: refused whole ------------------------------------------------

@pytest.mark.parametrize("spec", [
    {"podSelector": "all"},
    {"podSelector": {}, "ingress": {"from": []}},
    {"podSelector": {}, "ingress": [{"from": [{}]}]},
    {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
    {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]},
    {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
    {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["1"]}]}},
    {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
    {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["1"]}]}},
    {"podSelector": {"matchLabels": {"a": 1}}},
    {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]},
    {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]},
    {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]},
    {"podSelector": {}, "ingress": [{"ports": [{"port": True}]}]},
    {"podSelector": {}, "ingress": [{"ports": [{"port": "Bad_Name"}]}]},
    {"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
    {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
    {"podSelector": {}, "policyTypes": ["Sideways"]},
    {"podSelector": {}, "ingress": [{}] * (pm.MAX_ITEMS + 1)},
])
def test_broken_policies_are_refused(spec):
    with pytest.raises(pm.ModelError):
        pm.parse_policy(policy(spec))


def test_a_policy_needs_a_namespace_and_a_name():
    with pytest.raises(pm.ModelError):
        pm.parse_policy({"metadata": {"name": "p"}, "spec": {}})
    with pytest.raises(pm.ModelError):
        pm.parse_policy({"metadata": {"namespace": "x"}, "spec": {}})
    with pytest.raises(pm.ModelError):
        pm.parse_policy("not an object")


# ---- pods and namespaces -----------------------------------------------------------------------

def test_pod_keeps_named_ports_ip_node_and_flags():
    pod = pm.parse_pod({
        "metadata": {"namespace": "x", "name": "a", "labels": {"app": "web"}},
        "spec": {"nodeName": "node1", "containers": [
            {"ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 81},
                       {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                       {"name": "odd", "containerPort": "x"}]}]},
        "status": {"podIP": "10.244.1.5", "phase": "Running"}})
    assert pod.ips == ("10.244.1.5",) and pod.node == "node1" and pod.labels == {("app", "web")}
    assert pod.ports == (pm.ContainerPort("http", "tcp", 8080), pm.ContainerPort("dns", "udp", 53))
    assert not pod.host_network and not pod.terminal


def test_pod_without_ip_or_finished():
    assert pm.parse_pod({"metadata": {"namespace": "x", "name": "a"}}).ips == ()
    assert pm.parse_pod({"metadata": {"namespace": "x", "name": "a"}, "status": {"phase": "Failed"}}).terminal
    assert pm.parse_pod({"metadata": {"namespace": "x", "name": "a"}, "spec": {"hostNetwork": True}}).host_network


def test_namespace_carries_its_name_label():
    ns = pm.parse_namespace({"metadata": {"name": "y", "labels": {"team": "a"}}})
    assert ns.labels == {("team", "a"), (pm.NAME_LABEL, "y")}


def test_pod_ips_one_per_family_primary_first_in_canonical_text():
    def ips(status):
        return pm.parse_pod({"metadata": {"namespace": "x", "name": "a"}, "status": status}).ips
    assert ips({"podIP": "fd00:10:244:0:0::5"}) == ("fd00:10:244::5",)
    assert ips({"podIP": "fd00::5", "podIPs": [{"ip": "fd00::5"}, {"ip": "10.244.0.5"}]}) == ("fd00::5", "10.244.0.5")
    assert ips({"podIPs": [{"ip": "10.244.0.5"}, {"ip": "10.244.0.6"}, {"ip": "junk"}, {"ip": "FD00::6"}]}) \
        == ("10.244.0.5", "fd00::6")
    assert ips({"podIPs": [{"ip": 5}, {"ip": "10.244.0.7"}]}) == ("10.244.0.7",)      # an odd entry is skipped
    with pytest.raises(pm.ModelError):
        ips({"podIPs": "10.244.0.7"})                                               # not a list: the pod is
