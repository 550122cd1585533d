"""kubeweft.proxy.overlay.underlay: which interface and address carry the overlay on a multi-homed
node. The node here is a VirtualBox VM: nat0 holds the default route and 10.0.2.15, the address
every VM has; eth1 is the private network the nodes share."""
from __future__ import annotations

import pytest
from kubeweft.proxy.overlay.plan import OverlayConfigError, Underlay
from kubeweft.proxy.overlay.underlay import Interface, RouteTo, UnderlaySelector, choose_underlay

LO = Interface(1, "lo", 65536, (("127.0.0.1", 8),))
NAT = Interface(2, "nat0", 1500, (("10.0.2.15", 24),))
PRIVATE = Interface(3, "eth1", 1450, (("192.168.56.11", 24), ("172.16.0.11", 16)))
BARE = Interface(4, "eth2", 1500, ())
NODE = [LO, NAT, PRIVATE, BARE]
DEFAULT = NAT.index
ON_PRIVATE = Underlay("eth1", "192.168.56.11", 1450, ("192.168.56.0/24", "172.16.0.0/16"))


def choose(route: RouteTo | None = None, **selector):
    return choose_underlay(NODE, UnderlaySelector(**selector), DEFAULT, route)


def test_without_a_selector_the_default_route_wins_and_that_is_the_nat_address():
    assert choose().underlay == Underlay("nat0", "10.0.2.15", 1500, ("10.0.2.0/24",))


def test_iface_takes_that_interface_and_its_first_address():
    got = choose(iface="eth1")
    assert got.underlay == ON_PRIVATE and got.why == "--iface eth1"


def test_iface_keeps_the_node_address_when_that_interface_holds_it():
    assert choose(iface="eth1", node_ip="172.16.0.11").underlay.address == "172.16.0.11"
    assert choose(iface="eth1", node_ip="10.0.2.15").underlay.address == "192.168.56.11"


def test_iface_that_is_missing_or_has_no_address_is_a_configuration_error():
    with pytest.raises(OverlayConfigError, match="no such interface"):
        choose(iface="eth9")
    with pytest.raises(OverlayConfigError, match="eth2 has no IPv4 address"):
        choose(iface="eth2")


def test_can_reach_takes_the_routes_interface_and_source():
    got = choose(RouteTo(PRIVATE.index, "172.16.0.11", False), can_reach="172.16.5.5")
    assert got.underlay.dev == "eth1" and got.underlay.address == "172.16.0.11"
    assert "via eth1" in got.why


def test_can_reach_without_a_source_on_that_interface_takes_its_first_address():
    got = choose(RouteTo(PRIVATE.index, "10.0.2.15", False), can_reach="192.168.56.10")
    assert got.underlay == ON_PRIVATE


def test_can_reach_an_address_of_this_node_takes_the_interface_holding_it():
    # on the server itself the route to its own address is a local one, out of lo
    got = choose(RouteTo(LO.index, "192.168.56.11", True), can_reach="192.168.56.11")
    assert got.underlay == ON_PRIVATE


def test_can_reach_with_no_route_is_a_configuration_error():
    with pytest.raises(OverlayConfigError, match="no route"):
        choose(None, can_reach="198.51.100.1")


def test_the_node_address_picks_the_interface_holding_it():
    got = choose(node_ip="192.168.56.11")
    assert got.underlay == ON_PRIVATE and "192.168.56.11" in got.why


def test_a_node_address_on_no_interface_falls_through_to_the_default_route():
    got = choose(node_ip="203.0.113.7")
    assert got.underlay.dev == "nat0" and "on no interface" in got.why


def test_iface_wins_over_can_reach_which_wins_over_the_node_address():
    assert choose(RouteTo(NAT.index, "10.0.2.15", False), iface="eth1", can_reach="10.0.2.2",
                  node_ip="10.0.2.15").underlay.dev == "eth1"
    assert choose(RouteTo(PRIVATE.index, "192.168.56.11", False), can_reach="192.168.56.10",
                  node_ip="10.0.2.15").underlay.dev == "eth1"


def test_no_selector_and_no_default_route_is_an_error():
    with pytest.raises(OverlayConfigError, match="no default route"):
        choose_underlay(NODE, UnderlaySelector(), None)
