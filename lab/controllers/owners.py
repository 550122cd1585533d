"""Owner references: who controls an object, and which objects each controller owns.

As kube-controller-manager's ControllerRefManager: a workload controls the objects whose
ownerReference with controller=true names its uid; it adopts orphans its selector matches
(unless it is being deleted) and releases the objects it owns that its selector no longer
matches. `plan_claim` is pure; `OwnerIndex` is the cache a controller keeps from store events.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

from ..selectors import selector_matches

Key = tuple[str, str]                    # (namespace, name)


def controller_ref(owner: dict) -> dict:
    """The ownerReference a controller puts on what it makes (metav1.NewControllerRef)."""
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def controller_uid(obj: dict) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def key_of(obj: dict) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class OwnerIndex:
    """The objects of one resource by the uid of their controller; orphans by namespace."""

    def __init__(self) -> None:
        self.owned: dict[str, dict[Key, dict]] = collections.defaultdict(dict)
        self.orphans: dict[str, dict[Key, dict]] = collections.defaultdict(dict)
        self.owner_of: dict[Key, str | None] = {}

    def put(self, obj: dict) -> tuple[str | None, str | None]:
        """Index `obj` (its current state); returns (previous controller uid, current one)."""
        key = key_of(obj)
        before = self.remove(key)
        uid = controller_uid(obj)
        self.owner_of[key] = uid
        if uid is None:
            self.orphans[key[0]][key] = obj
        else:
            self.owned[uid][key] = obj
        return before, uid

    def remove(self, key: Key) -> str | None:
        if key not in self.owner_of:
            return None
        uid = self.owner_of.pop(key)
        bucket = self.orphans[key[0]] if uid is None else self.owned[uid]
        bucket.pop(key, None)
        if not bucket:
            (self.orphans if uid is None else self.owned).pop(key[0] if uid is None else uid, None)
        return uid

    def of(self, uid: str) -> list[dict]:
        return list(self.owned.get(uid, {}).values())

    def orphans_in(self, namespace: str) -> list[dict]:
        return list(self.orphans.get(namespace, {}).values())


@dataclass
class Claim:
    keep: list[dict] = field(default_factory=list)       # owned and still matching
    adopt: list[dict] = field(default_factory=list)      # orphans to take
    release: list[dict] = field(default_factory=list)    # owned, no longer matching


def plan_claim(owner: dict, owned: list[dict], orphans: list[dict]) -> Claim:
    """Which objects `owner` keeps, adopts and releases, by its spec.selector."""
    selector = (owner.get("spec") or {}).get("selector") or {}
    deleting = bool(owner["metadata"].get("deletionTimestamp"))
    out = Claim()

    def matches(obj: dict) -> bool:
        try:
            return bool(selector) and selector_matches(selector, obj["metadata"].get("labels") or {})
        except (KeyError, ValueError):
            return False
    for obj in owned:
        (out.keep if matches(obj) or deleting else out.release).append(obj)
    if not deleting:
        out.adopt = [o for o in orphans if matches(o) and not o["metadata"].get("deletionTimestamp")]
    return out
