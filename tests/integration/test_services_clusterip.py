"""ClusterIP with real traffic: TCP and UDP, several ports, numeric and named targetPorts, the
same port number on two protocols kept apart, SCTP ports loaded next to TCP ones. Runs in every
IP family (`klab`): on a dual-stack lab over the IPv6 ClusterIP of RequireDualStack Services.

    node1: web-1 (8080 "http", 9090 "alt"), client1
    node2: web-2 (8080 "http", 9191 "alt"), dtcp (8053/TCP "dns-tcp")
    node3: client3, dudp (9053/UDP "dns-udp")
"""
from __future__ import annotations

import pytest

from .services_helpers import CONNECTED, clients, cluster, names, port, svc_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-clusterip"
WEB = {"web-1", "web-2"}


@pytest.fixture(scope="module")
def c(klab):
    with cluster(klab, NS) as cl:
        cl.pod("web-1", "node1", ports=[port(8080, name="http"), port(9090, name="alt")], labels={"app": "web"})
        cl.pod("web-2", "node2", ports=[port(8080, name="http"), port(9191, name="alt")], labels={"app": "web"})
        cl.pod("dtcp", "node2", ports=[port(8053, "TCP", "dns-tcp")], labels={"app": "dns"})
        cl.pod("dudp", "node3", ports=[port(9053, "UDP", "dns-udp")], labels={"app": "dns"})
        cl.pod("client1", "node1")
        cl.pod("client3", "node3")
        cl.ips = cl.wait_ready("web-1", "web-2", "dtcp", "dudp", "client1", "client3")
        cl.web = cl.service("web", [svc_port(80, 8080, name="http"), svc_port(81, "alt", name="alt"),
                                    svc_port(5353, 8080, "UDP", name="udp")], selector={"app": "web"})
        cl.wait_endpoints("web", 2)
        cl.wait_answer("client3", cl.web.ip, 80)
        yield cl


@pytest.mark.parametrize("source", ["client1", "client3", "node:node1", "node:node2", "node:node3"])
def test_tcp_reaches_every_endpoint_numeric_target_port(c, source):
    results = c.who(source, c.web.ip, 80, n=16)
    assert names(results) == WEB, results


@pytest.mark.parametrize("source", ["client1", "client3", "node:node2"])
def test_named_target_port_resolves_per_pod(c, source):
    # web-1 serves "alt" on 9090, web-2 on 9191: only a per-endpoint port gets both right
    results = c.who(source, c.web.ip, 81, n=16)
    assert names(results) == WEB, results


@pytest.mark.parametrize("source", ["client1", "client3"])
def test_pod_to_cluster_ip_keeps_the_pod_address(c, source):
    results = c.who(source, c.web.ip, 80, n=12)
    assert {r.outcome for r in results} == {CONNECTED}
    assert clients(results) == {c.ips[source]}, results


@pytest.mark.parametrize("node", ["node1", "node2", "node3"])
def test_node_to_cluster_ip_comes_from_the_node(c, node):
    results = c.who(f"node:{node}", c.web.ip, 80, n=12)
    assert names(results) == WEB, results
    assert clients(results) <= c.node_addresses(node), results


@pytest.mark.parametrize("source", ["client1", "client3", "node:node3"])
def test_udp_reaches_every_endpoint(c, source):
    c.wait_answer(source, c.web.ip, 5353, udp=True)
    results = c.who(source, c.web.ip, 5353, udp=True, n=16)
    assert names(results) == WEB, results


def test_same_port_on_two_protocols_kept_apart(c):
    svc = c.service("dns", [svc_port(53, "dns-tcp", "TCP", name="tcp"), svc_port(53, "dns-udp", "UDP", name="udp")],
                    selector={"app": "dns"})
    c.wait_answer("client1", svc.ip, 53)
    c.wait_answer("client1", svc.ip, 53, udp=True)
    # Both pods listen on TCP and UDP on their port: a proxy that mixed the protocols up would
    # send TCP to dudp:9053 or UDP to dtcp:8053, and they would answer.
    tcp = c.who("client1", svc.ip, 53, n=12)
    udp = c.who("client1", svc.ip, 53, udp=True, n=12)
    assert names(tcp) == {"dtcp"}, tcp
    assert names(udp) == {"dudp"}, udp


def test_sctp_port_loads_next_to_tcp(c):
    # No SCTP sockets on this kernel: the SCTP port is rendered (SCTP conntrack exists), and its
    # rules must load in the same transaction as the TCP port's, which keeps working.
    svc = c.service("mixed", [svc_port(80, 8080, "TCP", name="tcp"), svc_port(80, 8080, "SCTP", name="sctp")],
                    selector={"app": "web"})
    c.wait_answer("client3", svc.ip, 80)
    assert names(c.who("client3", svc.ip, 80, n=12)) == WEB
    # and the agents still sync: a new Service after it works too
    after = c.service("after-sctp", [svc_port(80, 8080)], selector={"app": "web"})
    c.wait_answer("client1", after.ip, 80)
