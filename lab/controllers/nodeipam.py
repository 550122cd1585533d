"""Node IPAM: every Node gets a podCIDR per cluster CIDR (one per IP family, primary first), the
next free range of the family's node prefix (/24 and /64 by default).

As kube-controller-manager's range allocator with several --cluster-cidr ranges: a Node that
already has podCIDRs keeps them (and they count as used), a Node gets all its ranges or none (one
family full leaves it without any, logged), a deleted Node's ranges become free again and are
handed to the next Node that needs them. spec.podCIDR is the first of spec.podCIDRs. The plan is
pure; the controller only writes spec.podCIDR and spec.podCIDRs.
"""
from __future__ import annotations

import ipaddress
import logging

from ..resources import NODES
from .loop import Reconciler

log = logging.getLogger("kubeweft.lab.controllers.nodeipam")

ALL = "nodes"            # one key: a pass looks at every Node (there are few)


def plan_pod_cidrs(nodes: list[tuple[str, str]], cluster_cidr: str, prefix: int) -> dict[str, str | None]:
    """{node: cidr} for each (name, current podCIDR) pair without one; None when the range is full.
    Ranges in use are skipped; the lowest free one goes to the first node by name."""
    net = ipaddress.ip_network(cluster_cidr)
    used = set()
    for _, cidr in nodes:
        if cidr:
            try:
                used.add(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                pass
    free = (s for s in net.subnets(new_prefix=prefix) if not any(s.overlaps(u) for u in used))
    out: dict[str, str | None] = {}
    for name, cidr in sorted(nodes):
        if not cidr:
            nxt = next(free, None)
            out[name] = str(nxt) if nxt is not None else None
    return out


def plan_node_pod_cidrs(nodes: list[tuple[str, tuple[str, ...]]], ranges: list[tuple[str, int]]
                        ) -> dict[str, list[str] | None]:
    """{node: podCIDRs, one per (cluster CIDR, prefix) in that order} for each (name, podCIDRs)
    pair without any; None when one of the ranges is full."""
    per_range = []
    for cidr, prefix in ranges:
        version = ipaddress.ip_network(cidr).version
        have = [(name, next((c for c in cidrs if ipaddress.ip_network(c, strict=False).version == version), ""))
                if cidrs else (name, "") for name, cidrs in nodes]
        per_range.append(plan_pod_cidrs(have, cidr, prefix))
    out: dict[str, list[str] | None] = {}
    for name, cidrs in sorted(nodes):
        if not cidrs:
            got = [plan[name] for plan in per_range]
            out[name] = None if None in got else [c for c in got if c is not None]
    return out


class NodeIPAMController(Reconciler):
    name = "node-ipam-controller"

    def prime(self) -> None:
        self.mark(ALL)

    def on_event(self, ev) -> None:
        if ev.resource is NODES and ev.type != "DELETED" and not _pod_cidrs(ev.obj):
            self.mark(ALL)

    def sync(self, key) -> None:
        nodes = self.store.list(NODES)[0]
        ranges = [(c, self.cfg.node_cidr_prefix_for(ipaddress.ip_network(c).version)) for c in self.cfg.cluster_cidrs]
        plan = plan_node_pod_cidrs([(n["metadata"]["name"], _pod_cidrs(n)) for n in nodes], ranges)
        for name, cidrs in plan.items():
            if cidrs is None:
                log.warning("no podCIDR left in %s for node %s", ",".join(self.cfg.cluster_cidrs), name)
                continue
            cur = self.store.get(NODES, "", name)
            new = dict(cur, spec=dict(cur.get("spec") or {}, podCIDR=cidrs[0], podCIDRs=cidrs))
            new["metadata"] = dict(cur["metadata"])
            self.store.update(NODES, new)
            self.writes += 1


def _pod_cidrs(node: dict) -> tuple[str, ...]:
    spec = node.get("spec") or {}
    return tuple(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
