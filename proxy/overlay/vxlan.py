"""The VXLAN backend, after flannel's: one VXLAN device per node whose address is the network
address of the node's podCIDR (10.244.1.0/32 on node 1), and for each remote node
  - a permanent neighbour: remote VTEP IP (its podCIDR's network address) -> remote VTEP MAC,
  - an FDB entry: remote VTEP MAC -> remote node address (where to send the UDP packets),
  - a route: remote podCIDR via remote VTEP IP, onlink, on the VXLAN device.
The node publishes its VTEP MAC as a Node annotation; learning is off, so the kernel knows
another node's pods only from what its agent published.

IPv6 podCIDRs get a second device, `kw-v6.1`, over the node's IPv6 underlay address, as
flannel's `flannel-v6.1`: its VTEP address is the IPv6 podCIDR's network address (/128), its MAC
is published as `kubeweft.io/vtep-mac-v6`, its FDB entries send to the other nodes' IPv6
addresses. The header it adds is 20 bytes longer (the outer IPv6 header is 40 bytes against
IPv4's 20), so its MTU is the underlay's minus 70.
"""
from __future__ import annotations

import ipaddress

from kubeweft.cni.datapath import IFA_F_NODAD, VXLAN_OVERHEAD
from pyroute2 import IPRoute

from . import kernel
from .backend import Backend
from .plan import FdbEntry, Neighbour, NodeInfo, OverlayState, Route, family_of, vtep_mac_annotation

VXLAN_DEVICE = "kw.1"
VXLAN_DEVICE_V6 = "kw-v6.1"
DEVICES = {4: VXLAN_DEVICE, 6: VXLAN_DEVICE_V6}
VXLAN_VNI = 1
VXLAN_PORT = 8472            # flannel's (and the Linux kernel's historic) VXLAN port
# outer IP (20 or 40) + UDP 8 + VXLAN 8 + inner Ethernet 14, by the underlay's family
OVERHEAD = {4: VXLAN_OVERHEAD, 6: VXLAN_OVERHEAD + 20}


def vtep_ip(pod_cidr: str) -> str:
    """A node's VTEP address: the network address of its podCIDR, as flannel uses."""
    return str(ipaddress.ip_network(pod_cidr, strict=False).network_address)


def ensure_vxlan_device(ipr: IPRoute, local_ip: str, underlay_dev: str, vtep_cidr: str, mtu: int,
                        name: str = VXLAN_DEVICE, vni: int = VXLAN_VNI, port: int = VXLAN_PORT) -> str:
    """Create (or keep) the VXLAN device with learning off and no outer UDP checksum, its VTEP
    address and MTU, up.
    Returns its MAC. An existing device with the right VNI/local/port is left as it is, so a
    restart of the agent does not flap it. `local_ip` and `vtep_cidr` are of one family: an
    IPv6 local address makes a VXLAN over IPv6."""
    family = family_of(local_ip)
    local = "vxlan_local6" if family == 6 else "vxlan_local"
    underlay = kernel.link_index(ipr, underlay_dev)
    if underlay is None:
        raise RuntimeError(f"underlay device {underlay_dev} not found")
    idx = kernel.link_index(ipr, name)
    if idx is not None:
        link = ipr.get_links(idx)[0]
        info = link.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info else None
        same = (data is not None and data.get_attr("IFLA_VXLAN_ID") == vni
                and data.get_attr(f"IFLA_{local.upper()}") == local_ip
                and data.get_attr("IFLA_VXLAN_PORT") == port
                and not data.get_attr("IFLA_VXLAN_UDP_CSUM"))
        if not same:
            ipr.link("del", index=idx)
            idx = None
    if idx is None:
        ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_link=underlay, vxlan_port=port,
                 vxlan_learning=0,
                 # no outer UDP checksum, as flannel's device (IPv4 VXLAN may send zero, RFC 7348);
                 # the inner packet keeps its own checksums
                 vxlan_udp_csum=0, **{local: local_ip})
        idx = kernel.link_index(ipr, name)
    ipr.link("set", index=idx, mtu=mtu, state="up")
    want = ipaddress.ip_interface(vtep_cidr)
    have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=kernel.AF[family])
            if a["scope"] == kernel.RT_SCOPE_UNIVERSE}      # the kernel's own link-local address stays
    for addr, plen in have - {(str(want.ip), want.network.prefixlen)}:
        ipr.addr("del", index=idx, address=addr, prefixlen=plen)
    if (str(want.ip), want.network.prefixlen) not in have:
        # an IPv6 VTEP address is usable at once, without DAD: it is a /128 no one else has
        ipr.addr("add", index=idx, address=str(want.ip), prefixlen=want.network.prefixlen,
                 **({"flags": IFA_F_NODAD} if family == 6 else {}))
    return ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")


def remove_vxlan_device(ipr: IPRoute, name: str = VXLAN_DEVICE) -> None:
    """Delete the device; its routes, neighbours and FDB entries go with it."""
    idx = kernel.link_index(ipr, name)
    if idx is not None:
        ipr.link("del", index=idx)


class VxlanBackend(Backend):
    name = "vxlan"

    @property
    def dev(self) -> str:
        return DEVICES[self.family]

    @property
    def pod_mtu(self) -> int:
        return self.underlay.mtu - OVERHEAD[self.family]

    def setup(self, ipr: IPRoute, pod_cidr: str) -> dict[str, str | None]:
        host = 128 if self.family == 6 else 32
        mac = ensure_vxlan_device(ipr, self.underlay.address, self.underlay.dev,
                                  f"{vtep_ip(pod_cidr)}/{host}", self.pod_mtu, name=self.dev)
        return {vtep_mac_annotation(self.family): mac}

    def plan_node(self, node: NodeInfo) -> OverlayState:
        if not node.vtep_mac:
            return OverlayState()      # its agent has not published its VTEP yet
        gw, mac = vtep_ip(node.pod_cidr), node.vtep_mac.lower()
        return OverlayState(
            routes=frozenset({Route(str(ipaddress.ip_network(node.pod_cidr, strict=False)), gw, self.dev,
                                    onlink=True)}),
            neighbours=frozenset({Neighbour(gw, mac, self.dev)}),
            fdb=frozenset({FdbEntry(mac, node.address, self.dev)}))

    def read_state(self, ipr: IPRoute) -> OverlayState:
        return OverlayState(frozenset(kernel.read_routes(ipr, self.dev, self.family)),
                            frozenset(kernel.read_neighbours(ipr, self.dev, self.family)),
                            frozenset(kernel.read_fdb(ipr, self.dev)))

    def cleanup(self, ipr: IPRoute) -> None:
        remove_vxlan_device(ipr, self.dev)
