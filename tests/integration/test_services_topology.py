"""Topology hints and trafficDistribution with real traffic, in every IP family (`klab`: on a
dual-stack lab over the IPv6 ClusterIP and NodePort of RequireDualStack Services, whose IPv6
EndpointSlices carry the hints).

Nodes carry topology.kubernetes.io/zone: node1 and node3 zone-a, node2 zone-b. With
trafficDistribution PreferClose the slice controller gives every endpoint a hint for its own
zone, and a node's proxy then uses only the endpoints hinted for its zone. With PreferSameNode
every ready endpoint is hinted for its node as well: a node with an endpoint keeps to it; one
without (web-4's node is drained by deleting it) falls back to its zone. Hand-written slices
check forZones and forNodes hints as kube-proxy reads them, and a Local traffic policy takes the
node's own endpoints whatever the hints say (hints narrow only the cluster-wide endpoints).

    node1: web-1, client1 (zone-a)    node2: web-2, client2 (zone-b)    node3: web-3, client3 (zone-a)
"""
from __future__ import annotations

import pytest

from .services_helpers import EXTERNAL, cluster, names, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-topology"
ZONE_A, ZONE_B = {"web-1", "web-3"}, {"web-2"}
ALL = ZONE_A | ZONE_B


@pytest.fixture(scope="module")
def c(klab):
    with cluster(klab, NS) as cl:
        cl.start_pods(web={f"web-{i}": f"node{i}" for i in (1, 2, 3)},
                      clients={f"client{i}": f"node{i}" for i in (1, 2, 3)})
        cl.close_svc = cl.service("close", [svc_port(80, "http")], selector={"app": "web"},
                                  trafficDistribution="PreferClose")
        cl.plain = cl.service("plain", [svc_port(80, "http")], selector={"app": "web"})
        cl.same_node = cl.service("same-node", [svc_port(80, "http")], selector={"app": "web"},
                                  trafficDistribution="PreferSameNode")
        cl.same_zone = cl.service("same-zone", [svc_port(80, "http")], selector={"app": "web"},
                                  trafficDistribution="PreferSameZone")
        eps = cl.wait_endpoints("close", 3)
        assert all(e.get("hints") for e in eps), eps
        yield cl


@pytest.mark.parametrize("source,want", [("client1", ZONE_A), ("client3", ZONE_A), ("client2", ZONE_B),
                                         ("node:node2", ZONE_B), ("node:node3", ZONE_A)])
def test_prefer_close_stays_in_zone(c, source, want):
    c.wait_answer(source, c.close_svc.ip, 80)
    wait_for(f"{source} in its zone", lambda: names(c.who(source, c.close_svc.ip, 80, n=16)) == want)
    assert names(c.who(source, c.close_svc.ip, 80, n=16)) == want


@pytest.mark.parametrize("source", ["client2", "client1"])
def test_without_hints_every_zone(c, source):
    c.wait_answer(source, c.plain.ip, 80)
    assert names(c.who(source, c.plain.ip, 80, n=24)) == ALL


def hinted_service(c, name: str, hints: dict[str, dict]):
    """A selectorless Service over web-1..3 with a slice we write: each endpoint in its node's
    real zone, with the hints given per pod name."""
    ips = {n: c.pod_ip(n) for n in ALL}
    svc = c.service(name, [svc_port(80, 8080, name="http")])
    c.endpoint_slice(f"{name}-1", name, [
        {"addresses": [ips[n]], "nodeName": f"node{n[-1]}", "zone": "zone-b" if n == "web-2" else "zone-a",
         "conditions": {"ready": True, "serving": True, "terminating": False},
         "hints": hints[n]} for n in sorted(ALL)],
        [{"name": "http", "port": 8080, "protocol": "TCP"}])
    return svc


def test_hints_followed_and_ignored_where_a_zone_has_none(c):
    # web-1 and web-2 hinted for zone-a, web-3 (in zone-a) for zone-c. zone-a nodes follow the
    # hints (web-1, web-2, not their zone-mate web-3); zone-b has no endpoint hinted for it, so
    # kube-proxy ignores hints there and uses every endpoint.
    hint = {"web-1": "zone-a", "web-2": "zone-a", "web-3": "zone-c"}
    svc = hinted_service(c, "manual", {n: {"forZones": [{"name": z}]} for n, z in hint.items()})
    c.wait_answer("client2", svc.ip, 80)
    wait_for("zone-b uses everything", lambda: names(c.who("client2", svc.ip, 80, n=24)) == ALL)
    wait_for("zone-a follows the hints", lambda: names(c.who("client1", svc.ip, 80, n=16)) == {"web-1", "web-2"})
    assert names(c.who("client3", svc.ip, 80, n=16)) == {"web-1", "web-2"}


def test_node_hints_followed_before_zone_hints(c):
    # Node hints that cross the nodes (web-1 for node3, web-3 for node1), zone hints for each
    # endpoint's own zone: each node takes the endpoint hinted for it, not its own, and not its
    # zone's.
    for_node = {"web-1": "node3", "web-2": "node2", "web-3": "node1"}
    svc = hinted_service(c, "manual-nodes", {
        n: {"forNodes": [{"name": node}], "forZones": [{"name": "zone-b" if n == "web-2" else "zone-a"}]}
        for n, node in for_node.items()})
    c.wait_answer("client3", svc.ip, 80)
    wait_for("node3 follows its node hint", lambda: names(c.who("client3", svc.ip, 80, n=16)) == {"web-1"})
    assert names(c.who("client1", svc.ip, 80, n=16)) == {"web-3"}
    assert names(c.who("node:node2", svc.ip, 80, n=16)) == {"web-2"}


@pytest.fixture(scope="module")
def close_local(c):
    """PreferClose Services with a Local traffic policy: etp (NodePort, externalTrafficPolicy
    Local) and itp (ClusterIP, internalTrafficPolicy Local)."""
    etp = c.service("close-etp", [svc_port(80, "http")], selector={"app": "web"}, type_="NodePort",
                    trafficDistribution="PreferClose", externalTrafficPolicy="Local")
    itp = c.service("close-itp", [svc_port(80, "http")], selector={"app": "web"},
                    trafficDistribution="PreferClose", internalTrafficPolicy="Local")
    for name in ("close-etp", "close-itp"):
        assert all(e.get("hints") for e in c.wait_endpoints(name, 3))
    c.wait_answer("client3", itp.ip, 80)
    return etp, itp


@pytest.mark.parametrize("node", ["node1", "node3"])
def test_external_traffic_policy_local_takes_the_nodes_endpoint_not_the_zones(c, close_local, node):
    etp, _ = close_local
    port = etp.node_ports["80"]
    c.wait_answer(EXTERNAL, c.node_ip[node], port)
    assert names(c.who(EXTERNAL, c.node_ip[node], port, n=16)) == {f"web-{node[-1]}"}
    # from inside the cluster the same Service is cluster-wide, narrowed to the zone by its hints
    assert names(c.who(f"client{node[-1]}", etp.ip, 80, n=16)) == ZONE_A


@pytest.mark.parametrize("source,want", [("client3", "web-3"), ("node:node1", "web-1"), ("client2", "web-2")])
def test_internal_traffic_policy_local_takes_the_nodes_endpoint_not_the_zones(c, close_local, source, want):
    _, itp = close_local
    assert names(c.who(source, itp.ip, 80, n=16)) == {want}


@pytest.mark.parametrize("source,want", [("client1", {"web-1"}), ("client2", {"web-2"}),
                                         ("node:node3", {"web-3"})])
def test_prefer_same_node_keeps_to_the_nodes_endpoint(c, source, want):
    eps = c.wait_endpoints("same-node", 3)
    assert all((e.get("hints") or {}).get("forNodes") == [{"name": e["nodeName"]}] for e in eps), eps
    c.wait_answer(source, c.same_node.ip, 80)
    wait_for(f"{source} on its node", lambda: names(c.who(source, c.same_node.ip, 80, n=16)) == want)
    assert names(c.who(source, c.same_node.ip, 80, n=16)) == want


@pytest.mark.parametrize("source,want", [("client3", ZONE_A), ("client2", ZONE_B)])
def test_prefer_same_zone_stays_in_zone(c, source, want):
    c.wait_answer(source, c.same_zone.ip, 80)
    wait_for(f"{source} in its zone", lambda: names(c.who(source, c.same_zone.ip, 80, n=16)) == want)


def test_prefer_same_node_falls_back_to_the_zone_without_a_local_endpoint(c):
    # web-3 goes: node3 has no endpoint hinted for it, so it takes its zone's (web-1)
    c.delete_pod("web-3")
    try:
        c.wait_endpoints("same-node", 2)
        wait_for("node3 falls back to zone-a", lambda: names(c.who("client3", c.same_node.ip, 80, n=16))
                 == {"web-1"})
        assert names(c.who("client2", c.same_node.ip, 80, n=16)) == {"web-2"}
    finally:
        c.web_pod("web-3", "node3")
        c.wait_ready("web-3")
