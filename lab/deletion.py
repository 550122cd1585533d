"""Deleting an object as the real registry does, for the API server and the controllers alike.

A scheduled Pod deleted with a grace period is only marked (deletionTimestamp, grace seconds):
its kubelet stops it and deletes it for good with grace 0. An object with finalizers is only
marked too, and goes once the last finalizer is removed. The propagation policy of a delete
becomes a finalizer the garbage collector acts on: Foreground ("foregroundDeletion": the
dependents go first) or Orphan ("orphan": the dependents lose their owner reference);
Background, the default, deletes at once and leaves the dependents to the collector.
"""
from __future__ import annotations

import copy
import datetime

from . import admission
from .resources import Resource

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
POLICY_FINALIZERS = {"Foreground": FOREGROUND, "Orphan": ORPHAN}


def _rfc3339(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_deletion(resource: Resource, obj: dict, grace: int | None, propagation: str | None,
                  now: datetime.datetime) -> dict | None:
    """What a DELETE turns `obj` into: None to remove it now, `obj` itself when nothing changes
    (a deletion already under way), else the marked copy to store."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    had = list(meta.get("finalizers") or [])
    finalizers = list(had)
    wanted = POLICY_FINALIZERS.get(propagation or "")
    if wanted and wanted not in finalizers:
        finalizers.append(wanted)
    deleting = bool(meta.get("deletionTimestamp"))
    seconds = 0
    terminal = (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")
    if resource.kind == "Pod" and spec.get("nodeName") and not terminal and grace != 0:
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds")
        seconds = 30 if grace is None else int(grace)
    if seconds == 0 and not finalizers:
        return None
    if deleting and finalizers == had and (seconds > 0 or meta.get("deletionGracePeriodSeconds") == 0):
        return obj                     # under way already: the kubelet or the collector finishes it
    new = copy.deepcopy(obj)
    m = new["metadata"]
    if not deleting:
        m["deletionTimestamp"] = _rfc3339(now + datetime.timedelta(seconds=seconds))
    m["deletionGracePeriodSeconds"] = seconds
    if finalizers:
        m["finalizers"] = finalizers
    return new


def is_finished(obj: dict) -> bool:
    """A marked object that waits for nothing any more (no finalizer, no grace period left to a
    kubelet): the registry removes it."""
    meta = obj.get("metadata") or {}
    return (bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")
            and not meta.get("deletionGracePeriodSeconds"))


def delete_object(store, cfg, resource: Resource, obj: dict, grace: int | None = None,
                  propagation: str | None = None) -> dict:
    """Delete `obj` (the stored object) as a DELETE request with these options would; returns the
    object as the response shows it."""
    now = datetime.datetime.now(datetime.UTC)
    new = plan_deletion(resource, obj, grace, propagation, now)
    if new is obj:
        return obj
    if new is not None:
        return store.update(resource, new)
    meta = obj["metadata"]
    gone = store.delete(resource, meta.get("namespace", ""), meta["name"])
    admission.release(store, cfg, resource, gone)
    return gone


def finish_if_done(store, cfg, resource: Resource, obj: dict) -> dict:
    """After an update: remove the object when its last finalizer went (see is_finished)."""
    if not is_finished(obj):
        return obj
    meta = obj["metadata"]
    gone = store.delete(resource, meta.get("namespace", ""), meta["name"])
    admission.release(store, cfg, resource, gone)
    return gone
