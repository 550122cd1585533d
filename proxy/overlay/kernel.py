"""The overlay's entries in the kernel, over netlink (pyroute2): the underlay, reading back
routes, neighbours and FDB entries, and carrying out a diff's operations.

Runs in the node's network namespace (the agent's). Routes that kubeweft installs carry their
own protocol number, so a read-back finds exactly ours and a restart of the agent can diff
against the kernel instead of flushing.
"""
from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_PERMANENT

from .plan import FdbEntry, Neighbour, Op, Route, family_of
from .underlay import Choice, Interface, RouteTo, UnderlaySelector, choose_underlay

RTPROT_KUBEWEFT = 0xAF      # our routes' rtm_protocol: unused by iproute2's rt_protos
RTNH_F_ONLINK = 4
RTN_LOCAL = 2                # rtm_type of a route to one of this host's own addresses
RT_SCOPE_UNIVERSE = 0        # a global address (not IPv6 link-local, not host)
AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def read_interfaces(ipr: IPRoute) -> list[Interface]:
    """Every interface with its MTU and global addresses of both families (IPv4 first; IPv6
    link-local addresses are never an underlay's: every interface has one)."""
    addrs: dict[int, list[tuple[str, int]]] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for a in ipr.get_addr(family=family):
            if a["scope"] == RT_SCOPE_UNIVERSE or family == socket.AF_INET:
                addrs.setdefault(a["index"], []).append((a.get_attr("IFA_ADDRESS"), a["prefixlen"]))
    return [Interface(link["index"], link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_MTU"),
                      tuple(addrs.get(link["index"], ()))) for link in ipr.get_links()]


def read_route_to(ipr: IPRoute, address: str) -> RouteTo | None:
    """The route the kernel would take to `address` (a lookup: nothing is sent); None when it
    has none."""
    try:
        found = ipr.route("get", dst=address)
    except NetlinkError:            # ENETUNREACH and the like
        return None
    if not found:
        return None
    r = found[0]
    return RouteTo(r.get_attr("RTA_OIF"), r.get_attr("RTA_PREFSRC"), r["type"] == RTN_LOCAL)


def discover_underlay(ipr: IPRoute, selector: UnderlaySelector, family: int = 4) -> Choice:
    """This node's underlay for IP family `family` as `selector` picks it (underlay.py) from
    the kernel's interfaces and routes."""
    defaults = ipr.get_default_routes(family=AF[family])
    default_oif = defaults[0].get_attr("RTA_OIF") if defaults else None
    route = read_route_to(ipr, selector.can_reach) if selector.can_reach else None
    return choose_underlay(read_interfaces(ipr), selector, default_oif, route, family)


def read_routes(ipr: IPRoute, dev: str, family: int = 4) -> set[Route]:
    """Our routes (by protocol) of `family` out of `dev`."""
    idx = link_index(ipr, dev)
    if idx is None:
        return set()
    routes = set()
    for r in ipr.get_routes(family=AF[family], oif=idx, proto=RTPROT_KUBEWEFT):
        if r.get_attr("RTA_OIF") != idx or r["proto"] != RTPROT_KUBEWEFT:
            continue
        dst = f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
        routes.add(Route(str(ipaddress.ip_network(dst)), r.get_attr("RTA_GATEWAY"), dev,
                         onlink=bool(r["flags"] & RTNH_F_ONLINK)))
    return routes


def read_neighbours(ipr: IPRoute, dev: str, family: int = 4) -> set[Neighbour]:
    """The permanent neighbours of `family` on `dev`."""
    idx = link_index(ipr, dev)
    if idx is None:
        return set()
    return {Neighbour(n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR"), dev)
            for n in ipr.get_neighbours(family=AF[family], ifindex=idx)
            if n["ifindex"] == idx and n["state"] & NUD_PERMANENT}


def read_fdb(ipr: IPRoute, dev: str) -> set[FdbEntry]:
    """The FDB entries on `dev` that send a MAC to a remote address (not the all-zeros default)."""
    idx = link_index(ipr, dev)
    if idx is None:
        return set()
    fdb = set()
    for f in ipr.fdb("dump", ifindex=idx):
        mac, dst = f.get_attr("NDA_LLADDR"), f.get_attr("NDA_DST")
        if f["ifindex"] == idx and dst and mac and mac != "00:00:00:00:00:00":
            fdb.add(FdbEntry(mac, dst, dev))
    return fdb


def apply_ops(ipr: IPRoute, ops: list[Op]) -> None:
    """Carry out the ops in order. Deleting something already gone is not an error."""
    for op in ops:
        item = op.item
        try:
            if isinstance(item, Route):
                kwargs = {"dst": item.dst, "gateway": item.gateway, "oif": link_index(ipr, item.dev),
                          "proto": RTPROT_KUBEWEFT, "family": AF[family_of(item.dst)]}
                if item.onlink:
                    kwargs["flags"] = RTNH_F_ONLINK
                ipr.route("del" if op.action == "delete" else "replace", **kwargs)
            elif isinstance(item, Neighbour):
                ipr.neigh("del" if op.action == "delete" else "replace", dst=item.ip, lladdr=item.mac,
                          ifindex=link_index(ipr, item.dev), state=NUD_PERMANENT, family=AF[family_of(item.ip)])
            else:
                ipr.fdb("del" if op.action == "delete" else "replace", ifindex=link_index(ipr, item.dev),
                        lladdr=item.mac, dst=item.dst, state=NUD_PERMANENT, flags=NTF_SELF)
        except NetlinkError as e:
            if op.action == "delete" and e.code in (2, 3, 19):   # ENOENT, ESRCH, ENODEV: gone already
                continue
            raise
