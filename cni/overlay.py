"""Cross-node pod routing, driven by Node objects: the plan (pure) and its diff.

VXLAN mode follows flannel's vxlan backend: one VXLAN device per node whose address is the
network address of the node's podCIDR (10.244.1.0/32 on node 1), and for each remote node
  - a permanent neighbour: remote VTEP IP (its podCIDR's network address) -> remote VTEP MAC,
  - an FDB entry: remote VTEP MAC -> remote node address (where to send the UDP packets),
  - a route: remote podCIDR via remote VTEP IP, onlink, on the VXLAN device.
host-gw mode: a plain route to each remote podCIDR via the remote node address on the
underlay device, for nodes on one L2 segment.

Ordering (diff_overlay): a route is only ever added after its neighbour and FDB entry, and
removed before them, so there is never a route whose next hop cannot be resolved.
This module imports nothing that does I/O; cni/overlay_apply.py does the netlink work.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

VXLAN_DEVICE = "kw.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472            # flannel's (and the Linux kernel's historic) VXLAN port
VXLAN_OVERHEAD = 50          # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14

# Node annotations a kubeweft agent publishes about itself, as flannel does with its
# flannel.alpha.coreos.com/* annotations.
ANNOTATION_VTEP_MAC = "kubeweft.io/vtep-mac"
ANNOTATION_PUBLIC_IP = "kubeweft.io/public-ip"
ANNOTATION_BACKEND = "kubeweft.io/backend-type"

Mode = Literal["vxlan", "host-gw"]


@dataclass(frozen=True)
class NodeInfo:
    """What the overlay needs of one Node object."""
    name: str
    address: str                 # the node's address on the underlay (public-ip annotation or InternalIP)
    pod_cidr: str | None
    vtep_mac: str | None = None  # from the annotation; None until that node's agent published it


@dataclass(frozen=True)
class Route:
    dst: str                     # a remote podCIDR
    gateway: str
    dev: str
    onlink: bool = False


@dataclass(frozen=True)
class Neighbour:
    ip: str
    mac: str
    dev: str


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    dst: str
    dev: str


@dataclass(frozen=True)
class OverlayState:
    routes: frozenset[Route] = frozenset()
    neighbours: frozenset[Neighbour] = frozenset()
    fdb: frozenset[FdbEntry] = frozenset()


@dataclass(frozen=True)
class Op:
    action: Literal["add", "replace", "delete"]
    item: Route | Neighbour | FdbEntry

    def __str__(self) -> str:
        return f"{self.action} {self.item}"


class OverlayConfigError(ValueError):
    """A configuration the overlay cannot carry out (e.g. host-gw across L3 hops)."""


def vtep_ip(pod_cidr: str) -> str:
    """A node's VTEP address: the network address of its podCIDR, as flannel uses."""
    return str(ipaddress.ip_network(pod_cidr, strict=False).network_address)


def plan_vxlan(self_name: str, nodes: Iterable[NodeInfo], dev: str = VXLAN_DEVICE) -> OverlayState:
    routes, neighbours, fdb = set(), set(), set()
    for n in nodes:
        if n.name == self_name or not n.pod_cidr or not n.vtep_mac or not n.address:
            continue      # a node without its podCIDR or VTEP yet is not reachable yet
        gw = vtep_ip(n.pod_cidr)
        mac = n.vtep_mac.lower()
        neighbours.add(Neighbour(gw, mac, dev))
        fdb.add(FdbEntry(mac, n.address, dev))
        routes.add(Route(str(ipaddress.ip_network(n.pod_cidr, strict=False)), gw, dev, onlink=True))
    return OverlayState(frozenset(routes), frozenset(neighbours), frozenset(fdb))


def unreachable_nodes(self_name: str, nodes: Iterable[NodeInfo], local_subnets: Iterable[str]
                      ) -> list[NodeInfo]:
    """Remote nodes (with a podCIDR) whose address is on none of `local_subnets`: host-gw
    cannot route to their pods, since its next hop must be directly connected."""
    subnets = [ipaddress.ip_network(s, strict=False) for s in local_subnets]
    return sorted((n for n in nodes if n.name != self_name and n.pod_cidr and n.address
                   and not any(ipaddress.ip_address(n.address) in s for s in subnets)),
                  key=lambda n: n.name)


def plan_hostgw(self_name: str, nodes: Iterable[NodeInfo], dev: str,
                local_subnets: Iterable[str], strict: bool = True) -> OverlayState:
    """Routes via remote node addresses. Every remote node must be on a directly connected
    subnet of `dev` (`local_subnets`): if one is not, OverlayConfigError names it (strict, the
    agent's start), or it is left out of the plan (not strict: a node that joined later)."""
    nodes, subnets = list(nodes), list(local_subnets)
    bad = unreachable_nodes(self_name, nodes, subnets)
    if bad and strict:
        raise OverlayConfigError(
            "host-gw: " + "; ".join(f"node {n.name} ({n.address})" for n in bad)
            + f" not directly reachable on {dev} (local subnets: {', '.join(subnets) or 'none'}); "
            "use the vxlan backend")
    skip = {n.name for n in bad}
    routes = set()
    for n in nodes:
        if n.name == self_name or n.name in skip or not n.pod_cidr or not n.address:
            continue
        routes.add(Route(str(ipaddress.ip_network(n.pod_cidr, strict=False)), n.address, dev))
    return OverlayState(routes=frozenset(routes))


def plan_overlay(mode: Mode, self_name: str, nodes: Iterable[NodeInfo], *, vxlan_dev: str = VXLAN_DEVICE,
                 underlay_dev: str = "eth0", local_subnets: Iterable[str] = (),
                 strict: bool = True) -> OverlayState:
    if mode == "vxlan":
        return plan_vxlan(self_name, nodes, vxlan_dev)
    if mode == "host-gw":
        return plan_hostgw(self_name, nodes, underlay_dev, local_subnets, strict)
    raise OverlayConfigError(f"unknown backend {mode!r}: expected vxlan or host-gw")


def pod_mtu(mode: Mode, underlay_mtu: int) -> int:
    return underlay_mtu - VXLAN_OVERHEAD if mode == "vxlan" else underlay_mtu


def _keyed(items: Iterable, key) -> dict:
    return {key(i): i for i in items}


def diff_overlay(current: OverlayState, desired: OverlayState) -> list[Op]:
    """The operations that turn `current` into `desired`, in a safe order:
    FDB and neighbours first (add/replace), then routes (add/replace), then route deletions,
    then neighbour and FDB deletions. Entries already right produce no operation."""
    ops: list[Op] = []
    kinds = (
        (current.fdb, desired.fdb, lambda f: (f.mac, f.dev)),
        (current.neighbours, desired.neighbours, lambda n: (n.ip, n.dev)),
        (current.routes, desired.routes, lambda r: r.dst),
    )
    deletions: list[list[Op]] = []
    for cur_items, want_items, key in kinds:
        cur, want = _keyed(cur_items, key), _keyed(want_items, key)
        for k in sorted(want, key=str):
            if k not in cur:
                ops.append(Op("add", want[k]))
            elif cur[k] != want[k]:
                ops.append(Op("replace", want[k]))
        deletions.append([Op("delete", cur[k]) for k in sorted(cur, key=str) if k not in want])
    # routes go first, then neighbours, then FDB entries
    for group in reversed(deletions):
        ops.extend(group)
    return ops


def apply_ops_to_state(state: OverlayState, ops: Iterable[Op]) -> OverlayState:
    """What the kernel holds after `ops` (for tests and dry runs): pure."""
    routes = {r.dst: r for r in state.routes}
    neigh = {(n.ip, n.dev): n for n in state.neighbours}
    fdb = {(f.mac, f.dev): f for f in state.fdb}
    for op in ops:
        item = op.item
        table, key = ((routes, item.dst) if isinstance(item, Route) else
                      (neigh, (item.ip, item.dev)) if isinstance(item, Neighbour) else
                      (fdb, (item.mac, item.dev)))
        if op.action == "delete":
            table.pop(key, None)
        else:
            table[key] = item
    return OverlayState(frozenset(routes.values()), frozenset(neigh.values()), frozenset(fdb.values()))


def node_info_from_object(node: dict) -> NodeInfo:
    """A Node object (JSON form) to NodeInfo: the public-ip annotation wins over InternalIP."""
    meta = node.get("metadata", {})
    ann = meta.get("annotations") or {}
    address = ann.get(ANNOTATION_PUBLIC_IP)
    if not address:
        for a in (node.get("status", {}).get("addresses") or []):
            if a.get("type") == "InternalIP":
                address = a.get("address")
                break
    spec = node.get("spec", {})
    return NodeInfo(name=meta.get("name", ""), address=address or "",
                    pod_cidr=spec.get("podCIDR"), vtep_mac=ann.get(ANNOTATION_VTEP_MAC))
