"""The overlay's netlink side: the VXLAN device, reading what the kernel holds, applying ops.

Runs in the node's network namespace (the agent's). The plan and the diff are in overlay.py.
Routes that kubeweft installs carry their own protocol number, so a read-back finds exactly
ours and a restart of the agent can diff against the kernel instead of flushing.
"""
from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_PERMANENT

from .overlay import VXLAN_DEVICE, VXLAN_PORT, VXLAN_VNI, FdbEntry, Neighbour, Op, OverlayState, Route

RTPROT_KUBEWEFT = 0xAF      # our routes' rtm_protocol: unused by iproute2's rt_protos
RTNH_F_ONLINK = 4


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def ensure_vxlan_device(ipr: IPRoute, local_ip: str, underlay_dev: str, vtep_cidr: str, mtu: int,
                        name: str = VXLAN_DEVICE, vni: int = VXLAN_VNI, port: int = VXLAN_PORT) -> str:
    """Create (or keep) the VXLAN device with learning off, its VTEP address and MTU, up.
    Returns its MAC. An existing device with the right VNI/local/port is left as it is, so a
    restart of the agent does not flap it."""
    underlay = _index(ipr, underlay_dev)
    if underlay is None:
        raise RuntimeError(f"underlay device {underlay_dev} not found")
    idx = _index(ipr, name)
    if idx is not None:
        link = ipr.get_links(idx)[0]
        info = link.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info else None
        same = (data is not None and data.get_attr("IFLA_VXLAN_ID") == vni
                and data.get_attr("IFLA_VXLAN_LOCAL") == local_ip
                and data.get_attr("IFLA_VXLAN_PORT") == port)
        if not same:
            ipr.link("del", index=idx)
            idx = None
    if idx is None:
        ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local_ip,
                 vxlan_link=underlay, vxlan_port=port, vxlan_learning=0)
        idx = _index(ipr, name)
    ipr.link("set", index=idx, mtu=mtu, state="up")
    want = ipaddress.ip_interface(vtep_cidr)
    have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
    for addr, plen in have - {(str(want.ip), want.network.prefixlen)}:
        ipr.addr("del", index=idx, address=addr, prefixlen=plen)
    if (str(want.ip), want.network.prefixlen) not in have:
        ipr.addr("add", index=idx, address=str(want.ip), prefixlen=want.network.prefixlen)
    return ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")


def remove_vxlan_device(ipr: IPRoute, name: str = VXLAN_DEVICE) -> None:
    idx = _index(ipr, name)
    if idx is not None:
        ipr.link("del", index=idx)


def read_state(ipr: IPRoute, devices: list[str]) -> OverlayState:
    """Our routes (by protocol), the permanent neighbours and FDB entries on the overlay
    devices: what a previous run of the agent left in the kernel."""
    routes, neighbours, fdb = set(), set(), set()
    for dev in devices:
        idx = _index(ipr, dev)
        if idx is None:
            continue
        for r in ipr.get_routes(family=socket.AF_INET, oif=idx, proto=RTPROT_KUBEWEFT):
            if r.get_attr("RTA_OIF") != idx or r["proto"] != RTPROT_KUBEWEFT:
                continue
            dst = f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
            routes.add(Route(str(ipaddress.ip_network(dst)), r.get_attr("RTA_GATEWAY"), dev,
                             onlink=bool(r["flags"] & RTNH_F_ONLINK)))
        if dev != VXLAN_DEVICE and not dev.startswith("kw."):
            continue          # neighbours and FDB entries are ours only on the VXLAN device
        for n in ipr.get_neighbours(family=socket.AF_INET, ifindex=idx):
            if n["ifindex"] == idx and n["state"] & NUD_PERMANENT:
                neighbours.add(Neighbour(n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR"), dev))
        for f in ipr.fdb("dump", ifindex=idx):
            mac, dst = f.get_attr("NDA_LLADDR"), f.get_attr("NDA_DST")
            if f["ifindex"] == idx and dst and mac and mac != "00:00:00:00:00:00":
                fdb.add(FdbEntry(mac, dst, dev))
    return OverlayState(frozenset(routes), frozenset(neighbours), frozenset(fdb))


def apply_ops(ipr: IPRoute, ops: list[Op]) -> None:
    """Carry out the ops in order. Deleting something already gone is not an error."""
    for op in ops:
        item = op.item
        try:
            if isinstance(item, Route):
                kwargs = {"dst": item.dst, "gateway": item.gateway, "oif": _index(ipr, item.dev),
                          "proto": RTPROT_KUBEWEFT}
                if item.onlink:
                    kwargs["flags"] = RTNH_F_ONLINK
                ipr.route("del" if op.action == "delete" else "replace", **kwargs)
            elif isinstance(item, Neighbour):
                ipr.neigh("del" if op.action == "delete" else "replace", dst=item.ip, lladdr=item.mac,
                          ifindex=_index(ipr, item.dev), state=NUD_PERMANENT)
            else:
                ipr.fdb("del" if op.action == "delete" else "replace", ifindex=_index(ipr, item.dev),
                        lladdr=item.mac, dst=item.dst, state=NUD_PERMANENT, flags=NTF_SELF)
        except NetlinkError as e:
            if op.action == "delete" and e.code in (2, 3, 19):   # ENOENT, ESRCH, ENODEV: gone already
                continue
            raise
