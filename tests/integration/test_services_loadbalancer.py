"""LoadBalancer ingress IPs, externalIPs and loadBalancerSourceRanges with real traffic.

The lab's allocator gives LoadBalancer Services an address per family (198.51.100.0/24,
2001:db8:100::/64); the underlay (the external host's router) gets a /32 (/128) route for it
towards one node, as a cloud load balancer or a BGP speaker would. externalIPs are routed the
same way. Runs in every IP family (`klab`): on a dual-stack lab over the IPv6 ingress address of
a RequireDualStack Service.

    node1: web-1    node2: web-2    node3: client3
"""
from __future__ import annotations

import ipaddress

import pytest

from .services_helpers import CONNECTED, EXTERNAL, TIMEOUT, cluster, names, svc_port, web_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-loadbalancer"
WEB = {"web-1", "web-2"}
OUTSIDERS = {4: "10.99.0.0/16", 6: "fd00:99::/32"}     # source ranges that leave the external host out


def external_ip(c) -> str:
    """An externalIP out of the allocator's way (it starts at the subnet's .2 / ::2)."""
    return str(ipaddress.ip_network(c.lb_subnet)[250])


@pytest.fixture(scope="module")
def c(klab):
    with cluster(klab, NS) as cl:
        cl.start_pods(web={"web-1": "node1", "web-2": "node2"}, clients={"client3": "node3"})
        yield cl


@pytest.fixture(scope="module")
def lb(c):
    svc = c.service("lb", web_ports(), selector={"app": "web"}, type_="LoadBalancer")
    ip = c.lb_ip("lb")
    c.route(ip, "node3")                  # a node without an endpoint: traffic must cross over
    c.wait_endpoints("lb", 2)
    c.wait_answer(EXTERNAL, ip, 80)
    return svc, ip


def test_lb_ip_from_external_reaches_every_endpoint(c, lb):
    _, ip = lb
    results = c.who(EXTERNAL, ip, 80, n=16)
    assert names(results) == WEB, results
    assert all(r.client != c.external_ip for r in results), "eTP Cluster masquerades"


def test_lb_ip_udp_from_external(c, lb):
    _, ip = lb
    c.wait_answer(EXTERNAL, ip, 80, udp=True)
    assert names(c.who(EXTERNAL, ip, 80, udp=True, n=16)) == WEB


@pytest.mark.parametrize("source", ["client3", "node:node1"])
def test_lb_ip_from_inside_the_cluster(c, lb, source):
    _, ip = lb
    assert names(c.who(source, ip, 80, n=16)) == WEB


def test_lb_ip_through_another_node(c, lb):
    _, ip = lb
    c.route(ip, "node1")
    try:
        c.wait_answer(EXTERNAL, ip, 80)
        assert names(c.who(EXTERNAL, ip, 80, n=16)) == WEB
    finally:
        c.route(ip, "node3")


def test_external_ips(c):
    ext = external_ip(c)
    svc = c.service("ext", [svc_port(8081, "http")], selector={"app": "web"}, externalIPs=[ext])
    c.route(ext, "node2")
    c.wait_answer(EXTERNAL, ext, 8081)
    assert names(c.who(EXTERNAL, ext, 8081, n=16)) == WEB
    assert names(c.who("client3", ext, 8081, n=16)) == WEB
    # the ClusterIP of the same Service works as well; another port on the externalIP does not
    assert names(c.who("client3", svc.ip, 8081, n=12)) == WEB
    assert c.probe(EXTERNAL, ext, 8082, timeout=1.0).outcome != CONNECTED


def test_source_ranges_drop_outsiders_and_node_port_bypasses_them(c):
    svc = c.service("ranged", [svc_port(80, "http", name="http")], selector={"app": "web"},
                    type_="LoadBalancer", loadBalancerSourceRanges=[OUTSIDERS[c.version]])
    ip = c.lb_ip("ranged")
    c.route(ip, "node1")
    nodeport = svc.node_ports["http"]
    c.wait_endpoints("ranged", 2)
    c.wait_answer(EXTERNAL, c.node_ip["node1"], nodeport)
    # the external host is not in the ranges: dropped, as kube-proxy's firewall check does
    c.wait_outcome(EXTERNAL, ip, 80, TIMEOUT)
    assert {r.outcome for r in c.who(EXTERNAL, ip, 80, n=4, timeout=1.0)} == {TIMEOUT}
    # the NodePort of the same Service is not filtered by the ranges
    assert names(c.who(EXTERNAL, c.node_ip["node1"], nodeport, n=12)) == WEB
    # allow the external subnet: the LB IP answers
    c.patch_service("ranged", {"loadBalancerSourceRanges": [OUTSIDERS[c.version], c.external_subnet]})
    c.wait_answer(EXTERNAL, ip, 80)
    assert names(c.who(EXTERNAL, ip, 80, n=16)) == WEB
