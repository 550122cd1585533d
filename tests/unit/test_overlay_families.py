"""The overlay's pure parts in each IP family: a Node object seen per family, the VXLAN and
host-gw plans for IPv6 podCIDRs, the MTU per underlay family, the underlay chosen per family."""
from __future__ import annotations

import pytest
from kubeweft.proxy.overlay import plan as ov
from kubeweft.proxy.overlay.hostgw import HostGwBackend
from kubeweft.proxy.overlay.underlay import Interface, RouteTo, UnderlaySelector, choose_underlay
from kubeweft.proxy.overlay.vxlan import VxlanBackend

ADDRESS = {4: "192.168.56.{}", 6: "2001:db8:56::{}"}
POD_CIDR = {4: "10.244.{}.0/24", 6: "fd00:10:244:{}::/64"}
SUBNET = {4: "192.168.56.0/24", 6: "2001:db8:56::/64"}
DEVICE = {4: "kw.1", 6: "kw-v6.1"}
FAMILIES = [4, 6]


def underlay(family: int, mtu: int = 1500) -> ov.Underlay:
    return ov.Underlay("eth0", ADDRESS[family].format(11), mtu, (SUBNET[family],))


def node(family: int, i: int, mac: str | None = "auto") -> ov.NodeInfo:
    return ov.NodeInfo(f"node{i}", ADDRESS[family].format(10 + i), POD_CIDR[family].format(i),
                       f"0e:00:00:00:0{family}:{i:02x}" if mac == "auto" else mac, family)


def node_object(families: tuple[int, ...], annotations: dict | None = None) -> dict:
    return {"metadata": {"name": "n", "annotations": annotations or {}},
            "spec": {"podCIDR": POD_CIDR[families[0]].format(7),
                     "podCIDRs": [POD_CIDR[f].format(7) for f in families]},
            "status": {"addresses": [{"type": "Hostname", "address": "n"}] + [
                {"type": "InternalIP", "address": ADDRESS[f].format(17)} for f in families]}}


@pytest.mark.parametrize("family", FAMILIES)
def test_vxlan_plan_per_family_is_flannels_shape(family):
    plan = ov.plan_overlay(VxlanBackend(underlay(family)), "node1", [node(family, 1), node(family, 2)])
    vtep = POD_CIDR[family].format(2).split("/")[0]          # the podCIDR's network address
    mac = f"0e:00:00:00:0{family}:02"
    assert plan.routes == {ov.Route(POD_CIDR[family].format(2), vtep, DEVICE[family], onlink=True)}
    assert plan.neighbours == {ov.Neighbour(vtep, mac, DEVICE[family])}
    assert plan.fdb == {ov.FdbEntry(mac, ADDRESS[family].format(12), DEVICE[family])}


@pytest.mark.parametrize("family", FAMILIES)
def test_hostgw_plan_per_family_routes_via_the_peers_address_of_that_family(family):
    backend = HostGwBackend(underlay(family))
    plan = ov.plan_overlay(backend, "node1", [node(family, 1), node(family, 2)])
    assert plan == ov.OverlayState(routes=frozenset({ov.Route(POD_CIDR[family].format(2),
                                                              ADDRESS[family].format(12), "eth0")}))
    far = ov.NodeInfo("node3", ADDRESS[family].replace("56", "57").format(13), POD_CIDR[family].format(3),
                      family=family)
    assert backend.unreachable([node(family, 2), far]) == [far]


def test_the_families_plans_join_without_touching_each_other():
    v4 = ov.plan_overlay(VxlanBackend(underlay(4)), "node1", [node(4, 1), node(4, 2)])
    v6 = ov.plan_overlay(VxlanBackend(underlay(6)), "node1", [node(6, 1), node(6, 2)])
    both = v4 | v6
    assert ov.diff_overlay(v4, both) == [ov.Op("add", e) for e in (*v6.fdb, *v6.neighbours, *v6.routes)]
    # the node leaving takes every entry of both families, routes first
    ops = ov.diff_overlay(both, ov.OverlayState())
    assert [type(o.item).__name__ for o in ops] == ["Route"] * 2 + ["Neighbour"] * 2 + ["FdbEntry"] * 2
    assert ov.apply_ops_to_state(both, ops) == ov.OverlayState()


def test_vxlan_mtu_depends_on_the_underlays_family():
    # outer IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14 = 50; an outer IPv6 header is 40
    assert VxlanBackend(underlay(4)).pod_mtu == 1450
    assert VxlanBackend(underlay(6)).pod_mtu == 1430
    assert VxlanBackend(underlay(6, mtu=9000)).pod_mtu == 8930
    assert HostGwBackend(underlay(6)).pod_mtu == 1500
    assert VxlanBackend(underlay(6)).family == 6 and VxlanBackend(underlay(6)).dev == "kw-v6.1"


@pytest.mark.parametrize("families", [(4,), (6,), (4, 6), (6, 4)])
def test_node_object_seen_per_family(families):
    obj = node_object(families, {ov.ANNOTATION_VTEP_MAC: "0e:00:00:00:00:04",
                                 ov.ANNOTATION_VTEP_MAC_V6: "0e:00:00:00:00:06"})
    for family in (4, 6):
        info = ov.node_info_from_object(obj, family)
        if family in families:
            assert (info.address, info.pod_cidr, info.family) == (
                ADDRESS[family].format(17), POD_CIDR[family].format(7), family)
        else:
            assert (info.address, info.pod_cidr) == ("", None)
        assert info.vtep_mac == f"0e:00:00:00:00:0{family}"
    assert ov.remote_nodes("self", [ov.node_info_from_object(obj, f) for f in (4, 6)]) == [
        ov.node_info_from_object(obj, f) for f in sorted(families)]


def test_the_public_ip_annotations_win_per_family_in_canonical_form():
    obj = node_object((4, 6), {ov.ANNOTATION_PUBLIC_IP: "10.0.0.9",
                               ov.ANNOTATION_PUBLIC_IP_V6: "2001:0db8:0057:0000::9"})
    assert ov.node_info_from_object(obj, 4).address == "10.0.0.9"
    assert ov.node_info_from_object(obj, 6).address == "2001:db8:57::9"
    # an annotation of the wrong family is no address for that family
    bad = node_object((6,), {ov.ANNOTATION_PUBLIC_IP_V6: "10.0.0.9"})
    assert ov.node_info_from_object(bad, 6).address == ADDRESS[6].format(17)


NIC = Interface(2, "eth1", 1500, (("192.168.56.11", 24), ("2001:db8:56::11", 64), ("2001:db8:99::11", 64)))
NAT = Interface(3, "nat0", 1500, (("10.0.2.15", 24), ("fd17::15", 64)))


def choose(family: int, route: RouteTo | None = None, default: int | None = NAT.index, **selector):
    return choose_underlay([NIC, NAT], UnderlaySelector(**selector), default, route, family)


def test_underlay_per_family_takes_that_familys_address_and_subnets():
    got = choose(6, node_ip="2001:db8:56::11")
    assert got.underlay == ov.Underlay("eth1", "2001:db8:56::11", 1500, ("2001:db8:56::/64", "2001:db8:99::/64"))
    assert choose(4, node_ip="192.168.56.11").underlay.subnets == ("192.168.56.0/24",)
    assert choose(6, iface="eth1").underlay.address == "2001:db8:56::11"


def test_a_selector_of_the_other_family_names_the_interface_not_the_address():
    # an IPv4 node address is no answer for IPv6: the IPv6 default route's interface is taken
    assert choose(6, node_ip="192.168.56.11").underlay.address == "fd17::15"
    # the route to an IPv4 address picks the interface; its IPv6 address carries the IPv6 overlay
    via_nic = RouteTo(NIC.index, "192.168.56.11", False)
    assert choose(6, via_nic, can_reach="192.168.56.1").underlay.address == "2001:db8:56::11"
    local = RouteTo(1, "192.168.56.11", True)
    assert choose(6, local, can_reach="192.168.56.11").underlay.address == "2001:db8:56::11"


def test_no_address_of_the_family_is_a_clear_error():
    v4_only = Interface(4, "eth2", 1500, (("192.168.57.11", 24),))
    with pytest.raises(ov.OverlayConfigError, match="eth2 has no IPv6 address"):
        choose_underlay([v4_only], UnderlaySelector(iface="eth2"), None, None, 6)
    with pytest.raises(ov.OverlayConfigError, match="no IPv6 underlay"):
        choose_underlay([v4_only], UnderlaySelector(), None, None, 6)
