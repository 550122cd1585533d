"""What the workload controllers share about pods: the template hash that names ReplicaSets and
ControllerRevisions, pods made from a template, and the pod states they count (active, ready,
available after minReadySeconds). Pure.
"""
from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass

from .owners import controller_ref, controller_uid

# apimachinery's rand.SafeEncodeString alphabet: a hash never spells a word
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def compute_hash(template: dict, collision_count: int | None = None) -> str:
    """controller.ComputeHash: FNV-1a (32 bit) of the template, and of the collision count when
    there is one, as the decimal number's digits mapped onto the safe alphabet (7d4b9c8f5 and the
    like). The bytes hashed are canonical JSON, not Go's object dump, so the values differ from a
    real cluster's; their form and stability (same template, same hash) are the same."""
    h = 0x811C9DC5
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += collision_count.to_bytes(4, "little")
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(ch) % len(_SAFE)] for ch in str(h))


def epoch(ts: str | None) -> float | None:
    """An RFC 3339 timestamp as seconds since the epoch; None when absent or malformed."""
    if not ts:
        return None
    try:
        return datetime.datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    uid: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    node: str = ""
    phase: str = "Pending"
    ready: bool = False
    ready_since: float | None = None      # when Ready last turned True
    deleting: bool = False
    created: float = 0.0
    restarts: int = 0
    owner: str | None = None              # the uid of its controller

    @property
    def active(self) -> bool:
        """Counted by its controller: neither finished nor being deleted (FilterActivePods)."""
        return not self.deleting and self.phase not in ("Succeeded", "Failed")

    def available(self, min_ready: int, now: float) -> bool:
        """podutil.IsPodAvailable: ready, for at least minReadySeconds."""
        if not self.ready:
            return False
        return min_ready <= 0 or (self.ready_since is not None and self.ready_since + min_ready <= now)

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


def parse_pod(obj: dict) -> PodView:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return PodView(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""),
                   tuple(sorted((meta.get("labels") or {}).items())), spec.get("nodeName") or "",
                   status.get("phase") or "Pending", bool(ready and ready.get("status") == "True"),
                   epoch((ready or {}).get("lastTransitionTime")), bool(meta.get("deletionTimestamp")),
                   epoch(meta.get("creationTimestamp")) or 0.0,
                   sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or []),
                   controller_uid(obj))


def render_pod(owner: dict, template: dict, labels: dict | None = None, node: str = "") -> dict:
    """A pod from `owner`'s template (controller.GetPodFromTemplate): the template's labels,
    annotations and finalizers plus `labels`, a generateName of "<owner>-", owned by `owner`."""
    tmeta = template.get("metadata") or {}
    meta: dict = {"generateName": f"{owner['metadata']['name']}-",
                  "namespace": owner["metadata"]["namespace"],
                  "labels": {**(tmeta.get("labels") or {}), **(labels or {})},
                  "ownerReferences": [controller_ref(owner)]}
    for field in ("annotations", "finalizers"):
        if tmeta.get(field):
            meta[field] = copy.deepcopy(tmeta[field])
    spec = copy.deepcopy(template.get("spec") or {})
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
