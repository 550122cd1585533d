"""Refused versus dropped, and the Services the proxy must leave alone, with real traffic.

- a Service without endpoints: "connection refused" at once (TCP reset / ICMP port unreachable)
- an unused port on a Service address: refused
- an unallocated address in the service range: dropped (the client times out)
- service.kubernetes.io/service-proxy-name (another proxy's Service): not programmed
- headless and ExternalName Services: no rules, and the proxy keeps syncing the others

    node1: web-1    node3: client3
"""
from __future__ import annotations

import time

import pytest

from .services_helpers import (
    CONNECTED,
    REFUSED,
    TIMEOUT,
    cluster,
    http_get,
    names,
    port,
    svc_port,
    udp_outcome,
    unused_service_ip,
    web_ports,
)
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-reject"
SOURCES = ["client3", "node:node3", "node:node1"]


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.start_pods(web={"web-1": "node1"}, clients={"client3": "node3"})
        cl.web = cl.service("web", web_ports(), selector={"app": "web"})
        cl.empty = cl.service("empty", [svc_port(80, 8080, name="http"), svc_port(80, 8080, "UDP", name="udp")],
                              selector={"app": "nobody"})
        cl.wait_endpoints("web", 1)
        cl.wait_answer("client3", cl.web.ip, 80)
        yield cl


@pytest.mark.parametrize("source", SOURCES)
def test_no_endpoints_is_refused_at_once(c, source):
    r = c.wait_outcome(source, c.empty.ip, 80, REFUSED)
    results = c.who(source, c.empty.ip, 80, n=4)
    assert {x.outcome for x in results} == {REFUSED}, results
    assert max(x.ms for x in results) < 300, results
    assert r.ms < 300


@pytest.mark.parametrize("source", ["client3", "node:node3"])
def test_no_endpoints_udp_is_refused(c, source):
    # ICMP port unreachable: ECONNREFUSED on the connected socket (from the node itself, the
    # send fails with EPERM first, as a reject on the OUTPUT hook does)
    ns = c.source_netns(source)
    wait_for("UDP refused", lambda: udp_outcome(ns, c.empty.ip, 80) == REFUSED)
    t0 = time.monotonic()
    assert udp_outcome(ns, c.empty.ip, 80) == REFUSED
    assert time.monotonic() - t0 < 0.3


@pytest.mark.parametrize("source", ["client3", "node:node3"])
def test_unallocated_service_address_udp_is_dropped(c, source):
    ip = unused_service_ip(c)
    assert udp_outcome(c.source_netns(source), ip, 80, timeout=1.5) == TIMEOUT


@pytest.mark.parametrize("source", SOURCES)
def test_unused_port_on_a_service_address_is_refused(c, source):
    r = c.wait_outcome(source, c.web.ip, 81, REFUSED)
    assert r.ms < 300, r
    assert c.probe(source, c.web.ip, 80).outcome == CONNECTED


@pytest.mark.parametrize("source", ["client3", "node:node3"])
def test_unallocated_service_address_is_dropped(c, source):
    ip = unused_service_ip(c)
    results = c.who(source, ip, 80, n=2, timeout=1.5)
    assert {r.outcome for r in results} == {TIMEOUT}, results


def test_endpoints_appear_and_go(c):
    # the refusing Service starts answering once a pod matches, and refuses again after
    c.pod("late", "node1", ports=[port(8080, name="http")], labels={"app": "nobody"})
    try:
        c.wait_ready("late")
        c.wait_answer("client3", c.empty.ip, 80, pods={"late"})
    finally:
        c.delete_pod("late")
    r = c.wait_outcome("client3", c.empty.ip, 80, REFUSED)
    assert r.ms < 300


def test_other_proxys_service_is_left_alone(c):
    svc = c.service("foreign", [svc_port(80, "http")], selector={"app": "web"},
                    labels={"service.kubernetes.io/service-proxy-name": "someone-else"})
    twin = c.service("twin", [svc_port(80, "http")], selector={"app": "web"})
    c.wait_answer("client3", twin.ip, 80)           # the proxy synced after both were made
    results = c.who("client3", svc.ip, 80, n=3, timeout=1.0)
    assert all(r.outcome != CONNECTED for r in results), results


def test_headless_and_external_name_need_no_rules(c):
    c.service("headless", [svc_port(80, "http")], selector={"app": "web"}, clusterIP="None")
    c.service("extname", [svc_port(80, 80)], type_="ExternalName", externalName="example.invalid")
    after = c.service("after", [svc_port(80, "http")], selector={"app": "web"})
    # the proxy went on syncing: a Service made after them works, and it stays healthy
    c.wait_answer("client3", after.ip, 80)
    assert names(c.who("node:node1", after.ip, 80, n=4)) == {"web-1"}
    for node in ("node1", "node3"):
        wait_for(f"{node} healthz", lambda n=node: http_get(c.cfg.node_netns(n), "127.0.0.1", 10256, "/healthz")[0] == 200)
    # the headless Service's pods are reached directly, as ever
    ip = c.pod_ip("web-1")
    assert c.probe("client3", ip, 8080).name == "web-1"
