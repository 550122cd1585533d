"""Which of the node's interfaces carries node-to-node traffic, and with which address: the
address other nodes send VXLAN packets to (the VTEP) and use as host-gw next hop. Pure: the
kernel's facts come in (kernel.py reads them), the choice goes out.

A multi-homed node needs telling: under VirtualBox every VM has the same NAT address
(10.0.2.15) on its default-route interface, and a node that picked it would publish an
address every other node also has. In order, the first selector given wins (flannel's flags):

    --iface NAME            that interface, its first address of the family
    --iface-can-reach ADDR  the interface, and source address, of the route to ADDR (a local
                            ADDR, such as the API server on this very node: the interface
                            holding it)
    the node's address      --node-ip (the DaemonSet passes the downward API's status.hostIP),
                            else the Node's InternalIP: the interface holding it
    the default route       its interface, its first address of the family

The choice is made once per IP family the node's podCIDRs use (family 4 or 6): the IPv6 overlay
runs over the node's IPv6 underlay address. A selector of the other family still names the
interface (the route to an IPv4 --iface-can-reach, say), whose address of this family is taken;
a node address of the other family is no answer for this one.

A named interface or reachable address that is not there is a configuration error; a node
address that is on no local interface (a cloud's NAT'd address) falls through to the default
route.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .plan import OverlayConfigError, Underlay, family_of


@dataclass(frozen=True)
class Interface:
    index: int
    name: str
    mtu: int
    addresses: tuple[tuple[str, int], ...]      # global (address, prefix length) of both families, in the kernel's order


@dataclass(frozen=True)
class RouteTo:
    """The kernel's answer to `ip route get ADDR`."""
    oif: int
    source: str | None              # the route's preferred source address
    local: bool                     # ADDR is one of this node's own addresses


@dataclass(frozen=True)
class UnderlaySelector:
    iface: str | None = None
    can_reach: str | None = None
    node_ip: str | None = None


@dataclass(frozen=True)
class Choice:
    underlay: Underlay
    why: str                        # which selector decided, for the log


def _underlay(iface: Interface, address: str) -> Underlay:
    family = family_of(address)
    subnets = tuple(str(ipaddress.ip_interface(f"{a}/{plen}").network) for a, plen in iface.addresses
                    if family_of(a) == family)
    return Underlay(iface.name, address, iface.mtu, subnets)


def _holding(interfaces: list[Interface], address: str) -> Interface | None:
    return next((i for i in interfaces if any(a == address for a, _ in i.addresses)), None)


def _first_address(iface: Interface, what: str, family: int) -> str:
    found = next((a for a, _ in iface.addresses if family_of(a) == family), None)
    if found is None:
        raise OverlayConfigError(f"{what}: interface {iface.name} has no IPv{family} address")
    return found


def _same_family(address: str | None, family: int) -> bool:
    return bool(address) and family_of(address) == family


def choose_underlay(interfaces: list[Interface], selector: UnderlaySelector, default_oif: int | None,
                    route: RouteTo | None = None, family: int = 4) -> Choice:
    """The underlay `selector` picks among `interfaces` for the IP family `family`. default_oif:
    the interface of that family's default route; route: the kernel's route to
    selector.can_reach (None: there is none)."""
    by_index = {i.index: i for i in interfaces}
    node_ip = selector.node_ip if _same_family(selector.node_ip, family) else None
    if selector.iface:
        iface = next((i for i in interfaces if i.name == selector.iface), None)
        if iface is None:
            raise OverlayConfigError(f"--iface {selector.iface}: no such interface")
        address = node_ip if _holding([iface], node_ip or "") else \
            _first_address(iface, f"--iface {selector.iface}", family)
        return Choice(_underlay(iface, address), f"--iface {selector.iface}")
    if selector.can_reach:
        what = f"--iface-can-reach {selector.can_reach}"
        if route is None:
            raise OverlayConfigError(f"{what}: no route to it")
        iface = _holding(interfaces, selector.can_reach) if route.local else by_index.get(route.oif)
        if iface is None:
            raise OverlayConfigError(f"{what}: the route's interface {route.oif} is gone")
        if route.local and _same_family(selector.can_reach, family):
            address = selector.can_reach
        elif _same_family(route.source, family) and _holding([iface], route.source):
            address = route.source
        else:
            address = _first_address(iface, what, family)
        return Choice(_underlay(iface, address), f"{what} (via {iface.name})")
    if node_ip:
        iface = _holding(interfaces, node_ip)
        if iface is not None:
            return Choice(_underlay(iface, node_ip), f"the node's address {node_ip}")
    iface = by_index.get(default_oif) if default_oif is not None else None
    if iface is None:
        raise OverlayConfigError(f"no IPv{family} underlay: no selector given, no interface holds the node's "
                                 f"address ({node_ip or 'unknown'}) and there is no default route")
    why = "the default route" + (f" (the node's address {node_ip} is on no interface here)" if node_ip else "")
    return Choice(_underlay(iface, _first_address(iface, "the default route", family)), why)
