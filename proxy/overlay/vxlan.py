"""The VXLAN backend, after flannel's: one VXLAN device per node whose address is the network
address of the node's podCIDR (10.244.1.0/32 on node 1), and for each remote node
  - a permanent neighbour: remote VTEP IP (its podCIDR's network address) -> remote VTEP MAC,
  - an FDB entry: remote VTEP MAC -> remote node address (where to send the UDP packets),
  - a route: remote podCIDR via remote VTEP IP, onlink, on the VXLAN device.
The node publishes its VTEP MAC as a Node annotation; learning is off, so the kernel knows
another node's pods only from what its agent published.
"""
from __future__ import annotations

import ipaddress
import socket

from kubeweft.cni.datapath import VXLAN_OVERHEAD
from pyroute2 import IPRoute

from . import kernel
from .backend import Backend
from .plan import ANNOTATION_VTEP_MAC, FdbEntry, Neighbour, NodeInfo, OverlayState, Route

VXLAN_DEVICE = "kw.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472            # flannel's (and the Linux kernel's historic) VXLAN port


def vtep_ip(pod_cidr: str) -> str:
    """A node's VTEP address: the network address of its podCIDR, as flannel uses."""
    return str(ipaddress.ip_network(pod_cidr, strict=False).network_address)


def ensure_vxlan_device(ipr: IPRoute, local_ip: str, underlay_dev: str, vtep_cidr: str, mtu: int,
                        name: str = VXLAN_DEVICE, vni: int = VXLAN_VNI, port: int = VXLAN_PORT) -> str:
    """Create (or keep) the VXLAN device with learning off and no outer UDP checksum, its VTEP
    address and MTU, up.
    Returns its MAC. An existing device with the right VNI/local/port is left as it is, so a
    restart of the agent does not flap it."""
    underlay = kernel.link_index(ipr, underlay_dev)
    if underlay is None:
        raise RuntimeError(f"underlay device {underlay_dev} not found")
    idx = kernel.link_index(ipr, name)
    if idx is not None:
        link = ipr.get_links(idx)[0]
        info = link.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info else None
        same = (data is not None and data.get_attr("IFLA_VXLAN_ID") == vni
                and data.get_attr("IFLA_VXLAN_LOCAL") == local_ip
                and data.get_attr("IFLA_VXLAN_PORT") == port
                and not data.get_attr("IFLA_VXLAN_UDP_CSUM"))
        if not same:
            ipr.link("del", index=idx)
            idx = None
    if idx is None:
        ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local_ip,
                 vxlan_link=underlay, vxlan_port=port, vxlan_learning=0,
                 # no outer UDP checksum, as flannel's device (IPv4 VXLAN may send zero, RFC 7348);
                 # the inner packet keeps its own checksums
                 vxlan_udp_csum=0)
        idx = kernel.link_index(ipr, name)
    ipr.link("set", index=idx, mtu=mtu, state="up")
    want = ipaddress.ip_interface(vtep_cidr)
    have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
    for addr, plen in have - {(str(want.ip), want.network.prefixlen)}:
        ipr.addr("del", index=idx, address=addr, prefixlen=plen)
    if (str(want.ip), want.network.prefixlen) not in have:
        ipr.addr("add", index=idx, address=str(want.ip), prefixlen=want.network.prefixlen)
    return ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")


def remove_vxlan_device(ipr: IPRoute, name: str = VXLAN_DEVICE) -> None:
    """Delete the device; its routes, neighbours and FDB entries go with it."""
    idx = kernel.link_index(ipr, name)
    if idx is not None:
        ipr.link("del", index=idx)


class VxlanBackend(Backend):
    name = "vxlan"
    dev = VXLAN_DEVICE

    @property
    def pod_mtu(self) -> int:
        return self.underlay.mtu - VXLAN_OVERHEAD

    def setup(self, ipr: IPRoute, pod_cidr: str) -> dict[str, str | None]:
        mac = ensure_vxlan_device(ipr, self.underlay.address, self.underlay.dev,
                                  f"{vtep_ip(pod_cidr)}/32", self.pod_mtu, name=self.dev)
        return {ANNOTATION_VTEP_MAC: mac}

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
        return OverlayState(frozenset(kernel.read_routes(ipr, self.dev)),
                            frozenset(kernel.read_neighbours(ipr, self.dev)),
                            frozenset(kernel.read_fdb(ipr, self.dev)))

    def cleanup(self, ipr: IPRoute) -> None:
        remove_vxlan_device(ipr, self.dev)
