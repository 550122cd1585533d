"""LoadBalancer ingress IPs, externalIPs and loadBalancerSourceRanges with real traffic.

The lab's allocator gives LoadBalancer Services an address from 198.51.100.0/24; the underlay
(the external host's router) gets a /32 route for it towards one node, as a cloud load
balancer or a BGP speaker would. externalIPs are routed the same way.

    node1: web-1    node2: web-2    node3: client3
"""
from __future__ import annotations

import pytest

from .services_helpers import CONNECTED, EXTERNAL, TIMEOUT, cluster, names, svc_port, web_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-loadbalancer"
WEB = {"web-1", "web-2"}
EXTERNAL_IP = "198.51.100.250"       # outside the allocator's way (it starts at .2)


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
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
    assert all(r.client != c.cfg.external_ip for r in results), "eTP Cluster masquerades"


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
    svc = c.service("ext", [svc_port(8081, "http")], selector={"app": "web"}, externalIPs=[EXTERNAL_IP])
    c.route(EXTERNAL_IP, "node2")
    c.wait_answer(EXTERNAL, EXTERNAL_IP, 8081)
    assert names(c.who(EXTERNAL, EXTERNAL_IP, 8081, n=16)) == WEB
    assert names(c.who("client3", EXTERNAL_IP, 8081, n=16)) == WEB
    # the ClusterIP of the same Service works as well; another port on the externalIP does not
    assert names(c.who("client3", svc.ip, 8081, n=12)) == WEB
    assert c.probe(EXTERNAL, EXTERNAL_IP, 8082, timeout=1.0).outcome != CONNECTED


def test_source_ranges_drop_outsiders_and_node_port_bypasses_them(c):
    svc = c.service("ranged", [svc_port(80, "http", name="http")], selector={"app": "web"},
                    type_="LoadBalancer", loadBalancerSourceRanges=["10.99.0.0/16"])
    ip = c.lb_ip("ranged")
    c.route(ip, "node1")
    nodeport = svc.node_ports["http"]
    c.wait_endpoints("ranged", 2)
    c.wait_answer(EXTERNAL, c.node_ip["node1"], nodeport)
    # 203.0.113.2 is not in 10.99.0.0/16: dropped, as kube-proxy's firewall check does
    c.wait_outcome(EXTERNAL, ip, 80, TIMEOUT)
    assert {r.outcome for r in c.who(EXTERNAL, ip, 80, n=4, timeout=1.0)} == {TIMEOUT}
    # the NodePort of the same Service is not filtered by the ranges
    assert names(c.who(EXTERNAL, c.node_ip["node1"], nodeport, n=12)) == WEB
    # allow the external subnet: the LB IP answers
    c.patch_service("ranged", {"loadBalancerSourceRanges": ["10.99.0.0/16", c.cfg.external_subnet]})
    c.wait_answer(EXTERNAL, ip, 80)
    assert names(c.who(EXTERNAL, ip, 80, n=16)) == WEB
