"""What the workload controllers (Deployment, ReplicaSet, DaemonSet) share: their caches of the
workloads they run and of what those own, kept from store events; claiming what a selector
matches (adopting orphans, releasing what no longer matches); making and deleting pods with the
events kube-controller-manager records for them."""
from __future__ import annotations

import copy

from .. import admission, deletion, errors
from ..resources import PODS, Resource
from .loop import Reconciler
from .owners import Key, OwnerIndex, controller_ref, key_of, plan_claim


class WorkloadReconciler(Reconciler):
    kind: Resource                   # the workload resource each subclass runs

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        self.owners: dict[str, Key] = {}          # uid -> key of every workload of self.kind

    # --- caches, from store events ---
    def prime_owners(self) -> None:
        for obj in self.store.list(self.kind)[0]:
            self.owners[obj["metadata"]["uid"]] = key_of(obj)
            self.mark(key_of(obj))

    def track_owner(self, ev) -> None:
        """A workload's own event: know it by uid, and sync it."""
        uid = ev.obj["metadata"]["uid"]
        if ev.type == "DELETED":
            self.owners.pop(uid, None)
        else:
            self.owners[uid] = key_of(ev.obj)
            self.mark(key_of(ev.obj))

    def track_owned(self, ev, index: OwnerIndex) -> None:
        """An event of something workloads own (a pod, a ReplicaSet, a revision): index it and
        sync the workload it belonged to and belongs to; an orphan with labels may be adopted,
        so the workloads of its namespace look at it."""
        key = key_of(ev.obj)
        if ev.type == "DELETED":
            owners = {index.remove(key)}
        else:
            owners = set(index.put(ev.obj))
            if owners == {None} and ev.obj["metadata"].get("labels"):
                for owner in self.owners.values():
                    if owner[0] == key[0]:
                        self.mark(owner)
        for uid in owners:
            if uid in self.owners:
                self.mark(self.owners[uid])

    # --- writes ---
    def claim(self, owner: dict, resource, index: OwnerIndex) -> None:
        """Adopt the orphans `owner` selects, release the objects it owns but no longer selects."""
        meta = owner["metadata"]
        plan = plan_claim(owner, index.of(meta["uid"]), index.orphans_in(meta.get("namespace", "")))
        for obj, new_owner in [(o, None) for o in plan.release] + [(o, owner) for o in plan.adopt]:
            new = copy.deepcopy(obj)
            refs = [r for r in new["metadata"].get("ownerReferences") or [] if not r.get("controller")]
            new["metadata"]["ownerReferences"] = refs + ([controller_ref(new_owner)] if new_owner else [])
            self.store.update(resource, new)
            self.writes += 1

    def create_pod(self, owner: dict, pod: dict) -> dict:
        try:
            made = self.store.create(PODS, admission.admit(self.store, self.cfg, PODS, "CREATE", pod, None))
        except errors.APIError as e:
            self.record_event(owner, "Warning", "FailedCreate", f"Error creating: {e.message}")
            raise
        self.writes += 1
        self.record_event(owner, "Normal", "SuccessfulCreate", f"Created pod: {made['metadata']['name']}")
        return made

    def delete_pod(self, owner: dict, name: str) -> None:
        """Delete as a client would: gracefully, the kubelet ends a running pod."""
        pod = self.store.try_get(PODS, owner["metadata"]["namespace"], name)
        if pod is None:
            return
        deletion.delete_object(self.store, self.cfg, PODS, pod)
        self.writes += 1
        self.record_event(owner, "Normal", "SuccessfulDelete", f"Deleted pod: {name}")
