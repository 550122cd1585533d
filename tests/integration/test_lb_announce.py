"""LoadBalancer addresses announced to the lab's router, as a BGP speaker would: the external
host reaches a LoadBalancer Service's ingress IP with no route of its own; the route's next
hops are every Ready node (Cluster) or only the nodes with a local endpoint (Local); it is
withdrawn when the Service goes.

    node1: web-1    node2: (none)    node3: (none)
"""
from __future__ import annotations

import subprocess

import pytest
from kubeweft.lab.probe import CONNECTED

from .services_helpers import EXTERNAL, cluster, port, svc_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h11-announce"


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.pod("web-1", "node1", ports=[port(8080, name="http")], labels={"app": "web"})
        cl.wait_ready("web-1")
        yield cl


def router_hops(c, ip: str) -> set[str]:
    """The next hops of the announced route for `ip` on the lab's router (the underlay)."""
    out = subprocess.run(["ip", "-n", c.cfg.underlay_netns, "-o", "route", "show", f"{ip}/32", "proto", "bgp"],
                         capture_output=True, text=True, timeout=10, check=True).stdout.split()
    return {out[i + 1] for i, w in enumerate(out) if w == "via"}


def test_external_host_reaches_a_loadbalancer_until_it_is_deleted(c):
    c.service("web", [svc_port(80, "http", name="http")], selector={"app": "web"}, type_="LoadBalancer")
    ip = c.lb_ip("web")
    everyone = {c.node_ip[n] for n in ("node1", "node2", "node3")}
    wait_for("the address announced by every node", lambda: router_hops(c, ip) == everyone)
    r = c.wait_answer(EXTERNAL, ip, 80)
    assert r.name == "web-1"
    # the external host has no route for it: its default gateway (the router) has
    ext_routes = subprocess.run(["ip", "-n", c.cfg.external_netns, "route", "show"], capture_output=True,
                                text=True, timeout=10, check=True).stdout
    assert "198.51.100." not in ext_routes
    c.delete_service("web")
    wait_for("the route withdrawn", lambda: not router_hops(c, ip))
    assert c.probe(EXTERNAL, ip, 80, timeout=1.0).outcome != CONNECTED


def test_local_policy_is_announced_only_by_nodes_with_a_local_endpoint(c):
    c.service("local", [svc_port(80, "http", name="http")], selector={"app": "web"}, type_="LoadBalancer",
              externalTrafficPolicy="Local")
    ip = c.lb_ip("local")
    wait_for("announced by node1 alone", lambda: router_hops(c, ip) == {c.node_ip["node1"]})
    r = c.wait_answer(EXTERNAL, ip, 80)
    assert r.name == "web-1" and r.client == c.cfg.external_ip          # Local keeps the client address
    c.delete_pod("web-1")
    wait_for("withdrawn with the last local endpoint", lambda: not router_hops(c, ip))
    c.delete_service("local")


def test_a_service_of_another_loadbalancer_class_is_left_alone(c):
    c.service("theirs", [svc_port(80, 8080, name="http")], selector={"app": "web"}, type_="LoadBalancer",
              loadBalancerClass="example.com/their-lb")
    # that class's own controller gives it an address; the lab's allocator and announcer do not
    theirs = "198.51.100.240"
    c.core.patch_namespaced_service_status("theirs", NS, {"status": {"loadBalancer": {
        "ingress": [{"ip": theirs, "ipMode": "VIP"}]}}}, _request_timeout=10)
    c.service("ours", [svc_port(80, 8080, name="http")], selector={"app": "web"}, type_="LoadBalancer")
    ours = c.lb_ip("ours")
    wait_for("ours announced", lambda: router_hops(c, ours))        # the announcer has had its pass
    assert router_hops(c, theirs) == set()
    ingress = c.get_service("theirs").obj["status"]["loadBalancer"]["ingress"]
    assert ingress == [{"ip": theirs, "ipMode": "VIP"}]               # left as its owner wrote it
    c.delete_service("theirs")
    c.delete_service("ours")
