"""Pure plans of the node IPAM, scheduler and load-balancer controllers."""
import pytest
from kubeweft.lab.config import LabConfig
from kubeweft.lab.controllers.loadbalancer import plan_lb_ip, plan_lb_ips
from kubeweft.lab.controllers.nodeipam import plan_node_pod_cidrs, plan_pod_cidrs
from kubeweft.lab.controllers.scheduler import NodeView, parse_node, plan_binding


def test_pod_cidrs_next_free_and_reused():
    got = plan_pod_cidrs([("node2", ""), ("node1", ""), ("node3", "10.244.0.0/24")], "10.244.0.0/16", 24)
    assert got == {"node1": "10.244.1.0/24", "node2": "10.244.2.0/24"}
    # node1 was deleted: its range is the lowest free one again
    assert plan_pod_cidrs([("node2", "10.244.2.0/24"), ("node3", "10.244.0.0/24"), ("node4", "")],
                          "10.244.0.0/16", 24) == {"node4": "10.244.1.0/24"}
    assert plan_pod_cidrs([("a", "10.0.0.0/25"), ("b", "10.0.0.128/25"), ("c", "")],
                          "10.0.0.0/24", 25) == {"c": None}


def node(name, ready=True, labels=None, unschedulable=False, taints=()):
    return NodeView(name, tuple(sorted((labels or {}).items())), ready, unschedulable, tuple(taints))


def pod(**spec):
    return {"metadata": {"name": "h2-p", "namespace": "default"}, "spec": spec}


def test_scheduler_fewest_pods_first_and_ties_by_name():
    nodes = [node("node1"), node("node2"), node("node3")]
    assert plan_binding(pod(), nodes, {"node1": 2, "node2": 1, "node3": 1}) == ("node2", "")
    assert plan_binding(pod(), nodes, {}) == ("node1", "")


def test_scheduler_filters_and_message():
    nodes = [node("node1", ready=False), node("node2", labels={"disk": "hdd"}),
             node("node3", unschedulable=True), node("node4", labels={"disk": "ssd"})]
    assert plan_binding(pod(nodeSelector={"disk": "ssd"}), nodes, {"node4": 9}) == ("node4", "")
    name, msg = plan_binding(pod(nodeSelector={"disk": "nvme"}), nodes, {})
    assert name is None
    assert msg == ("0/4 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, "
                   "1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector. "
                   "preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.")
    assert plan_binding(pod(), [], {}) == (None, "no nodes available to schedule pods")


def test_scheduler_taints_and_tolerations():
    tainted = node("node1", taints=[("dedicated", "db", "NoSchedule")])
    assert plan_binding(pod(), [tainted, node("node2")], {"node2": 5}) == ("node2", "")
    tol = [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]
    assert plan_binding(pod(tolerations=tol), [tainted, node("node2")], {"node2": 5}) == ("node1", "")


def test_parse_node_ready_condition():
    n = parse_node({"metadata": {"name": "n", "labels": {"a": "b"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert n.ready and n.labels == (("a", "b"),)
    assert not parse_node({"metadata": {"name": "n"}, "status": {"conditions": [
        {"type": "Ready", "status": "Unknown"}]}}).ready


def lb(name, ip=None, cls=None, have=None, type_="LoadBalancer"):
    spec = {"type": type_}
    if ip:
        spec["loadBalancerIP"] = ip
    if cls:
        spec["loadBalancerClass"] = cls
    status = {"loadBalancer": {"ingress": [{"ip": have, "ipMode": "VIP"}]} if have else {}}
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec, "status": status}


def test_lb_ip_skips_network_and_router_honours_request():
    net = "198.51.100.0/24"
    assert plan_lb_ip(lb("a"), {}, net) == "198.51.100.2"
    used = {"198.51.100.2": ("default", "a")}
    assert plan_lb_ip(lb("b"), used, net) == "198.51.100.3"
    assert plan_lb_ip(lb("a", have="198.51.100.2"), used, net) == "198.51.100.2"    # keeps its own
    assert plan_lb_ip(lb("b", ip="198.51.100.50"), used, net) == "198.51.100.50"
    assert plan_lb_ip(lb("b", ip="198.51.100.2"), used, net) is None                # taken: pending
    assert plan_lb_ip(lb("b", ip="10.0.0.1"), used, net) is None                    # outside the pool
    assert plan_lb_ip(lb("b", cls="example.com/other"), used, net) is None          # not ours
    assert plan_lb_ip(lb("b", type_="NodePort"), used, net) is None


@pytest.mark.parametrize("ip_family,first", [("ipv4", ["10.244.0.0/24"]), ("ipv6", ["fd00:10:244::/64"]),
                                             ("dual", ["10.244.0.0/24", "fd00:10:244::/64"])])
def test_node_pod_cidrs_one_per_family_and_kept(ip_family, first):
    cfg = LabConfig(name="p", ip_family=ip_family)
    ranges = [(c, cfg.node_cidr_prefix_for(4 if "." in c else 6)) for c in cfg.cluster_cidrs]
    got = plan_node_pod_cidrs([("node1", ()), ("node2", ())], ranges)
    assert got["node1"] == first
    assert len(got["node2"]) == len(first) and got["node2"] != first
    # a node with its ranges keeps them; the next one gets the lowest free range of each family
    again = plan_node_pod_cidrs([("node1", tuple(got["node2"])), ("node3", ())], ranges)
    assert again == {"node3": first}


def test_node_pod_cidrs_all_or_none():
    ranges = [("10.0.0.0/24", 25), ("fd00::/63", 64)]
    full = plan_node_pod_cidrs([("a", ("10.0.0.0/25", "fd00::/64")), ("b", ("10.0.0.128/25", "fd00:0:0:1::/64")),
                                ("c", ())], ranges)
    assert full == {"c": None}


def test_lb_ips_one_per_service_family_in_its_order():
    subnets = ("198.51.100.0/24", "2001:db8:100::/64")
    dual = lb("a")
    dual["spec"]["ipFamilies"] = ["IPv6", "IPv4"]
    assert plan_lb_ips(dual, {}, subnets) == ["2001:db8:100::2", "198.51.100.2"]
    dual["status"]["loadBalancer"] = {"ingress": [{"ip": "198.51.100.9"}, {"ip": "2001:db8:100::9"}]}
    assert plan_lb_ips(dual, {}, subnets) == ["2001:db8:100::9", "198.51.100.9"]        # keeps its own
    v6 = lb("b")
    v6["spec"]["ipFamilies"] = ["IPv6"]
    assert plan_lb_ips(v6, {"2001:db8:100::2": ("default", "x")}, subnets) == ["2001:db8:100::3"]
    assert plan_lb_ips(v6, {}, subnets[:1]) == []                                        # no IPv6 pool
    assert plan_lb_ips(lb("c", ip="2001:db8:100::50"), {}, subnets) == ["2001:db8:100::50"]
    assert plan_lb_ips(lb("d"), {}, subnets[:1]) == ["198.51.100.2"]                     # no families yet
