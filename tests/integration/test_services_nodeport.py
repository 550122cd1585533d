"""NodePort with real traffic: on every node address, from the external host, pods and nodes;
never on 127.0.0.1 or ::1 (CVE-2020-8558); TCP and UDP. Runs in every IP family (`klab`): on the
nodes' addresses of the family the traffic uses.

    node1: web-1    node2: web-2    node3: client3 (no endpoint of its own)
"""
from __future__ import annotations

import pytest

from .services_helpers import CONNECTED, EXTERNAL, cluster, names, used_node_ports, web_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-nodeport"
WEB = {"web-1", "web-2"}
NODES = ["node1", "node2", "node3"]


@pytest.fixture(scope="module")
def c(klab):
    with cluster(klab, NS) as cl:
        cl.ips = cl.start_pods(web={"web-1": "node1", "web-2": "node2"}, clients={"client3": "node3"})
        cl.svc = cl.service("web", web_ports(), selector={"app": "web"}, type_="NodePort")
        cl.np, cl.np_udp = cl.svc.node_ports["http"], cl.svc.node_ports["udp"]
        cl.wait_endpoints("web", 2)
        for node in NODES:
            cl.wait_answer(EXTERNAL, cl.node_ip[node], cl.np)
        yield cl


@pytest.mark.parametrize("node", NODES)
def test_external_reaches_every_endpoint_on_every_node(c, node):
    results = c.who(EXTERNAL, c.node_ip[node], c.np, n=16)
    assert names(results) == WEB, results


@pytest.mark.parametrize("node", NODES)
def test_external_traffic_is_masqueraded_to_the_node(c, node):
    # externalTrafficPolicy Cluster: the endpoint sees the node that got the packet, so the
    # answer goes back through it; never the external client's own address
    results = c.who(EXTERNAL, c.node_ip[node], c.np, n=12)
    assert {r.outcome for r in results} == {CONNECTED}
    for r in results:
        assert r.client != c.external_ip, r
        if r.name != {"node1": "web-1", "node2": "web-2"}.get(node):   # remote endpoint
            assert r.client in c.node_addresses(node), r


@pytest.mark.parametrize("source", ["client3", "node:node3", "node:node1"])
@pytest.mark.parametrize("node", ["node1", "node3"])
def test_pods_and_nodes_reach_node_ports(c, source, node):
    results = c.who(source, c.node_ip[node], c.np, n=12)
    assert names(results) == WEB, results


@pytest.mark.parametrize("node", NODES)
def test_udp_node_port_from_external(c, node):
    c.wait_answer(EXTERNAL, c.node_ip[node], c.np_udp, udp=True)
    results = c.who(EXTERNAL, c.node_ip[node], c.np_udp, udp=True, n=16)
    assert names(results) == WEB, results


@pytest.mark.parametrize("node", ["node1", "node3"])
def test_never_on_localhost(c, node):
    # CVE-2020-8558: 127.0.0.1:<nodePort> (::1 on IPv6) on the node must not reach the Service
    loopback = "::1" if c.version == 6 else "127.0.0.1"
    for udp in (False, True):
        nodeport = c.np_udp if udp else c.np
        results = c.who(f"node:{node}", loopback, nodeport, n=3, udp=udp, timeout=1.0)
        assert all(r.outcome != CONNECTED for r in results), results


def test_unknown_node_port_is_not_answered(c):
    used = used_node_ports(c)
    free = next(p for p in range(32767, 30000, -1) if p not in used)
    r = c.probe(EXTERNAL, c.node_ip["node1"], free, timeout=1.0)
    assert r.outcome != CONNECTED, r
