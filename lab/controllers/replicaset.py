"""The ReplicaSet controller: keeps spec.replicas pods of the template running.

As kube-controller-manager's: pods are the ReplicaSet's by their controller ownerReference
(orphans its selector matches are adopted, owned pods it no longer matches are released); too
few active pods and it creates more (named <rs>-<5 random characters>, at most BURST a pass),
too many and it deletes the ones that cost least first (unscheduled before scheduled, pending
before running, unready before ready, pods on crowded nodes, ready for the shortest time, most
restarts, newest); status counts replicas, fully labelled, ready and available pods. The plans
(`plan_replicas`, `plan_rs_status`) are pure.
"""
from __future__ import annotations

import collections
import logging
import time

from ..resources import PODS, REPLICASETS
from .owners import OwnerIndex
from .podtemplate import PodView, parse_pod, render_pod
from .workload import WorkloadReconciler

log = logging.getLogger("kubeweft.lab.controllers.replicaset")

COMPONENT = "replicaset-controller"
BURST = 500                                       # kube-controller-manager's burstReplicas

_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def rank_for_deletion(pods: list[PodView]) -> list[PodView]:
    """`pods` in the order the real controller deletes them (controller.ActivePodsWithRanks)."""
    per_node = collections.Counter(p.node for p in pods if p.node)

    def cost(p: PodView) -> tuple:
        return (bool(p.node), _PHASE_RANK.get(p.phase, 0), p.ready, -per_node.get(p.node, 0),
                -(p.ready_since or 0.0) if p.ready else 0.0, -p.restarts, -p.created, p.name)
    return sorted(pods, key=cost)


def plan_replicas(replicas: int, pods: list[PodView]) -> tuple[int, list[str]]:
    """(how many pods to create, which to delete) so that `replicas` pods are active."""
    active = [p for p in pods if p.active]
    diff = len(active) - replicas
    if diff < 0:
        return min(-diff, BURST), []
    return 0, [p.name for p in rank_for_deletion(active)[:diff]]


def plan_rs_status(rs: dict, pods: list[PodView], now: float) -> tuple[dict, float | None]:
    """The ReplicaSet's status, and in how many seconds a pod turns available (minReadySeconds)."""
    spec = rs.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    active = [p for p in pods if p.active]
    labelled = [p for p in active if all(p.label(k) == v for k, v in template_labels.items())]
    ready = [p for p in active if p.ready]
    available = [p for p in ready if p.available(min_ready, now)]
    status: dict = {"replicas": len(active)}
    for field, n in (("fullyLabeledReplicas", len(labelled)), ("readyReplicas", len(ready)),
                     ("availableReplicas", len(available))):
        if n:
            status[field] = n
    status["observedGeneration"] = rs["metadata"].get("generation", 1)
    waits = [p.ready_since + min_ready - now for p in ready if p not in available and p.ready_since]
    return status, (max(0.0, min(waits)) + 0.1 if waits else None)


class ReplicaSetController(WorkloadReconciler):
    name = COMPONENT

    kind = REPLICASETS

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        self.pods = OwnerIndex()

    def prime(self) -> None:
        for pod in self.store.list(PODS)[0]:
            self.pods.put(pod)
        self.prime_owners()

    def on_event(self, ev) -> None:
        if ev.resource is REPLICASETS:
            self.track_owner(ev)
        elif ev.resource is PODS:
            self.track_owned(ev, self.pods)

    def sync(self, key: tuple[str, str]) -> None:
        rs = self.store.try_get(REPLICASETS, *key)
        if rs is None:
            return
        uid = rs["metadata"]["uid"]
        self.claim(rs, PODS, self.pods)
        if not rs["metadata"].get("deletionTimestamp"):
            create, delete = plan_replicas(int((rs.get("spec") or {}).get("replicas", 1)),
                                           [parse_pod(p) for p in self.pods.of(uid)])
            for _ in range(create):
                self.create_pod(rs, render_pod(rs, (rs.get("spec") or {}).get("template") or {}))
            for name in delete:
                self.delete_pod(rs, name)
        status, wait = plan_rs_status(rs, [parse_pod(p) for p in self.pods.of(uid)], time.time())
        if status != rs.get("status"):
            self.store.update(REPLICASETS, {"metadata": {"namespace": key[0], "name": key[1]},
                                            "status": status}, subresource="status")
            self.writes += 1
        if wait is not None:
            self.mark_later(key, wait)
