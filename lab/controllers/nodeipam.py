"""Node IPAM: every Node gets a podCIDR, the next free /node_cidr_prefix of the cluster CIDR.

As kube-controller-manager's range allocator: a Node that already has a podCIDR keeps it (and that
range counts as used), a deleted Node's range becomes free again and is handed to the next Node
that needs one. The plan is pure; the controller only writes spec.podCIDR and spec.podCIDRs.
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


class NodeIPAMController(Reconciler):
    name = "node-ipam-controller"

    def prime(self) -> None:
        self.mark(ALL)

    def on_event(self, ev) -> None:
        if ev.resource is NODES and ev.type != "DELETED" and not (ev.obj.get("spec") or {}).get("podCIDR"):
            self.mark(ALL)

    def sync(self, key) -> None:
        nodes = self.store.list(NODES)[0]
        plan = plan_pod_cidrs([(n["metadata"]["name"], (n.get("spec") or {}).get("podCIDR", ""))
                               for n in nodes], self.cfg.cluster_cidr, self.cfg.node_cidr_prefix)
        for name, cidr in plan.items():
            if cidr is None:
                log.warning("no podCIDR left in %s for node %s", self.cfg.cluster_cidr, name)
                continue
            cur = self.store.get(NODES, "", name)
            new = dict(cur, spec=dict(cur.get("spec") or {}, podCIDR=cidr, podCIDRs=[cidr]))
            new["metadata"] = dict(cur["metadata"])
            self.store.update(NODES, new)
            self.writes += 1
