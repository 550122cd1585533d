"""host-gw: which remote nodes are not directly reachable, strict (agent start) and lenient plans."""
import pytest
from kubeweft.proxy.overlay import plan as ov
from kubeweft.proxy.overlay.hostgw import HostGwBackend
from kubeweft.proxy.overlay.vxlan import VxlanBackend

SUBNETS = ("192.168.56.0/24",)


def underlay(subnets=SUBNETS) -> ov.Underlay:
    return ov.Underlay("eth0", "192.168.56.11", 1500, subnets)


def node(i: int, addr: str | None = None, cidr: str | None = "auto") -> ov.NodeInfo:
    return ov.NodeInfo(f"node{i}", addr or f"192.168.56.{10 + i}",
                       f"10.244.{i}.0/24" if cidr == "auto" else cidr)


def unreachable(self_name: str, nodes, subnets=SUBNETS) -> list[ov.NodeInfo]:
    return HostGwBackend(underlay(subnets)).unreachable(ov.remote_nodes(self_name, nodes))


def test_unreachable_nodes_are_the_remote_ones_off_every_local_subnet():
    nodes = [node(1, "10.9.9.9"), node(2), node(3, "192.168.57.3"), node(4, "192.168.58.4", cidr=None)]
    # self (node1) never counts; a node without podCIDR has nothing to route yet
    assert [n.name for n in unreachable("node1", nodes)] == ["node3"]
    assert unreachable("node1", nodes, ("192.168.56.0/24", "192.168.57.0/24")) == []


def test_hostgw_routes_via_node_addresses_and_refuses_remote_l3():
    plan = ov.plan_overlay(HostGwBackend(underlay()), "node1", [node(1), node(2)])
    assert plan.routes == {ov.Route("10.244.2.0/24", "192.168.56.12", "eth0")}
    with pytest.raises(ov.OverlayConfigError, match="node3 .*not directly reachable"):
        ov.plan_overlay(HostGwBackend(underlay()), "node1", [node(1), node(3, addr="192.168.57.3")])


def test_strict_refuses_naming_every_bad_node_lenient_skips_them():
    nodes = [node(1), node(2), node(3, "192.168.57.3"), node(4, "172.16.0.4")]
    with pytest.raises(ov.OverlayConfigError) as e:
        ov.plan_overlay(HostGwBackend(underlay()), "node1", nodes)
    assert "node3 (192.168.57.3)" in str(e.value) and "node4 (172.16.0.4)" in str(e.value)
    assert "vxlan" in str(e.value)
    plan = ov.plan_overlay(HostGwBackend(underlay()), "node1", nodes, strict=False)
    assert plan.routes == {ov.Route("10.244.2.0/24", "192.168.56.12", "eth0")}


def test_vxlan_does_not_care_about_segments():
    nodes = [ov.NodeInfo("node1", "192.168.56.11", "10.244.1.0/24", "0e:00:00:00:00:01"),
             ov.NodeInfo("node2", "192.168.57.12", "10.244.2.0/24", "0e:00:00:00:00:02")]
    plan = ov.plan_overlay(VxlanBackend(underlay()), "node1", nodes)
    assert {f.dst for f in plan.fdb} == {"192.168.57.12"}
