"""The scheduler: binds pods without spec.nodeName to a Node, fewest pods first.

A node fits when it is schedulable (not cordoned), its Ready condition is True, its labels match
the pod's nodeSelector and the pod tolerates its NoSchedule/NoExecute taints. Among fitting nodes
the one with the fewest non-terminal pods wins (ties by name), which spreads pods as the default
scheduler's balancing scores do. A pod that fits nowhere gets PodScheduled=False, reason
Unschedulable, with the real scheduler's message, and is tried again when Nodes change.
A pod that names its node, or another scheduler, is left alone. Binding writes spec.nodeName and
the PodScheduled=True condition, as the pods/binding subresource does.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

from ..resources import NODES, PODS
from ..store import now_rfc3339
from .loop import Reconciler

SCHEDULER_NAME = "default-scheduler"

SELECTOR_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
UNSCHEDULABLE = "node(s) were unschedulable"


@dataclass(frozen=True)
class NodeView:
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    ready: bool = False
    unschedulable: bool = False
    taints: tuple[tuple[str, str, str], ...] = ()     # (key, value, effect)


def parse_node(obj: dict) -> NodeView:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    taints = tuple((t.get("key", ""), t.get("value", ""), t.get("effect", ""))
                   for t in spec.get("taints") or [])
    return NodeView(meta.get("name", ""), tuple(sorted((meta.get("labels") or {}).items())), ready,
                    bool(spec.get("unschedulable")), taints)


def track_node(nodes: dict[str, NodeView], ev) -> bool:
    """Keep a name -> NodeView cache in step with a Node event; False when nothing placement
    reads changed (the kubelets' status heartbeats)."""
    name = ev.obj["metadata"]["name"]
    new = None if ev.type == "DELETED" else parse_node(ev.obj)
    if nodes.get(name) == new:
        return False
    if new is None:
        nodes.pop(name, None)
    else:
        nodes[name] = new
    return True


def tolerates(tolerations: list[dict], taint: tuple[str, str, str]) -> bool:
    key, value, effect = taint
    for t in tolerations:
        if t.get("effect") and t["effect"] != effect:
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t["key"] == key:
                return True
        elif t.get("key") == key and t.get("value", "") == value:
            return True
    return False


def _misfit(pod: dict, node: NodeView) -> str | None:
    """Why `node` cannot take `pod`, in the scheduler's words; None when it can."""
    spec = pod.get("spec") or {}
    if node.unschedulable:
        return UNSCHEDULABLE
    if not node.ready and not tolerates(spec.get("tolerations") or [], ("node.kubernetes.io/not-ready", "",
                                                                        "NoSchedule")):
        # tainted by the node lifecycle controller, or about to be: say so as the real message does
        return "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
    labels = dict(node.labels)
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return SELECTOR_MISMATCH
    for taint in node.taints:
        if taint[2] in ("NoSchedule", "NoExecute") and not tolerates(spec.get("tolerations") or [], taint):
            return f"node(s) had untolerated taint {{{taint[0]}: {taint[1]}}}"
    return None


def plan_binding(pod: dict, nodes: list[NodeView], counts: dict[str, int]) -> tuple[str | None, str]:
    """(node name, "") for the node to bind to, or (None, the FailedScheduling message)."""
    fits, why = [], collections.Counter()
    for node in nodes:
        reason = _misfit(pod, node)
        if reason is None:
            fits.append(node.name)
        else:
            why[reason] += 1
    if fits:
        return min(fits, key=lambda n: (counts.get(n, 0), n)), ""
    if not nodes:
        return None, "no nodes available to schedule pods"
    n = len(nodes)
    reasons = ", ".join(sorted(f"{c} {r}" for r, c in why.items()))
    return None, (f"0/{n} nodes are available: {reasons}. preemption: 0/{n} nodes are available: "
                  f"{n} Preemption is not helpful for scheduling.")


def wants_scheduling(pod: dict) -> bool:
    spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
    return (not spec.get("nodeName") and not meta.get("deletionTimestamp")
            and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))


def _with_condition(status: dict, cond: dict) -> dict | None:
    """status with the PodScheduled condition set to `cond`; None when it already says that."""
    conds = list(status.get("conditions") or [])
    for i, c in enumerate(conds):
        if c.get("type") == "PodScheduled":
            if all(c.get(k) == cond.get(k) for k in ("status", "reason", "message")):
                return None
            conds[i] = cond
            break
    else:
        conds.append(cond)
    return dict(status, conditions=conds)


class Scheduler(Reconciler):
    name = "default-scheduler"

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        self.nodes: dict[str, NodeView] = {}
        # kept in step by the hook, so a pass never lists every pod
        self.placed: dict[tuple[str, str], str] = {}             # non-terminal pod -> its node
        self.counts: collections.Counter = collections.Counter()  # node -> non-terminal pods on it
        self.pending: set[tuple[str, str]] = set()                # pods waiting for a node

    def prime(self) -> None:
        for n in self.store.list(NODES)[0]:
            self.nodes[n["metadata"]["name"]] = parse_node(n)
        for p in self.store.list(PODS)[0]:
            self._track(p, present=True)
        for key in self.pending:
            self.mark(key)

    def _track(self, pod: dict, present: bool) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        key = (meta.get("namespace", ""), meta["name"])
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        node = spec.get("nodeName") if present and not terminal else None
        was = self.placed.pop(key, None)
        if was:
            self.counts[was] -= 1
        if node:
            self.placed[key] = node
            self.counts[node] += 1
        if present and wants_scheduling(pod):
            self.pending.add(key)
        else:
            self.pending.discard(key)

    def on_event(self, ev) -> None:
        if ev.resource is PODS:
            self._track(ev.obj, present=ev.type != "DELETED")
            if ev.type != "DELETED" and wants_scheduling(ev.obj) and not self.syncing:
                self.mark((ev.obj["metadata"]["namespace"], ev.obj["metadata"]["name"]))
        elif ev.resource is NODES and track_node(self.nodes, ev):
            for key in self.pending:         # retry every pod still waiting for a node
                self.mark(key)

    def sync_batch(self, keys: list) -> None:
        nodes = sorted(self.nodes.values(), key=lambda n: n.name)
        for ns, name in keys:
            pod = self.store.try_get(PODS, ns, name)
            if pod is None or not wants_scheduling(pod):
                continue
            node, message = plan_binding(pod, nodes, self.counts)
            if node is not None:
                self._bind(pod, node)            # the hook counts the pod on its node
            elif self._set_condition(pod, {"type": "PodScheduled", "status": "False",
                                           "reason": "Unschedulable", "message": message,
                                           "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}):
                self._event(pod, "Warning", "FailedScheduling", message)

    def _bind(self, pod: dict, node: str) -> None:
        new = dict(pod, metadata=dict(pod["metadata"]), spec=dict(pod.get("spec") or {}, nodeName=node))
        bound = self.store.update(PODS, new)
        self.writes += 1
        self._set_condition(bound, {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                    "lastTransitionTime": now_rfc3339()})
        meta = pod["metadata"]
        self._event(bound, "Normal", "Scheduled",
                    f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}")

    def _set_condition(self, pod: dict, cond: dict) -> bool:
        status = _with_condition(pod.get("status") or {}, cond)
        if status is None:
            return False
        self.store.update(PODS, {"metadata": {"namespace": pod["metadata"]["namespace"],
                                              "name": pod["metadata"]["name"]},
                                 "status": status}, subresource="status")
        self.writes += 1
        return True

    def _event(self, pod: dict, kind: str, reason: str, message: str) -> None:
        self.record_event(pod, kind, reason, message, "Scheduling" if kind == "Warning" else "Binding")
