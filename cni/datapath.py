"""The pod datapath: the node bridge, a veth pair per pod, the pod's address and routes (pyroute2).

Runs in the node's network namespace (the agent's, or the shim's on the DEL fallback path): the
"node" side of every call is the calling thread's current netns. The pod side is reached through
a netlink socket opened inside the sandbox's netns on a throwaway thread (setns moves only that
thread), which costs well under a millisecond, where pyroute2's own netns= support forks a
helper process. No process is ever spawned here.

Layout of a wired pod:

    node netns:  bridge kw0 (a gateway/prefix per family, up, MTU)  <-port, hairpin->  kw<12 hex>
    pod netns:   lo up; <ifname> (the veth peer, created straight in the sandbox), an address
                 and a default route via the gateway per family

IPv6 is usable the moment ADD returns: the gateway and the pod's addresses are added without
duplicate address detection (IPAM made them unique; DAD would hold them "tentative" for ~1 s, and
a pod's first connection would fail), and the pod's interface gets accept_dad=0 before it goes up,
so that its link-local address (EUI-64 from its MAC, which the source checks allow) is too.
"""
from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kubeweft.cni import netns
from kubeweft.cni.errors import DATAPATH_FAILURE, INTERFACE_EXISTS, UNKNOWN_CONTAINER, CniError
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

HOST_VETH_PREFIX = "kw"
IFNAMSIZ = 15
LOOPBACK_IFINDEX = 1              # lo is ifindex 1 in every netns
IFF_UP = 0x1
_NETLINK_ROUTE = 0

# sysctls of the node netns (docs/architecture.md, decision 5): bridged pod traffic must see the inet hooks
SYSCTL_IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
SYSCTL_BRIDGE_NF = ("/proc/sys/net/bridge/bridge-nf-call-iptables",
                    "/proc/sys/net/bridge/bridge-nf-call-ip6tables")
# with an IPv6 range: the node routes IPv6 too ("all" is what turns routing on; it also makes
# interfaces ignore router advertisements unless accept_ra=2, as on any IPv6 router)
SYSCTL_IP6_FORWARD = "/proc/sys/net/ipv6/conf/all/forwarding"
SYSCTL_IP6_CONF = "/proc/sys/net/ipv6/conf/{ifname}/{key}"
# the pod's interface, before it goes up: IPv6 on, no DAD, the link-local address from the MAC
POD_IP6_SYSCTLS = (("disable_ipv6", "0"), ("accept_dad", "0"), ("addr_gen_mode", "0"))
IFA_F_NODAD = 0x02
IPV6_MIN_MTU = 1280               # RFC 8200: a link with less carries no IPv6 (the kernel refuses it)


@dataclass(frozen=True)
class BridgeInfo:
    name: str
    mac: str
    bridge_nf_call: bool = True     # False: br_netfilter's sysctls are absent in this netns


@dataclass(frozen=True)
class PodWiring:
    host_veth: str
    host_mac: str
    pod_ifname: str
    pod_mac: str
    sandbox: str


@dataclass(frozen=True)
class PodObservation:
    """What CHECK compares with prevResult."""
    ifname: str
    mac: str
    mtu: int
    addresses: list = field(default_factory=list)       # IPv4/IPv6Interface, global scope
    # routes of the main table through the interface, both families: (destination, gateway or
    # None for on-link)
    routes: list = field(default_factory=list)


# ---- pure helpers ------------------------------------------------------------------------

def host_veth_name(container_id: str, ifname: str) -> str:
    """kw + 12 hex digits of a hash of the attachment: deterministic, 14 chars, unique in practice
    (48 bits), so DEL and reconcile find the veth again from (container_id, ifname) alone."""
    digest = hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest()
    return f"{HOST_VETH_PREFIX}{digest[:12]}"


def random_mac() -> str:
    """A random unicast, locally administered MAC (as the kernel would pick, but known up front)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


# outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. Defined here, not with the VXLAN backend
# (which imports it), because the standalone CNI executable ships cni/ alone.
VXLAN_OVERHEAD = 50


def plan_pod_mtu(underlay: int) -> int:
    """The pod MTU when the agent is not told one: room for the default (VXLAN) backend's header."""
    return underlay - VXLAN_OVERHEAD


def _interfaces(value) -> list:
    """One address or several (IPv4/IPv6Interface or text) as a list of interfaces."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [ipaddress.ip_interface(str(v)) for v in items]


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def link_local(mac: str) -> ipaddress.IPv6Address:
    """The EUI-64 link-local address the kernel gives an interface with this MAC
    (addr_gen_mode 0): fe80::, the MAC with its universal/local bit flipped and ff:fe inside."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes((b[0] ^ 0x02,)) + b[1:3] + b"\xff\xfe" + b[3:6]
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui)


# ---- netlink handles ---------------------------------------------------------------------

def _netlink_socket() -> int:
    """A NETLINK_ROUTE socket in the calling thread's netns, as an fd IPRoute adopts."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE).detach()


def open_node() -> IPRoute:
    """A handle on the calling thread's current netns (the node's)."""
    return IPRoute(fileno=_netlink_socket())


def open_sandbox(netns_path: str) -> IPRoute:
    """A handle on the sandbox's netns; CniError(UNKNOWN_CONTAINER) if it does not exist."""
    try:
        # made on a throwaway thread inside the sandbox: the socket keeps that netns for life,
        # and the caller's thread never changes namespace
        return IPRoute(fileno=netns.call_in(netns_path, _netlink_socket))
    except FileNotFoundError:
        raise CniError(UNKNOWN_CONTAINER, f"network namespace {netns_path} does not exist") from None
    except OSError as e:
        raise CniError(UNKNOWN_CONTAINER, f"cannot enter network namespace {netns_path}", str(e)) from None


def link_index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _link(ipr: IPRoute, index: int):
    return ipr.get_links(index)[0]


def _write_sysctl(path: str, value: str) -> bool:
    """Set a sysctl of the calling thread's netns; False if this kernel/netns lacks it."""
    try:
        with open(path, "r+") as f:
            if f.read().strip() != value:
                f.seek(0)
                f.write(value)
        return True
    except FileNotFoundError:
        return False


# ---- the node side -----------------------------------------------------------------------

def ensure_bridge(name: str, gateway, mtu: int) -> BridgeInfo:
    """The pod bridge, with the gateway address of each family (one interface or a list), the
    MTU, up; also ip_forward=1 (and IPv6 forwarding with an IPv6 gateway) and
    bridge-nf-call-ip{,6}tables=1 in this netns. Idempotent.

    bridge-nf-call-* are per-netns sysctls once br_netfilter is loaded (it is here: a fresh
    netns shows /proc/sys/net/bridge with 1s). If they are absent we do not load the module
    (that would change the whole machine); BridgeInfo.bridge_nf_call then says False."""
    gateways = _interfaces(gateway)
    v6 = any(g.version == 6 for g in gateways)
    with open_node() as ipr:
        try:
            idx = link_index(ipr, name)
            if idx is None:
                ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
                idx = link_index(ipr, name)
                # pin the MAC: otherwise the bridge takes the lowest port MAC and changes with pods
                ipr.link("set", index=idx, address=_link(ipr, idx).get("address"))
            link = _link(ipr, idx)
            if link.get(("linkinfo", "kind")) != "bridge":
                raise CniError(DATAPATH_FAILURE, f"{name} exists and is not a bridge")
            if link.get("mtu") != mtu:
                ipr.link("set", index=idx, mtu=mtu)
            if v6:
                _write_sysctl(SYSCTL_IP6_CONF.format(ifname=name, key="disable_ipv6"), "0")
                # no DAD for the bridge's link-local address either: while it is tentative (~1 s
                # after the first pod's port comes up) the node's neighbour solicitations to its
                # pods wait, and so does the first IPv6 packet another node sends to a pod here
                _write_sysctl(SYSCTL_IP6_CONF.format(ifname=name, key="accept_dad"), "0")
            have = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=idx)}
            for gw in gateways:
                if (str(gw.ip), gw.network.prefixlen) not in have:
                    ipr.addr("add", index=idx, address=str(gw.ip), prefixlen=gw.network.prefixlen,
                             **({"flags": IFA_F_NODAD} if gw.version == 6 else {}))
            ipr.link("set", index=idx, state="up")
            mac = _link(ipr, idx).get("address")
        except NetlinkError as e:
            raise CniError(DATAPATH_FAILURE, f"cannot set up bridge {name}", str(e)) from None
    _write_sysctl(SYSCTL_IP_FORWARD, "1")
    if v6:
        _write_sysctl(SYSCTL_IP6_FORWARD, "1")
    nf = all(_write_sysctl(p, "1") for p in SYSCTL_BRIDGE_NF)
    return BridgeInfo(name=name, mac=mac, bridge_nf_call=nf)


def list_host_veths(bridge: str) -> set[str]:
    """Names of the ports of the bridge (the host veths of wired pods)."""
    with open_node() as ipr:
        idx = link_index(ipr, bridge)
        if idx is None:
            return set()
        return {link.get("ifname") for link in ipr.get_links() if link.get("master") == idx}


def list_links() -> set[str]:
    """Names of every link in the calling thread's netns."""
    with open_node() as ipr:
        return {link.get("ifname") for link in ipr.get_links()}


def underlay_mtu(bridge: str | None = None) -> int:
    """MTU of the device holding the default route (IPv4, else IPv6), else of the first
    non-loopback device that is up, else 1500; all in the calling thread's netns. The pod
    `bridge` and its ports are never the underlay: taking them made a restarted agent shrink the
    pod MTU by 50 at each start, below IPv6's minimum of 1280 after four."""
    with open_node() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in ipr.get_routes(family=family, table=254):
                if route["dst_len"] == 0 and route.get("oif"):
                    return _link(ipr, route.get("oif")).get("mtu")
        ours = link_index(ipr, bridge) if bridge else None
        for link in ipr.get_links():
            if link.get("ifname") != "lo" and link.get("operstate") in ("UP", "UNKNOWN") \
                    and link["flags"] & 1 and ours not in (link["index"], link.get("master")):
                return link.get("mtu")
    return 1500


# ---- a pod -------------------------------------------------------------------------------

def wire_pod(netns_path: str, ifname: str, address, gateway,
             bridge: str, mtu: int, host_veth: str, mac: str | None = None) -> PodWiring:
    """Create the veth pair (the pod end straight in the sandbox, named ifname), attach the host
    end to the bridge with hairpin on, give the pod its addresses and a default route per family
    (`address` and `gateway`: one each, or lists in the same order). On any failure everything
    made here is removed and CniError raised."""
    addresses = _interfaces(address)
    gws = [g.ip for g in _interfaces(gateway)]
    if len(host_veth) > IFNAMSIZ or len(ifname) > IFNAMSIZ:
        raise CniError(DATAPATH_FAILURE, f"interface name too long: {host_veth!r} / {ifname!r}")
    host_mac, pod_mac = random_mac(), (mac or random_mac())
    pod = open_sandbox(netns_path)
    created = False
    try:
        with open_node() as node:
            try:
                br = link_index(node, bridge)
                if br is None:
                    raise CniError(DATAPATH_FAILURE, f"bridge {bridge} does not exist")
                # Few round trips (each costs ~0.5 ms in pyroute2): the pair is made with its
                # MACs, MTU, master and the peer's name and netns in one request, and a taken name
                # is found from EEXIST instead of a lookup before every ADD.
                for attempt in (1, 2):
                    try:
                        _add_veth(node, host_veth, host_mac, br, mtu, netns_path, ifname, pod_mac)
                        break
                    except NetlinkError as e:
                        if e.code != errno.EEXIST or attempt == 2:
                            raise
                        if link_index(pod, ifname) is not None:
                            raise CniError(INTERFACE_EXISTS,
                                           f"interface {ifname} already exists in {netns_path}") from None
                        # the host name is ours for this (container, ifname) and the sandbox lacks
                        # ifname: a leftover of an earlier failed attempt
                        _delete(node, host_veth)
                created = True
                host = link_index(node, host_veth)
                # one request: IFLA_BRPORT_MODE 1 (hairpin), and IFF_UP in the header ("state" would
                # be taken for IFLA_BRPORT_STATE here)
                node.brport("set", index=host, mode=1, flags=IFF_UP, change=IFF_UP)
                pod.link("set", index=LOOPBACK_IFINDEX, state="up")
                inner = link_index(pod, ifname)
                if any(a.version == 6 for a in addresses):
                    netns.call_in(netns_path, _write_pod_sysctls, ifname)
                pod.link("set", index=inner, state="up")
                for addr, gw in zip(addresses, gws, strict=True):
                    six = addr.version == 6
                    pod.addr("add", index=inner, address=str(addr.ip), prefixlen=addr.network.prefixlen,
                             **({"flags": IFA_F_NODAD} if six else {}))
                    pod.route("add", dst="::/0" if six else "0.0.0.0/0", gateway=str(gw), oif=inner,
                              family=_family(addr.version))
                return PodWiring(host_veth=host_veth, host_mac=host_mac, pod_ifname=ifname,
                                 pod_mac=pod_mac, sandbox=str(netns_path))
            except BaseException as e:
                if created:
                    _delete(node, host_veth)            # takes the pod end with it
                if isinstance(e, CniError):
                    raise
                if isinstance(e, (NetlinkError, OSError, ValueError)):
                    raise CniError(DATAPATH_FAILURE, f"wiring {ifname} in {netns_path} failed",
                                   str(e)) from None
                raise
    finally:
        pod.close()


def _write_pod_sysctls(ifname: str) -> None:
    """In the pod's netns (the calling thread's): IPv6 on its interface, without DAD."""
    for key, value in POD_IP6_SYSCTLS:
        if not _write_sysctl(SYSCTL_IP6_CONF.format(ifname=ifname, key=key), value):
            raise CniError(DATAPATH_FAILURE, "IPv6 is not available in the pod's network namespace",
                           f"no {SYSCTL_IP6_CONF.format(ifname=ifname, key=key)}")


def _add_veth(node: IPRoute, host_veth: str, host_mac: str, bridge_index: int, mtu: int,
              netns_path: str, ifname: str, pod_mac: str) -> None:
    nsfd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        node.link("add", ifname=host_veth, kind="veth", mtu=mtu, address=host_mac, master=bridge_index,
                  peer={"ifname": ifname, "mtu": mtu, "address": pod_mac, "net_ns_fd": nsfd})
    finally:
        os.close(nsfd)


def unwire_pod(netns_path: str | None, ifname: str, host_veth: str) -> None:
    """Remove the pod's veth pair. Idempotent and best-effort: a missing netns, a missing veth or
    a second call are fine."""
    with open_node() as node:
        if _delete(node, host_veth):
            return          # veth_dellink removes the peer in the same request: the pod end is gone
    if not netns_path:
        return
    try:
        pod = open_sandbox(netns_path)
    except CniError:
        return                                          # the sandbox is gone: nothing left in it
    try:
        idx = link_index(pod, ifname)
        if idx is not None and _link(pod, idx).get(("linkinfo", "kind")) == "veth":
            _delete(pod, ifname)                        # the host end was already gone
    finally:
        pod.close()


def inspect_pod(netns_path: str, ifname: str) -> PodObservation | None:
    """The live state of the pod interface, or None if the sandbox or the interface is missing."""
    try:
        pod = open_sandbox(netns_path)
    except CniError:
        return None
    try:
        idx = link_index(pod, ifname)
        if idx is None:
            return None
        link = _link(pod, idx)
        addrs = [ipaddress.ip_interface(f"{a.get('address')}/{a['prefixlen']}")
                 for a in pod.get_addr(index=idx) if a["scope"] == 0]     # global: not link-local
        routes = []
        for family, anywhere in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            for r in pod.get_routes(family=family, table=254):
                if r.get("oif") != idx:
                    continue
                dst = ipaddress.ip_network(f"{r.get('dst') or anywhere}/{r['dst_len']}")
                gw = r.get("gateway")
                routes.append((dst, ipaddress.ip_address(gw) if gw else None))
        return PodObservation(ifname=ifname, mac=link.get("address"), mtu=link.get("mtu"),
                              addresses=addrs, routes=routes)
    finally:
        pod.close()


def _delete(ipr: IPRoute, ifname: str) -> bool:
    """Delete the link by name; False if there was none."""
    idx = link_index(ipr, ifname)
    if idx is None:
        return False
    try:
        ipr.link("del", index=idx)
    except NetlinkError as e:
        if e.code != errno.ENODEV:
            raise CniError(DATAPATH_FAILURE, f"cannot delete {ifname}", str(e)) from None
        return False
    return True


def sandbox_exists(netns_path: str | None) -> bool:
    return bool(netns_path) and Path(netns_path).exists()
