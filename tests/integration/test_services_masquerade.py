"""Which client address an endpoint sees, and hairpin, with real traffic (kube-proxy's rules):

- pod -> ClusterIP -> endpoint on another node or the same node: the pod's own address
- pod -> its own Service -> itself (hairpin): works, masqueraded (the pod would otherwise answer
  itself from its own address and drop the reply)
- node -> ClusterIP: an address of that node
- off-cluster source -> ClusterIP (routed to a node): masqueraded to the node
- external -> NodePort, externalTrafficPolicy Cluster: masqueraded to the node (tested in
  test_services_nodeport), Local: the client's address (test_services_traffic_policy)

    node1: web-1, client1    node2: web-2
"""
from __future__ import annotations

import pytest

from .services_helpers import CONNECTED, EXTERNAL, clients, cluster, names, port, web_ports
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-masquerade"


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.web_pod("web-1", "node1")
        cl.web_pod("web-2", "node2")
        cl.pod("solo", "node2", ports=[port(8080, name="http")], labels={"app": "solo"})
        cl.pod("client1", "node1")
        cl.ips = cl.wait_ready("web-1", "web-2", "solo", "client1")
        cl.web = cl.service("web", web_ports(), selector={"app": "web"})
        cl.solo = cl.service("solo", web_ports(), selector={"app": "solo"})
        cl.wait_endpoints("web", 2)
        cl.wait_endpoints("solo", 1)
        cl.wait_answer("client1", cl.web.ip, 80)
        yield cl


def test_pod_to_local_and_remote_endpoints_keeps_pod_address(c):
    results = c.who("client1", c.web.ip, 80, n=16)
    assert names(results) == {"web-1", "web-2"}, results          # same node and other node
    assert clients(results) == {c.ips["client1"]}, results
    udp = c.who("client1", c.web.ip, 80, udp=True, n=12)
    assert names(udp) == {"web-1", "web-2"} and clients(udp) == {c.ips["client1"]}, udp


@pytest.mark.parametrize("udp", [False, True])
def test_hairpin(c, udp):
    # solo is the only endpoint of its Service: reaching the Service from solo is hairpin
    c.wait_answer("solo", c.solo.ip, 80, udp=udp)
    results = c.who("solo", c.solo.ip, 80, udp=udp, n=8)
    assert {r.outcome for r in results} == {CONNECTED}, results
    assert names(results) == {"solo"}, results
    assert c.ips["solo"] not in clients(results), "hairpin traffic is masqueraded"
    assert clients(results) <= c.node_addresses("node2"), results


def test_hairpin_through_a_two_endpoint_service(c):
    # web-1 reaching web via the ClusterIP lands on itself about half the time
    results = c.who("web-1", c.web.ip, 80, n=24)
    assert names(results) == {"web-1", "web-2"}, results
    for r in results:
        if r.name == "web-1":
            assert r.client != c.ips["web-1"] and r.client in c.node_addresses("node1"), r
        else:
            assert r.client == c.ips["web-1"], r                # not hairpin: the pod's address


@pytest.mark.parametrize("node", ["node1", "node2", "node3"])
def test_node_to_cluster_ip(c, node):
    results = c.who(f"node:{node}", c.web.ip, 80, n=12)
    assert names(results) == {"web-1", "web-2"}, results
    assert clients(results) <= c.node_addresses(node), results


def test_off_cluster_source_to_cluster_ip_is_masqueraded(c):
    # a router sending ClusterIP traffic to node3 (as some setups do): the endpoints must see
    # node3, or their answers would not go back through its conntrack
    c.route(c.web.ip, "node3")
    c.wait_answer(EXTERNAL, c.web.ip, 80)
    results = c.who(EXTERNAL, c.web.ip, 80, n=12)
    assert names(results) == {"web-1", "web-2"}, results
    assert clients(results) <= c.node_addresses("node3"), results
    wait_for("udp too", lambda: c.probe(EXTERNAL, c.web.ip, 80, udp=True).outcome == CONNECTED)
