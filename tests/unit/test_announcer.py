"""The LoadBalancer announcer's plans (pure): which nodes announce which address, and the `ip`
commands that move the router's table from one plan to the next."""
from __future__ import annotations

from kubeweft.lab.controllers.announcer import (
    ROUTE_METRIC,
    NodeView,
    ServiceView,
    plan_announcements,
    plan_route_commands,
    ready_endpoint_nodes,
    service_view,
)

NODES = [NodeView("node1", ("192.168.56.11",), True), NodeView("node2", ("192.168.56.12",), True),
         NodeView("node3", ("192.168.56.13",), False)]


def lb(name: str, ip: str | None, policy: str = "Cluster", cls: str | None = None) -> dict:
    spec = {"type": "LoadBalancer", "externalTrafficPolicy": policy}
    if cls:
        spec["loadBalancerClass"] = cls
    status = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]} if ip else {}}
    return {"metadata": {"namespace": "default", "name": name}, "spec": spec, "status": status}


def test_cluster_policy_is_announced_by_every_ready_node():
    svc = service_view(lb("web", "198.51.100.2"))
    assert plan_announcements([svc], NODES, {}) == {"198.51.100.2": ("192.168.56.11", "192.168.56.12")}


def test_local_policy_only_from_nodes_with_a_ready_local_endpoint():
    svc = service_view(lb("web", "198.51.100.2", "Local"))
    slices = [{"endpoints": [{"nodeName": "node2", "conditions": {"ready": True}},
                             {"nodeName": "node1", "conditions": {"ready": False}},
                             {"nodeName": "node3", "conditions": {"ready": True}}]}]
    local = {("default", "web"): ready_endpoint_nodes(slices)}
    # node3 has an endpoint but is not Ready; node1's endpoint is not ready
    assert plan_announcements([svc], NODES, local) == {"198.51.100.2": ("192.168.56.12",)}
    assert plan_announcements([svc], NODES, {}) == {}              # no local endpoint: no route


def test_what_is_not_announced():
    assert service_view(lb("pending", None)) is None                      # no address yet
    assert service_view(lb("other", "198.51.100.3", cls="example.com/lb")) is None   # someone else's
    cluster_ip = lb("c", "198.51.100.4")
    cluster_ip["spec"]["type"] = "ClusterIP"
    assert service_view(cluster_ip) is None
    assert plan_announcements([ServiceView(("d", "s"), ("198.51.100.5",), False)],
                              [NodeView("n", (), True)], {}) == {}        # a node with no address


def test_route_commands_add_change_and_withdraw():
    have = {"198.51.100.2": ("192.168.56.11",), "198.51.100.9": ("192.168.56.12",)}
    want = {"198.51.100.2": ("192.168.56.11", "192.168.56.12"), "198.51.100.3": ("192.168.56.12",)}
    cmds = [" ".join(c[3:]) for c in plan_route_commands("kw-underlay", want, have)]
    m = f"proto bgp metric {ROUTE_METRIC}"
    assert cmds == [f"route del 198.51.100.9/32 {m}",
                    f"route replace 198.51.100.2/32 {m} nexthop via 192.168.56.11 nexthop via 192.168.56.12",
                    f"route replace 198.51.100.3/32 {m} nexthop via 192.168.56.12"]
    assert plan_route_commands("kw-underlay", want, want) == []


def test_ipv6_addresses_are_announced_through_the_nodes_ipv6_addresses():
    nodes = [NodeView("node1", ("192.168.56.11", "2001:db8:56::11"), True),
             NodeView("node2", ("2001:db8:56::12",), True)]       # an ipv6 lab's node: IPv6 alone
    svc = lb("web", "198.51.100.2")
    svc["status"]["loadBalancer"]["ingress"].append({"ip": "2001:db8:100::2", "ipMode": "VIP"})
    want = plan_announcements([service_view(svc)], nodes, {})
    assert want == {"198.51.100.2": ("192.168.56.11",),
                    "2001:db8:100::2": ("2001:db8:56::11", "2001:db8:56::12")}
    cmds = [" ".join(c[3:]) for c in plan_route_commands("kw-underlay", want, {})]
    assert cmds[1] == (f"route replace 2001:db8:100::2/128 proto bgp metric {ROUTE_METRIC} "
                       "nexthop via 2001:db8:56::11 nexthop via 2001:db8:56::12")
    assert " ".join(plan_route_commands("kw-underlay", {}, want)[1][3:6]) == "route del 2001:db8:100::2/128"
