"""The node lifecycle controller's taints: a Node whose Ready condition is not True carries
node.kubernetes.io/not-ready:NoSchedule (Ready=False) or node.kubernetes.io/unreachable:NoSchedule
(Ready=Unknown), and loses it once Ready, as kube-controller-manager's TaintNodesByCondition does.
Kubelets register their Node with the not-ready taint already, so nothing that does not tolerate
it is scheduled there before the first pass. The plan is pure.
"""
from __future__ import annotations

import copy

from ..resources import BY_PLURAL
from .loop import Reconciler

NODES = BY_PLURAL[("", "nodes")]
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"


def ready_status(node: dict) -> str:
    """"True", "False" or "Unknown" (also when the kubelet has not posted a Ready condition)."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") or "Unknown"
    return "Unknown"


def plan_taints(taints: list[dict], ready: str) -> list[dict] | None:
    """The Node's taints with the condition taints in step with `ready`; None when unchanged."""
    want = {"False": NOT_READY, "Unknown": UNREACHABLE}.get(ready)
    ours = (NOT_READY, UNREACHABLE)
    kept = [t for t in taints if not (t.get("key") in ours and t.get("effect") == "NoSchedule")
            or t.get("key") == want]
    if want and not any(t.get("key") == want and t.get("effect") == "NoSchedule" for t in kept):
        kept.append({"key": want, "effect": "NoSchedule"})
    return None if kept == taints else kept


class NodeLifecycleController(Reconciler):
    name = "node-lifecycle-controller"

    def prime(self) -> None:
        for node in self.store.list(NODES)[0]:
            self.mark(node["metadata"]["name"])

    def on_event(self, ev) -> None:
        if ev.resource is NODES and ev.type != "DELETED" and not self.syncing:
            self.mark(ev.obj["metadata"]["name"])

    def sync(self, name) -> None:
        node = self.store.try_get(NODES, "", name)
        if node is None:
            return
        taints = plan_taints(list((node.get("spec") or {}).get("taints") or []), ready_status(node))
        if taints is None:
            return
        new = copy.deepcopy(node)
        if taints:
            new.setdefault("spec", {})["taints"] = taints
        else:
            new.get("spec", {}).pop("taints", None)
        self.store.update(NODES, new)
        self.writes += 1
