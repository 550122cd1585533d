"""render_services + diff_services: golden nft text of whole syncs for each feature, and the
behaviours the datapath relies on (endpoint selection, scopes, rejects, masquerade sets).

Each golden file is what a fresh agent sends in its first transaction (render_base + the full
diff from nothing). The lab (tests/integration/test_service_proxy_basic.py) loads such text into
nft for real. Regenerate after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render_services.py
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from kubeweft.proxy import diff_services as d
from kubeweft.proxy import render_services as r
from kubeweft.proxy import table_readback as tr
from kubeweft.proxy.model import Endpoint, EndpointSlice, parse_endpoint_slice, parse_service
from kubeweft.proxy.nft_commands import nft_lines

GOLDEN = Path(__file__).parent / "golden" / "services"
CTX = r.NodeContext("node1", zone="zone-a", cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")


def lines(commands, family: int = 4) -> list[str]:
    """The nft text of typed commands for the service table of one IP family."""
    return nft_lines(commands, r.SERVICE_TABLES[family])


def svc(name: str, spec: dict, status: dict | None = None, labels: dict | None = None):
    obj = {"metadata": {"namespace": "ns", "name": name, "labels": labels or {}},
           "spec": {"clusterIP": spec.pop("clusterIP", "10.96.0.10"), **spec}}
    if status:
        obj["status"] = status
    return parse_service(obj)


def eps(name: str, service: str, ports: list[dict], endpoints: list[dict]) -> EndpointSlice:
    return parse_endpoint_slice({"metadata": {"namespace": "ns", "name": name,
                                              "labels": {"kubernetes.io/service-name": service}},
                                 "ports": ports, "endpoints": endpoints})


def ep(ip: str, node: str = "node2", **cond) -> dict:
    out = {"addresses": [ip], "nodeName": node, "conditions": {"ready": True, **cond}}
    return out


HTTP = [{"name": "http", "port": 8080}]
TWO = [ep("10.244.1.5", "node1"), ep("10.244.2.5", "node2")]

CASES = {
    "clusterip": ([svc("web", {"ports": [{"name": "http", "port": 80}]})],
                  [eps("web-1", "web", HTTP, TWO)]),
    "multiport_protocols": ([svc("dns", {"ports": [{"name": "dns-tcp", "port": 53},
                                                   {"name": "dns", "port": 53, "protocol": "UDP"},
                                                   {"name": "s", "port": 9, "protocol": "SCTP"}]})],
                            [eps("dns-1", "dns", [{"name": "dns-tcp", "port": 5353},
                                                  {"name": "dns", "port": 5353, "protocol": "UDP"},
                                                  {"name": "s", "port": 9999, "protocol": "SCTP"}], TWO)]),
    "no_endpoints": ([svc("empty", {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]})],
                     []),
    "nodeport_cluster": ([svc("np", {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]})],
                         [eps("np-1", "np", HTTP, TWO)]),
    "loadbalancer_local": ([svc("lb", {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                                       "healthCheckNodePort": 31000, "externalIPs": ["192.168.56.200"],
                                       "loadBalancerSourceRanges": ["203.0.113.0/24", "198.18.0.7/32"],
                                       "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
                                   {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}})],
                           [eps("lb-1", "lb", HTTP, TWO)]),
    "local_without_local_endpoints": ([svc("lb", {"type": "NodePort", "externalTrafficPolicy": "Local",
                                                  "internalTrafficPolicy": "Local",
                                                  "ports": [{"name": "http", "port": 80, "nodePort": 30080}]})],
                                      [eps("lb-1", "lb", HTTP, [ep("10.244.2.5", "node2")])]),
    "affinity": ([svc("sticky", {"sessionAffinity": "ClientIP",
                                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}},
                                 "ports": [{"name": "http", "port": 80}]})],
                 [eps("sticky-1", "sticky", HTTP, TWO)]),
    "terminating_fallback": ([svc("term", {"ports": [{"name": "http", "port": 80}]})],
                             [eps("term-1", "term", HTTP,
                                  [ep("10.244.1.5", "node1", ready=False, serving=True, terminating=True),
                                   ep("10.244.2.5", "node2", ready=False, serving=False, terminating=True)])]),
    # source hashing and round robin (proxy/scheduler.py), each with its own chain over the backends
    "schedulers": ([dataclasses.replace(svc("hashed", {"ports": [{"name": "http", "port": 80}]}), scheduler="sh"),
                    dataclasses.replace(svc("rotated", {"clusterIP": "10.96.0.11", "ports": [{"name": "http", "port": 80}]}),
                                        scheduler="rr")],
                   [eps("hashed-1", "hashed", HTTP, TWO), eps("rotated-1", "rotated", HTTP, TWO)]),
    "topology_hints": ([svc("topo", {"ports": [{"name": "http", "port": 80}]})],
                       [eps("topo-1", "topo", HTTP,
                            [{**ep("10.244.1.5", "node1"), "hints": {"forZones": [{"name": "zone-a"}]}},
                             {**ep("10.244.2.5", "node2"), "hints": {"forZones": [{"name": "zone-b"}]}},
                             {**ep("10.244.3.5", "node3"), "hints": {"forZones": [{"name": "zone-a"}]}}])]),
}


# the same cases in an IPv6 cluster: every address mapped to its IPv6 counterpart
CTX6 = r.NodeContext("node1", zone="zone-a", cluster_cidr="fd00:10:244::/56", service_cidr="fd00:10:96::/112",
                     family=6)
V6 = {"10.96.0.10": "fd00:10:96::a", "10.96.0.11": "fd00:10:96::b", "10.244.1.5": "fd00:10:244:1::5", "10.244.2.5": "fd00:10:244:2::5",
      "10.244.3.5": "fd00:10:244:3::5", "192.168.56.200": "2001:db8:56::c8", "198.51.100.1": "2001:db8:100::1",
      "203.0.113.0/24": "2001:db8:113::/64", "198.18.0.7/32": "2001:db8:18::7/128"}


def in_ipv6(services, slices):
    """The case with IPv6 addresses only (a single-stack IPv6 cluster's objects)."""
    def v6(items):
        return tuple(V6[a] for a in items)
    return ([dataclasses.replace(s, cluster_ips=v6(s.cluster_ips), external_ips=v6(s.external_ips),
                                 lb_ips=v6(s.lb_ips), lb_source_ranges=v6(s.lb_source_ranges)) for s in services],
            [dataclasses.replace(sl, family=6, endpoints=tuple(dataclasses.replace(e, ip=V6[e.ip])
                                                               for e in sl.endpoints)) for sl in slices])


def case_of(case: str, family: int):
    """(services, slices, ctx, golden file) of a case in one IP family."""
    services, slices = CASES[case]
    if family == 4:
        return services, slices, CTX, GOLDEN / f"{case}.nft"
    return *in_ipv6(services, slices), CTX6, GOLDEN / f"ip6-{case}.nft"


def full_text(services, slices, ctx=CTX) -> str:
    agg = r.Aggregate()
    for s in services:
        agg.put(s.key, r.render_service(s, [x for x in slices if x.service_key == s.key], ctx))
    diff, _ = d.diff_full(d.empty_applied(), agg)
    return "\n".join(lines(r.render_base(ctx) + diff, ctx.family)) + "\n"


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case, family):
    services, slices, ctx, path = case_of(case, family)
    text = full_text(services, slices, ctx)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs (UPDATE_GOLDEN=1 after an intended change)"


def state(services, slices, ctx=CTX) -> r.Desired:
    return r.render_state({s.key: s for s in services},
                          {s.key: [x for x in slices if x.service_key == s.key] for s in services}, ctx)


def test_clusterip_spreads_over_both_endpoints_and_keeps_pod_source():
    st = state(*CASES["clusterip"])
    assert st.maps["service-ips"] == {"10.96.0.10 . tcp . 80": "goto lb-tcp-2"}
    assert st.maps["backends-tcp-2"] == {"10.96.0.10 . 80 . 0": "10.244.1.5 . 8080",
                                         "10.96.0.10 . 80 . 1": "10.244.2.5 . 8080"}
    assert st.sets["cluster-ips"] == {"10.96.0.10"}
    assert st.sets["external-masq"] == frozenset()
    assert st.sets["hairpin"] == {"10.244.1.5 . 10.244.1.5"}           # only this node's endpoint


def test_same_port_two_protocols_kept_apart():
    st = state(*CASES["multiport_protocols"])
    assert st.maps["service-ips"]["10.96.0.10 . udp . 53"] == "goto lb-udp-2"
    assert st.maps["service-ips"]["10.96.0.10 . tcp . 53"] == "goto lb-tcp-2"
    assert st.maps["service-ips"]["10.96.0.10 . sctp . 9"] == "goto lb-sctp-2"
    assert st.maps["backends-udp-2"]["10.96.0.10 . 53 . 0"] == "10.244.1.5 . 5353"


def test_no_endpoints_rejects_clusterip_and_nodeport():
    st = state(*CASES["no_endpoints"])
    assert st.sets["no-endpoint-services"] == {"10.96.0.10 . tcp . 80"}
    assert st.sets["no-endpoint-nodeports"] == {"tcp . 30080"}
    assert not st.maps["service-ips"] and not st.maps["nodeports"] and not st.chains


def test_external_traffic_policy_local():
    st = state(*CASES["loadbalancer_local"])
    # pods and nodes: every endpoint; external sources: the local one only, client kept
    assert st.maps["service-ips"]["198.51.100.1 . tcp . 80"] == "goto lb-tcp-2"
    assert st.maps["service-ips-external"]["198.51.100.1 . tcp . 80"] == "goto lbx-tcp-1"
    assert st.maps["backends-external-tcp-1"] == {"192.168.56.200 . 80 . 0": "10.244.1.5 . 8080",
                                                  "198.51.100.1 . 80 . 0": "10.244.1.5 . 8080"}
    assert st.maps["nodeports-external"]["tcp . 30080"] == "goto npx-tcp-1"
    assert st.sets["external-masq"] == frozenset() and st.sets["nodeport-masq"] == frozenset()
    assert st.sets["firewall-keys"] == {"198.51.100.1 . tcp . 80"}       # not the externalIP
    assert st.sets["firewall-allow"] == {"198.51.100.1 . tcp . 80 . 203.0.113.0/24",
                                         "198.51.100.1 . tcp . 80 . 198.18.0.7"}
    assert st.health == {("ns", "lb"): (31000, 1)}


def test_local_policies_without_local_endpoints_drop():
    st = state(*CASES["local_without_local_endpoints"])
    assert st.maps["service-ips"]["10.96.0.10 . tcp . 80"] == "drop"     # internalTrafficPolicy Local
    assert st.maps["nodeports-external"]["tcp . 30080"] == "drop"
    assert st.maps["nodeports"]["tcp . 30080"] == "goto np-tcp-1"       # pods and nodes still reach it


def test_external_traffic_policy_cluster_masquerades():
    st = state(*CASES["nodeport_cluster"])
    assert st.sets["nodeport-masq"] == {"tcp . 30080"}
    assert st.maps["nodeport-backends-tcp-2"]["30080 . 1"] == "10.244.2.5 . 8080"


def test_affinity_chains():
    st = state(*CASES["affinity"])
    (target,) = st.maps["service-ips"].values()
    name = target.split()[1]
    assert name.startswith("aff-") and len(st.dynsets) == 2
    rules = st.chains[name].rules
    assert rules[-1].startswith("numgen random mod 2 vmap")
    assert all("timeout 30s" in decl for decl in st.dynsets.values())


def test_terminating_fallback_uses_serving_terminating_only():
    st = state(*CASES["terminating_fallback"])
    assert st.maps["backends-tcp-1"] == {"10.96.0.10 . 80 . 0": "10.244.1.5 . 8080"}


def test_topology_hints_pick_this_zone():
    st = state(*CASES["topology_hints"])
    assert sorted(st.maps["backends-tcp-2"].values()) == ["10.244.1.5 . 8080", "10.244.3.5 . 8080"]
    other = state(*CASES["topology_hints"], ctx=r.NodeContext("node9", zone="zone-c"))
    assert len(other.maps["backends-tcp-3"]) == 3                     # no endpoint for zone-c: all


def test_node_hints_first():
    eps_ = (Endpoint("10.0.0.1", node_name="node1", hint_nodes=("node1",), hint_zones=("zone-a",)),
            Endpoint("10.0.0.2", node_name="node2", hint_nodes=("node2",), hint_zones=("zone-a",)))
    cluster, local = r.select_endpoints(list(eps_), CTX)
    assert [e.ip for e in cluster] == ["10.0.0.1"] and [e.ip for e in local] == ["10.0.0.1"]


def test_node_hints_fall_back_to_zone_hints_as_kube_proxy_does():
    def pick(*eps_, node="node1", zone="zone-a"):
        return [e.ip for e in r.select_endpoints(list(eps_), r.NodeContext(node, zone=zone))[0]]
    a = Endpoint("10.0.0.1", node_name="node1", hint_nodes=("node1",), hint_zones=("zone-a",))
    b = Endpoint("10.0.0.2", node_name="node2", hint_nodes=("node2",), hint_zones=("zone-b",))
    c = Endpoint("10.0.0.3", node_name="node3", hint_nodes=("node3",), hint_zones=("zone-a",))
    assert pick(a, b, c) == ["10.0.0.1"]                                   # PreferSameNode
    assert pick(b, c, node="node9") == ["10.0.0.3"]                        # no node hint here: zone
    assert pick(b, c, node="node9", zone="zone-c") == ["10.0.0.2", "10.0.0.3"]      # neither: all
    # an endpoint whose hints are empty lists has no hints: neither filter applies
    bare = Endpoint("10.0.0.4", node_name="node4", hint_nodes=(), hint_zones=())
    assert pick(a, bare) == ["10.0.0.1", "10.0.0.4"]
    # not-ready endpoints do not count (their hints are never set by the controller)
    late = Endpoint("10.0.0.5", ready=False, node_name="node5")
    assert pick(a, b, late) == ["10.0.0.1"]


def test_unknown_target_port_name_gives_no_endpoints():
    services, _ = CASES["clusterip"]
    st = state(services, [eps("web-1", "web", [{"name": "other", "port": 1}], TWO)])
    assert st.sets["no-endpoint-services"] == {"10.96.0.10 . tcp . 80"}


def test_nodeport_addresses_and_never_loopback():
    base = "\n".join(lines(r.render_base(CTX)))
    assert "fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports" in base
    limited = "\n".join(lines(r.render_base(r.NodeContext("n", nodeport_cidrs=("192.168.56.0/24",)))))
    assert "ip daddr { 192.168.56.0/24 } fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports" in limited
    # CVE-2020-8558: not even when the configured CIDRs take in loopback
    everything = "\n".join(lines(r.render_base(r.NodeContext("n", nodeport_cidrs=("0.0.0.0/0",)))))
    assert "ip daddr { 0.0.0.0/0 } fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports" in everything
    assert 'add rule ip kubeweft filter-prerouting iif != "lo" ip daddr 127.0.0.0/8 counter drop' in base


def test_every_object_has_a_comment():
    for line in lines(r.render_base(CTX)):
        if line.startswith(("add table", "add chain", "add set", "add map")):
            assert "comment" in line, line
    services, slices = CASES["affinity"]
    st = state(services, slices)
    assert all(c.comment for c in st.chains.values()) and all("comment" in v for v in st.dynsets.values())


def test_one_change_touches_only_that_service():
    services, slices = CASES["clusterip"]
    other = svc("other", {"clusterIP": "10.96.0.11", "ports": [{"name": "http", "port": 80}]})
    agg = r.Aggregate()
    agg.put(services[0].key, r.render_service(services[0], slices, CTX))
    agg.put(other.key, r.render_service(other, [eps("o-1", "other", HTTP, TWO)], CTX))
    _, applied = d.diff_full(d.empty_applied(), agg)
    moved = eps("o-1", "other", HTTP, [ep("10.244.1.5", "node1"), ep("10.244.2.9", "node2")])
    t = agg.put(other.key, r.render_service(other, [moved], CTX))
    assert lines(d.diff_touched(applied, agg, t)) == [
        "delete element ip kubeweft backends-tcp-2 { 10.96.0.11 . 80 . 1 }",
        "add element ip kubeweft backends-tcp-2 { 10.96.0.11 . 80 . 1 : 10.244.2.9 . 8080 }"]


def test_udp_endpoint_leaving_is_cleaned_up():
    services, slices = CASES["multiport_protocols"]
    agg = r.Aggregate()
    agg.put(services[0].key, r.render_service(services[0], slices, CTX))
    _, applied = d.diff_full(d.empty_applied(), agg)
    fewer = [eps("dns-1", "dns", slices[0].ports and [{"name": "dns-tcp", "port": 5353},
                                                       {"name": "dns", "port": 5353, "protocol": "UDP"}],
                  [ep("10.244.1.5", "node1")])]
    t = agg.put(services[0].key, r.render_service(services[0], fewer, CTX))
    assert d.plan_udp_cleanup(applied, agg, t) == {("10.96.0.10", 53, "10.244.2.5")}


def test_parse_elements_round_trip():
    listing = [{"map": {"name": "backends-tcp-2", "elem": [
        [{"concat": ["10.96.0.10", 80, 0]}, {"concat": ["10.244.1.5", 8080]}]]}}]
    assert tr.parse_elements(listing) == ("map", {"10.96.0.10 . 80 . 0": "10.244.1.5 . 8080"})
    listing = [{"map": {"name": "service-ips", "elem": [
        [{"concat": ["10.96.0.10", "tcp", 80]}, {"goto": {"target": "lb-tcp-2"}}],
        [{"concat": ["10.96.0.11", "tcp", 80]}, {"drop": None}]]}}]
    assert tr.parse_elements(listing)[1] == {"10.96.0.10 . tcp . 80": "goto lb-tcp-2", "10.96.0.11 . tcp . 80": "drop"}
    listing = [{"set": {"name": "firewall-allow", "elem": [
        {"concat": ["198.51.100.1", "tcp", 80, {"prefix": {"addr": "203.0.113.0", "len": 24}}]}]}}]
    assert tr.parse_elements(listing) == ("set", frozenset({"198.51.100.1 . tcp . 80 . 203.0.113.0/24"}))


def test_unallocated_service_addresses_dropped_in_every_service_cidr():
    one = "\n".join(lines(r.render_base(CTX)))
    assert "add rule ip kubeweft service-check ip daddr 10.96.0.0/12 drop" in one
    ctx = r.NodeContext("n", service_cidrs=("10.96.0.0/12", "10.200.0.0/16", "10.96.1.0/24"))
    many = "\n".join(lines(r.render_base(ctx)))
    assert "add rule ip kubeweft service-check ip daddr { 10.96.0.0/12, 10.200.0.0/16 } drop" in many
