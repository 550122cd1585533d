"""externalTrafficPolicy Local and internalTrafficPolicy Local with real traffic, and the
healthCheckNodePort server.

    node1: web-1, client1    node2: web-2    node3: client3 (no endpoint)

eTP Local: external traffic only to the endpoints of the node it arrived on, with the client's
own address kept; a node without local endpoints drops it; pods and nodes still reach every
endpoint (short-circuited, as kube-proxy does). healthCheckNodePort: 200 where the node has
local endpoints, 503 where not, with the count.
iTP Local: pod and node traffic to the ClusterIP only to endpoints on the same node; none there
-> dropped.
Runs in every IP family (`klab`): node addresses, the external host's and the LoadBalancer
address are the family's.
"""
from __future__ import annotations

import json

import pytest

from .services_helpers import (
    CONNECTED,
    EXTERNAL,
    TIMEOUT,
    clients,
    cluster,
    http_get,
    names,
    svc_port,
    web_ports,
)
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-trafficpolicy"
WEB = {"web-1", "web-2"}
LOCAL = {"node1": "web-1", "node2": "web-2"}


@pytest.fixture(scope="module")
def c(klab):
    with cluster(klab, NS) as cl:
        cl.ips = cl.start_pods(web={"web-1": "node1", "web-2": "node2"},
                               clients={"client1": "node1", "client3": "node3"})
        yield cl


@pytest.fixture(scope="module")
def local_lb(c):
    svc = c.service("etp", [svc_port(80, "http", name="http")], selector={"app": "web"},
                    type_="LoadBalancer", externalTrafficPolicy="Local")
    ip = c.lb_ip("etp")
    c.wait_endpoints("etp", 2)
    c.route(ip, "node1")
    c.wait_answer(EXTERNAL, c.node_ip["node1"], svc.node_ports["http"])
    return c.get_service("etp"), ip


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_external_node_port_goes_to_local_endpoint_with_client_address(c, local_lb, node):
    svc, _ = local_lb
    results = c.who(EXTERNAL, c.node_ip[node], svc.node_ports["http"], n=12)
    assert names(results) == {LOCAL[node]}, results
    assert clients(results) == {c.external_ip}, results


def test_external_node_port_without_local_endpoint_is_dropped(c, local_lb):
    svc, _ = local_lb
    results = c.who(EXTERNAL, c.node_ip["node3"], svc.node_ports["http"], n=3, timeout=1.0)
    assert {r.outcome for r in results} == {TIMEOUT}, results


def test_lb_ip_goes_to_local_endpoint_with_client_address(c, local_lb):
    _, ip = local_lb
    c.route(ip, "node2")
    try:
        c.wait_answer(EXTERNAL, ip, 80, pods={"web-2"})
        results = c.who(EXTERNAL, ip, 80, n=12)
        assert names(results) == {"web-2"}, results
        assert clients(results) == {c.external_ip}, results
        c.route(ip, "node3")
        c.wait_outcome(EXTERNAL, ip, 80, TIMEOUT)
    finally:
        c.route(ip, "node1")


@pytest.mark.parametrize("source", ["client3", "client1", "node:node3"])
def test_pods_and_nodes_reach_all_endpoints(c, local_lb, source):
    # short-circuit: traffic from inside the cluster is not limited to local endpoints
    svc, ip = local_lb
    assert names(c.who(source, svc.ip, 80, n=16)) == WEB
    assert names(c.who(source, ip, 80, n=16)) == WEB


def test_node_to_own_node_port_without_local_endpoint(c, local_lb):
    # kube-proxy: traffic from the node itself to its NodePort is treated as cluster traffic
    svc, _ = local_lb
    results = c.who("node:node3", c.node_ip["node3"], svc.node_ports["http"], n=12)
    assert names(results) == WEB, results


@pytest.mark.parametrize("node,count", [("node1", 1), ("node2", 1), ("node3", 0)])
def test_health_check_node_port(c, local_lb, node, count):
    svc, _ = local_lb
    hc = svc.obj["spec"].get("healthCheckNodePort")
    assert hc, "an eTP Local LoadBalancer gets a healthCheckNodePort"
    status, body = http_get(c.cfg.external_netns, c.node_ip[node], hc, "/")
    assert status == (200 if count else 503), (status, body)
    doc = json.loads(body)
    assert doc["localEndpoints"] == count, doc
    assert doc["service"] == {"namespace": NS, "name": "etp"}, doc


def test_health_check_follows_endpoints(c, local_lb):
    svc, _ = local_lb
    hc = svc.obj["spec"]["healthCheckNodePort"]
    c.web_pod("web-3", "node3")
    try:
        c.wait_ready("web-3")
        wait_for("node3 health 200", lambda: http_get(c.cfg.external_netns, c.node_ip["node3"], hc, "/")[0] == 200)
        c.wait_answer(EXTERNAL, c.node_ip["node3"], svc.node_ports["http"], pods={"web-3"})
        results = c.who(EXTERNAL, c.node_ip["node3"], svc.node_ports["http"], n=8)
        assert names(results) == {"web-3"}, results
    finally:
        c.delete_pod("web-3")
    wait_for("node3 health 503", lambda: http_get(c.cfg.external_netns, c.node_ip["node3"], hc, "/")[0] == 503)


@pytest.fixture(scope="module")
def itp(c):
    svc = c.service("itp", web_ports(), selector={"app": "web"}, internalTrafficPolicy="Local")
    c.wait_endpoints("itp", 2)
    c.wait_answer("client1", svc.ip, 80)
    return svc


@pytest.mark.parametrize("source,want", [("client1", "web-1"), ("node:node1", "web-1"), ("node:node2", "web-2")])
def test_internal_local_only_to_same_node(c, itp, source, want):
    assert names(c.who(source, itp.ip, 80, n=12)) == {want}
    c.wait_answer(source, itp.ip, 80, udp=True)
    assert names(c.who(source, itp.ip, 80, udp=True, n=8)) == {want}


@pytest.mark.parametrize("source", ["client3", "node:node3"])
def test_internal_local_without_local_endpoint_is_dropped(c, itp, source):
    results = c.who(source, itp.ip, 80, n=3, timeout=1.0)
    assert {r.outcome for r in results} == {TIMEOUT}, results
    assert all(r.outcome != CONNECTED for r in c.who(source, itp.ip, 80, udp=True, n=2, timeout=1.0))
