"""diff_services.plan_udp_cleanup / touched_udp for sessionAffinity ClientIP Services, whose
endpoints live in per-Service chains (aff-<sid> -> aff-<sid>-<eid>) rather than backends maps.

Each test applies a first state the way the agent does (diff_full -> the mirror), changes one
Service's fragment, and checks the conntrack flows planned on the partial sync (the Touched of
Aggregate.put) and on a full sync (touched_udp of the mirror)."""
from __future__ import annotations

from kubeweft.proxy import diff_services as d
from kubeweft.proxy import render_services as r
from kubeweft.proxy.model import parse_endpoint_slice, parse_service

CTX = r.NodeContext("node1", cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")
A, B, C = "10.244.1.5", "10.244.2.5", "10.244.3.5"
AFFINITY = {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}


def service(proto: str = "UDP", affinity: bool = True, node_port: int | None = None, **extra):
    port = {"name": "dns", "port": 53, "protocol": proto, "targetPort": 5353}
    spec = {"clusterIP": "10.96.0.10", "ports": [port], **(AFFINITY if affinity else {}), **extra}
    if node_port:
        port["nodePort"] = node_port
        spec["type"] = "NodePort"
    return parse_service({"metadata": {"namespace": "ns", "name": "dns"}, "spec": spec})


def slices(*ips: str, proto: str = "UDP"):
    return [parse_endpoint_slice({
        "metadata": {"namespace": "ns", "name": "dns-1", "labels": {"kubernetes.io/service-name": "dns"}},
        "ports": [{"name": "dns", "port": 5353, "protocol": proto}],
        "endpoints": [{"addresses": [ip], "nodeName": "node2", "conditions": {"ready": True}} for ip in ips]})]


def applied_then(svc, before, after_svc, after):
    """(planned on the partial sync, planned on a full sync) when `svc` with endpoints `before`,
    already in the kernel, becomes `after_svc` with endpoints `after` (None: the Service goes)."""
    agg = r.Aggregate()
    agg.put(svc.key, r.render_service(svc, before, CTX))
    _, applied = d.diff_full(d.empty_applied(), agg)
    t = agg.put(svc.key, r.render_service(after_svc, after, CTX) if after_svc is not None else None)
    return d.plan_udp_cleanup(applied, agg, t), d.plan_udp_cleanup(applied, agg, d.touched_udp(applied))


def test_affinity_endpoint_removed_is_planned():
    s = service()
    partial, full = applied_then(s, slices(A, B), s, slices(A))
    assert partial == full == {("10.96.0.10", 53, B)}


def test_affinity_endpoint_kept_plans_nothing():
    s = service()
    # one endpoint added, none removed: the affinity chain is rewritten, nobody left
    partial, full = applied_then(s, slices(A, B), s, slices(A, B, C))
    assert partial == full == set()
    # nothing changed at all
    partial, full = applied_then(s, slices(A, B), s, slices(A, B))
    assert partial == full == set()


def test_tcp_affinity_plans_nothing():
    s = service("TCP")
    partial, full = applied_then(s, slices(A, B, proto="TCP"), s, slices(A, proto="TCP"))
    assert partial == full == set()


def test_affinity_node_port_has_no_address():
    s = service(node_port=30053)
    partial, full = applied_then(s, slices(A, B), s, slices(B))
    # the ClusterIP and the nodePort (any node address: None)
    assert partial == full == {("10.96.0.10", 53, A), (None, 30053, A)}


def test_affinity_external_ip_and_local_policy():
    s = service(node_port=30053, externalIPs=["192.168.56.200"], externalTrafficPolicy="Local")
    partial, _ = applied_then(s, slices(A, B), s, slices(A))
    assert partial == {("10.96.0.10", 53, B), ("192.168.56.200", 53, B), (None, 30053, B)}


def test_affinity_service_deleted_plans_every_endpoint():
    s = service()
    partial, full = applied_then(s, slices(A, B), None, None)
    assert partial == full == {("10.96.0.10", 53, A), ("10.96.0.10", 53, B)}


def test_affinity_all_endpoints_gone_plans_them():
    s = service()
    partial, _ = applied_then(s, slices(A, B), s, [])
    assert partial == {("10.96.0.10", 53, A), ("10.96.0.10", 53, B)}


def test_affinity_switched_off_keeps_live_endpoints():
    # the key now goes to an lb chain: only endpoints missing from its backends map are gone
    partial, full = applied_then(service(), slices(A, B), service(affinity=False), slices(A))
    assert partial == full == {("10.96.0.10", 53, B)}


def test_affinity_switched_on_keeps_live_endpoints():
    # the backends-udp-N keys leave; the endpoints still in the affinity chain are not gone
    partial, full = applied_then(service(affinity=False), slices(A, B), service(), slices(A))
    assert partial == full == {("10.96.0.10", 53, B)}


def test_touched_udp_covers_udp_affinity_keys_only():
    agg = r.Aggregate()
    udp = service(node_port=30053)
    agg.put(udp.key, r.render_service(udp, slices(A, B), CTX))
    tcp = parse_service({"metadata": {"namespace": "ns", "name": "web"}, "spec": {
        "clusterIP": "10.96.0.11", "ports": [{"port": 80, "protocol": "TCP"}], **AFFINITY}})
    agg.put(tcp.key, r.render_service(tcp, [parse_endpoint_slice({
        "metadata": {"namespace": "ns", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "ports": [{"port": 80}], "endpoints": [{"addresses": [A], "conditions": {"ready": True}}]})], CTX))
    _, applied = d.diff_full(d.empty_applied(), agg)
    assert d.touched_udp(applied).keys == {("service-ips", "10.96.0.10 . udp . 53"), ("nodeports", "udp . 30053")}

