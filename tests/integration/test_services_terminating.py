"""Falling back to serving-and-terminating endpoints when no endpoint is ready, with real traffic.

The lab kubelet marks a deleted pod not Ready at once (so the slice controller publishes it
serving=false), so the endpoint conditions are written here by hand: a selectorless Service and
an EndpointSlice of our own pointing at live pods, exactly the conditions kube-proxy reads
(ready, serving, terminating). One natural case is covered too: a pod deleted with a grace
period, KUBEWEFT_TERM_DELAY keeping it serving, stops getting new connections.

    node1: old-1    node2: old-2, new-1    node3: client3
"""
from __future__ import annotations

import pytest

from .services_helpers import CONNECTED, REFUSED, cluster, names, port, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-terminating"
SLICE = "manual-1"


def ep(ip: str, node: str, ready: bool, serving: bool, terminating: bool) -> dict:
    return {"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.pod("old-1", "node1", ports=[port(8080, name="http")])
        cl.pod("old-2", "node2", ports=[port(8080, name="http")])
        cl.pod("new-1", "node2", ports=[port(8080, name="http")])
        cl.pod("client3", "node3")
        cl.ips = cl.wait_ready("old-1", "old-2", "new-1", "client3")
        cl.svc = cl.service("manual", [svc_port(80, 8080, name="http")])          # no selector
        yield cl


def write(c, *endpoints: dict) -> None:
    c.endpoint_slice(SLICE, "manual", list(endpoints), [{"name": "http", "port": 8080, "protocol": "TCP"}])


def test_ready_endpoints_win_over_terminating_ones(c):
    ip = c.ips
    write(c, ep(ip["old-1"], "node1", False, True, True), ep(ip["new-1"], "node2", True, True, False))
    c.wait_answer("client3", c.svc.ip, 80, pods={"new-1"})
    wait_for("only new-1", lambda: names(c.who("client3", c.svc.ip, 80, n=12)) == {"new-1"})


def test_fallback_to_serving_terminating_when_none_ready(c):
    ip = c.ips
    write(c, ep(ip["old-1"], "node1", False, True, True), ep(ip["old-2"], "node2", False, True, True),
          ep(ip["new-1"], "node2", False, False, True))
    # no ready endpoint: both serving-terminating ones get traffic, the non-serving one none
    c.wait_answer("client3", c.svc.ip, 80, pods={"old-1", "old-2"})
    wait_for("old-1 and old-2 only", lambda: names(c.who("client3", c.svc.ip, 80, n=16)) == {"old-1", "old-2"})
    assert names(c.who("node:node1", c.svc.ip, 80, n=16)) == {"old-1", "old-2"}


def test_not_serving_terminating_endpoints_are_not_used(c):
    ip = c.ips
    write(c, ep(ip["old-1"], "node1", False, False, True), ep(ip["old-2"], "node2", False, False, True))
    # nothing ready or serving: the Service has no endpoints, so it rejects
    r = c.wait_outcome("client3", c.svc.ip, 80, REFUSED)
    assert r.ms < 500, r


def test_deleted_pod_with_term_delay_gets_no_new_connections(c):
    # the natural path: a selector Service, one pod deleted with a grace period while it keeps
    # serving (KUBEWEFT_TERM_DELAY); the other ready pod takes every new connection
    c.pod("slow-1", "node1", ports=[port(8080, name="http")], labels={"app": "slow"},
          env={"KUBEWEFT_TERM_DELAY": "20"}, grace=30)
    c.pod("slow-2", "node2", ports=[port(8080, name="http")], labels={"app": "slow"})
    c.wait_ready("slow-1", "slow-2")
    svc = c.service("slow", [svc_port(80, "http")], selector={"app": "slow"})
    c.wait_endpoints("slow", 2)
    wait_for("both answer", lambda: names(c.who("client3", svc.ip, 80, n=12)) == {"slow-1", "slow-2"})
    c.delete_pod("slow-1", grace=30)
    wait_for("only slow-2", lambda: names(c.who("client3", svc.ip, 80, n=12)) == {"slow-2"})
    results = c.who("client3", svc.ip, 80, n=16)
    assert {r.outcome for r in results} == {CONNECTED} and names(results) == {"slow-2"}, results
