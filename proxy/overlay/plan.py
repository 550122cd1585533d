"""The overlay's pure core: what a Node says about itself, the kernel entries that reach the
other nodes' pods (routes, neighbours, FDB entries), the plan for a set of Nodes and the diff
that turns one state into another in a safe order.

Which entries reach one remote node is the backend's to say (Backend.plan_node, backend.py);
plan_overlay asks it for every remote node. Nothing here does I/O.

Each IP family the cluster's podCIDRs use is planned on its own (flannel's v6 backend does the
same): a node's IPv6 podCIDR is reached over its IPv6 underlay address, with annotations of their
own (`-v6`); NodeInfo is one node seen in one family, and the union of the families' states is
what the kernel holds.

Ordering (diff_overlay): a route is only ever added after its neighbour and FDB entry, and
removed before them, so there is never a route whose next hop cannot be resolved.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .backend import Backend

# Node annotations a kubeweft agent publishes about itself, as flannel does with its
# flannel.alpha.coreos.com/* annotations.
ANNOTATION_VTEP_MAC = "kubeweft.io/vtep-mac"
ANNOTATION_PUBLIC_IP = "kubeweft.io/public-ip"
ANNOTATION_BACKEND = "kubeweft.io/backend-type"
# the IPv6 underlay's, as flannel's public-ip-v6 and backend-v6-data (a plain MAC here, as the
# IPv4 one is)
ANNOTATION_VTEP_MAC_V6 = "kubeweft.io/vtep-mac-v6"
ANNOTATION_PUBLIC_IP_V6 = "kubeweft.io/public-ip-v6"

FAMILIES = (4, 6)


def public_ip_annotation(family: int) -> str:
    return ANNOTATION_PUBLIC_IP_V6 if family == 6 else ANNOTATION_PUBLIC_IP


def vtep_mac_annotation(family: int) -> str:
    return ANNOTATION_VTEP_MAC_V6 if family == 6 else ANNOTATION_VTEP_MAC


def family_of(address_or_cidr: str) -> int:
    """4 or 6, of an address or a CIDR."""
    return ipaddress.ip_network(address_or_cidr, strict=False).version


def of_family(values: Iterable[str], family: int) -> str | None:
    """The first of `values` (addresses or CIDRs) in `family`; unparsable ones are skipped."""
    for v in values:
        try:
            if family_of(v) == family:
                return v
        except ValueError:
            continue
    return None


class OverlayConfigError(ValueError):
    """A configuration the overlay cannot carry out (e.g. host-gw across L3 hops)."""


@dataclass(frozen=True)
class NodeInfo:
    """What the overlay needs of one Node object, in one IP family."""
    name: str
    address: str                 # the node's address on the underlay (public-ip annotation or InternalIP)
    pod_cidr: str | None
    vtep_mac: str | None = None  # from the annotation; None until that node's agent published it
    family: int = 4


@dataclass(frozen=True)
class Underlay:
    """This node's end of the underlay: the device carrying node-to-node traffic."""
    dev: str
    address: str
    mtu: int = 1500
    subnets: tuple[str, ...] = ()    # the device's directly connected subnets, in the address's family

    @property
    def family(self) -> int:
        return family_of(self.address)


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

    def __or__(self, other: OverlayState) -> OverlayState:
        return OverlayState(self.routes | other.routes, self.neighbours | other.neighbours,
                            self.fdb | other.fdb)


@dataclass(frozen=True)
class Op:
    action: Literal["add", "replace", "delete"]
    item: Route | Neighbour | FdbEntry

    def __str__(self) -> str:
        return f"{self.action} {self.item}"


def internal_ip(node: dict, family: int) -> str | None:
    """The Node's first InternalIP of `family` (JSON form)."""
    return of_family([a.get("address") or "" for a in (node.get("status", {}).get("addresses") or [])
                      if a.get("type") == "InternalIP"], family)


def node_info_from_object(node: dict, family: int = 4) -> NodeInfo:
    """A Node object (JSON form) seen in `family`: its podCIDR of that family (spec.podCIDRs,
    else spec.podCIDR), its address of that family (the public-ip annotation wins over the
    InternalIPs) and the VTEP MAC it published for it. Addresses come back in canonical form,
    as the kernel reports them."""
    meta = node.get("metadata", {})
    ann = meta.get("annotations") or {}
    address = of_family([ann.get(public_ip_annotation(family)) or ""], family) or internal_ip(node, family)
    spec = node.get("spec", {})
    pod_cidr = of_family(spec.get("podCIDRs") or [spec.get("podCIDR") or ""], family)
    return NodeInfo(name=meta.get("name", ""), address=str(ipaddress.ip_address(address)) if address else "",
                    pod_cidr=pod_cidr, vtep_mac=ann.get(vtep_mac_annotation(family)), family=family)


def remote_nodes(self_name: str, nodes: Iterable[NodeInfo]) -> list[NodeInfo]:
    """The other nodes that have a podCIDR and an address: the ones there is something to route to."""
    return sorted((n for n in nodes if n.name != self_name and n.pod_cidr and n.address),
                  key=lambda n: n.name)


def plan_overlay(backend: Backend, self_name: str, nodes: Iterable[NodeInfo],
                 strict: bool = True) -> OverlayState:
    """The entries that reach every other node's pods. A node the backend cannot reach raises
    OverlayConfigError when strict (the agent's start), else is left out of the plan (a node
    that joined later; the controller logs it)."""
    remote = remote_nodes(self_name, nodes)
    if strict:
        backend.check(remote)
    unreachable = {n.name for n in backend.unreachable(remote)}
    state = OverlayState()
    for n in remote:
        if n.name not in unreachable:
            state |= backend.plan_node(n)
    return state


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
