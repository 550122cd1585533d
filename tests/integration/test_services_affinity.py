"""sessionAffinity ClientIP with timeoutSeconds, with real traffic.

    node1: web-1, client1    node2: web-2    node3: web-3, client3    and the external host
"""
from __future__ import annotations

import time

import pytest

from .services_helpers import CONNECTED, EXTERNAL, cluster, names, svc_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-affinity"
WEB = {"web-1", "web-2", "web-3"}
TIMEOUT_S = 2


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.start_pods(web={f"web-{i}": f"node{i}" for i in (1, 2, 3)},
                      clients={"client1": "node1", "client3": "node3"})
        cl.plain = cl.service("plain", [svc_port(80, "http")], selector={"app": "web"})
        cl.sticky = cl.service("sticky", [svc_port(80, "http", name="tcp"), svc_port(80, 8080, "UDP", name="udp")],
                               selector={"app": "web"}, type_="NodePort", sessionAffinity="ClientIP",
                               sessionAffinityConfig={"clientIP": {"timeoutSeconds": TIMEOUT_S}})
        cl.wait_endpoints("sticky", 3)
        cl.wait_answer("client1", cl.sticky.ip, 80)
        cl.wait_answer("client1", cl.plain.ip, 80)
        yield cl


def test_without_affinity_connections_spread(c):
    # the reference: the same client, no affinity, lands on every endpoint
    assert names(c.who("client1", c.plain.ip, 80, n=24)) == WEB


@pytest.mark.parametrize("source", ["client1", "client3", "node:node2"])
def test_client_ip_sticks_to_one_endpoint(c, source):
    results = [c.probe(source, c.sticky.ip, 80) for _ in range(15)]   # one after the other
    assert {r.outcome for r in results} == {CONNECTED}, results
    assert len(names(results)) == 1, results


@pytest.mark.parametrize("node", ["node1", "node3"])
def test_external_client_sticks_through_a_node_port(c, node):
    nodeport = c.sticky.node_ports["tcp"]
    c.wait_answer(EXTERNAL, c.node_ip[node], nodeport)
    results = [c.probe(EXTERNAL, c.node_ip[node], nodeport) for _ in range(15)]
    assert {r.outcome for r in results} == {CONNECTED}, results
    assert len(names(results)) == 1, results


def test_udp_sticks_too(c):
    c.wait_answer("client3", c.sticky.ip, 80, udp=True)
    results = [c.probe("client3", c.sticky.ip, 80, udp=True) for _ in range(12)]
    assert {r.outcome for r in results} == {CONNECTED}, results
    assert len(names(results)) == 1, results


def test_affinity_expires_after_timeout_seconds(c):
    # After timeoutSeconds without a new connection the client is free again: over a few idle
    # pauses it must land somewhere else at least once (each pause: 2/3 chance; 8 pauses fail
    # by chance with probability (1/3)^8 < 0.02 %).
    first = c.probe("client3", c.sticky.ip, 80).name
    seen = {first}
    for _ in range(8):
        time.sleep(TIMEOUT_S + 1.2)
        seen.add(c.probe("client3", c.sticky.ip, 80).name)
        if len(seen) > 1:
            break
    assert len(seen) > 1 and None not in seen, seen
