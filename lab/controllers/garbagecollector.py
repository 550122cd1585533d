"""The garbage collector: dependents follow their owners (metadata.ownerReferences).

As kube-controller-manager's: an object none of whose owners exists any more (no object of that
kind, namespace and name with that uid) is deleted, so deleting a Deployment deletes its
ReplicaSets, and they their Pods (background propagation, kubectl's default). An object that
still has an owner keeps it and loses its references to the owners that are gone.

An owner deleted with propagationPolicy=Foreground carries the finalizer foregroundDeletion: its
dependents that block it (blockOwnerDeletion) are deleted first, in the foreground too when they
have dependents of their own, and once none is left the finalizer goes and so does the owner.
One deleted with Orphan carries the finalizer orphan: its uid is taken out of its dependents'
references, then the finalizer goes. `plan_dependent` is pure; the index of owners to
dependents is kept from store events, for every kind the API server serves.
"""
from __future__ import annotations

import collections
import copy
import logging

from .. import deletion
from ..deletion import FOREGROUND, ORPHAN
from ..resources import BY_KIND, Resource
from .loop import Reconciler

log = logging.getLogger("kubeweft.lab.controllers.garbagecollector")

PRESENT, ABSENT, WAITING = "present", "absent", "waiting"   # what an owner reference points at

ObjKey = tuple[Resource, str, str]          # (resource, namespace, name)


def plan_dependent(refs: list[dict], states: dict[str, str], has_dependents: bool) -> tuple[str, object]:
    """What becomes of an object with these ownerReferences, given the state of each owner (by
    uid): ("keep", None), ("update", the references to keep) or ("delete", the propagation
    policy: Foreground when it blocks an owner deleting in the foreground and has dependents of
    its own, else None, which leaves its own finalizers to decide)."""
    if not refs:
        return "keep", None
    dangling = [r for r in refs if states.get(r.get("uid")) == ABSENT]
    waiting = [r for r in refs if states.get(r.get("uid")) == WAITING and r.get("blockOwnerDeletion")]
    solid = [r for r in refs if r not in dangling and r not in waiting]
    if solid:
        if dangling or waiting:
            return "update", solid
        return "keep", None
    if waiting and has_dependents:
        return "delete", "Foreground"
    return "delete", None


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class GarbageCollector(Reconciler):
    name = "garbage-collector"

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        self.dependents: dict[str, set[ObjKey]] = collections.defaultdict(set)   # owner uid -> dependents
        self.refs: dict[ObjKey, tuple[tuple[str, bool], ...]] = {}               # dependent -> (uid, blocks)
        self.uids: dict[ObjKey, str] = {}                                          # indexed object -> its uid
        self.live: set[str] = set()                 # the uids of every object in the store
        self.deleting: dict[str, ObjKey] = {}       # owners waiting on the collector (foreground/orphan)

    # --- the index ---
    def prime(self) -> None:
        for resource in set(BY_KIND.values()):
            for obj in self.store.list(resource)[0]:
                self._observe(resource, obj)

    def _key(self, resource: Resource, obj: dict) -> ObjKey:
        meta = obj["metadata"]
        return resource, meta.get("namespace", ""), meta["name"]

    def _observe(self, resource: Resource, obj: dict) -> None:
        key, meta = self._key(resource, obj), obj["metadata"]
        refs = tuple((r.get("uid", ""), bool(r.get("blockOwnerDeletion")))
                     for r in meta.get("ownerReferences") or [])
        self.uids[key] = meta.get("uid", "")
        self.live.add(meta.get("uid", ""))
        if refs != self.refs.get(key, ()):
            self._unindex(key)
            if refs:
                self.refs[key] = refs
                for uid, _ in refs:
                    self.dependents[uid].add(key)
                # an owner that exists and is not deleting leaves nothing to do (a pod made by its
                # ReplicaSet): its DELETED event or its finalizers bring the dependent back
                if any(uid not in self.live or uid in self.deleting for uid, _ in refs):
                    self.mark(("dependent", key))
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and (FOREGROUND in finalizers or ORPHAN in finalizers):
            self.deleting[meta.get("uid", "")] = key
            self.mark(("owner", key))
        else:
            self.deleting.pop(meta.get("uid", ""), None)

    def _unindex(self, key: ObjKey) -> None:
        for uid, _ in self.refs.pop(key, ()):
            deps = self.dependents.get(uid)
            if deps is not None:
                deps.discard(key)
                if not deps:
                    del self.dependents[uid]

    def on_event(self, ev) -> None:
        if ev.type != "DELETED":
            self._observe(ev.resource, ev.obj)
            return
        key = self._key(ev.resource, ev.obj)
        for uid, _ in self.refs.get(key, ()):
            if uid in self.deleting:                     # an owner waiting for this one to go
                self.mark(("owner", self.deleting[uid]))
        self._unindex(key)
        uid = self.uids.pop(key, ev.obj["metadata"].get("uid", ""))
        self.live.discard(uid)
        self.deleting.pop(uid, None)
        for dep in self.dependents.get(uid, ()):
            self.mark(("dependent", dep))

    # --- sync ---
    def sync(self, item: tuple[str, ObjKey]) -> None:
        role, (resource, ns, name) = item
        obj = self.store.try_get(resource, ns, name)
        if obj is None:
            return
        if role == "owner":
            self._sync_owner(resource, obj)
        elif not obj["metadata"].get("deletionTimestamp"):
            self._sync_dependent(resource, obj)

    def _owner_state(self, ref: dict, namespace: str) -> str:
        resource = BY_KIND.get(ref.get("kind", ""))
        if resource is None or resource.group != _group(ref.get("apiVersion", "")):
            return PRESENT                # a kind this server does not serve: never collected for it
        owner = self.store.try_get(resource, namespace if resource.namespaced else "", ref.get("name", ""))
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            return ABSENT
        meta = owner["metadata"]
        if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
            return WAITING
        return PRESENT

    def _sync_dependent(self, resource: Resource, obj: dict) -> None:
        meta = obj["metadata"]
        refs = list(meta.get("ownerReferences") or [])
        states = {r.get("uid", ""): self._owner_state(r, meta.get("namespace", "")) for r in refs}
        action, arg = plan_dependent(refs, states, bool(self.dependents.get(meta.get("uid", ""))))
        if action == "update":
            new = copy.deepcopy(obj)
            new["metadata"]["ownerReferences"] = arg
            self.store.update(resource, new)
            self.writes += 1
        elif action == "delete":
            deletion.delete_object(self.store, self.cfg, resource, obj, propagation=arg)
            self.writes += 1

    def _sync_owner(self, resource: Resource, obj: dict) -> None:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        uid = meta.get("uid", "")
        if not meta.get("deletionTimestamp"):
            return
        deps = sorted(self.dependents.get(uid, ()), key=lambda k: (k[0].plural, k[1], k[2]))
        if ORPHAN in finalizers:
            for dep in deps:
                self._drop_reference(dep, uid)
            finalizers.remove(ORPHAN)
        elif FOREGROUND in finalizers:
            blocking = [d for d in deps if (uid, True) in self.refs.get(d, ())]
            if blocking:
                for dep in blocking:
                    self.mark(("dependent", dep))
                return
            finalizers.remove(FOREGROUND)
        else:
            return
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = finalizers
        if not finalizers:
            del new["metadata"]["finalizers"]
        stored = self.store.update(resource, new)
        self.writes += 1
        deletion.finish_if_done(self.store, self.cfg, resource, stored)

    def _drop_reference(self, key: ObjKey, owner_uid: str) -> None:
        resource, ns, name = key
        obj = self.store.try_get(resource, ns, name)
        if obj is None:
            return
        new = copy.deepcopy(obj)
        new["metadata"]["ownerReferences"] = [r for r in obj["metadata"].get("ownerReferences") or []
                                              if r.get("uid") != owner_uid]
        if not new["metadata"]["ownerReferences"]:
            del new["metadata"]["ownerReferences"]
        self.store.update(resource, new)
        self.writes += 1
