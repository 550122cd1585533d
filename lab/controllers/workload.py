"""The writes the workload controllers (Deployment, ReplicaSet, DaemonSet) share: claiming what
their selector matches (adopting orphans, releasing what no longer matches), and making and
deleting their pods with the events kube-controller-manager records for them."""
from __future__ import annotations

import copy

from .. import admission, deletion, errors
from ..resources import PODS
from .loop import Reconciler
from .owners import OwnerIndex, controller_ref, plan_claim


class WorkloadReconciler(Reconciler):
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

    def mark_namespace(self, keys, namespace: str) -> None:
        """Mark the owners of `namespace` among `keys` (an orphan there may be theirs to adopt)."""
        for key in keys:
            if key[0] == namespace:
                self.mark(key)

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
