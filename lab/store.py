"""The control plane's object store: versioned objects, a bounded event history, watchers.

One store per API server process, used from one asyncio thread only (the API server's loop and
the in-process controllers), so no locking. Objects are plain dicts in their JSON form.

Ownership: a dict handed to create/update becomes the store's and must not be touched by the
caller afterwards; a dict returned by get/list/events is shared and must be treated as read-only
(copy it before changing it). That keeps lists of 30k objects free of copies.

resourceVersion is one global counter, as etcd's revision is. Every write appends an Event to a
bounded history; a watch from a version older than the history holds raises Gone (HTTP 410),
which is what a real server does once etcd has compacted.
"""
from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import errors
from .resources import NAMESPACES, Resource, find

Predicate = Callable[[dict], bool]


# apimachinery's rand.String alphabet: no vowels (no words), no 0/1/3 (no look-alikes)
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(n: int = 5) -> str:
    """What the real server appends to a generateName (web-7d4b9c-x2kq5)."""
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(n))


# What a write to the status subresource changes besides .status: a Node's labels and annotations,
# as the real nodeStatusStrategy resets the spec alone (flannel and kubeweft publish their Node
# annotations with nodes/status rights, never `patch nodes`).
STATUS_METADATA = {"Node": ("labels", "annotations")}


def take_status_metadata(resource: Resource, meta: dict, written: dict) -> None:
    """Into `meta` (the stored object's, copied), the metadata a status write of `written` sets."""
    for key in STATUS_METADATA.get(resource.kind, ()):
        if written.get(key) is None:
            meta.pop(key, None)
        else:
            meta[key] = written[key]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    rv: int
    type: str                 # ADDED, MODIFIED, DELETED
    resource: Resource
    obj: dict
    old: dict | None          # the previous state, for MODIFIED and DELETED

    @property
    def namespace(self) -> str:
        return self.obj["metadata"].get("namespace", "")


class Watch:
    """One subscriber's queue of events. Iterate with `await watch.next(timeout)`; close when done."""

    def __init__(self, store: Store, resource: Resource | None, namespace: str | None,
                 predicate: Predicate | None):
        self._store = store
        self.resource = resource
        self.namespace = namespace
        self.predicate = predicate
        self.queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self.closed = False

    def offer(self, ev: Event) -> None:
        """Translate a store event into what this watcher sees, with selector transitions:
        an object that starts matching arrives as ADDED, one that stops matching as DELETED."""
        if self.resource is not None and ev.resource is not self.resource:
            return
        if self.namespace and ev.namespace != self.namespace:
            return
        if self.predicate is None:
            self.queue.put_nowait((ev.type, ev.obj))
            return
        now = self.predicate(ev.obj)
        if ev.type == "ADDED":
            if now:
                self.queue.put_nowait(("ADDED", ev.obj))
        elif ev.type == "DELETED":
            if ev.old is not None and self.predicate(ev.old):
                self.queue.put_nowait(("DELETED", ev.obj))
        else:
            before = ev.old is not None and self.predicate(ev.old)
            if before and now:
                self.queue.put_nowait(("MODIFIED", ev.obj))
            elif now:
                self.queue.put_nowait(("ADDED", ev.obj))
            elif before:
                self.queue.put_nowait(("DELETED", ev.obj))

    async def next(self, timeout: float | None = None) -> tuple[str, dict] | None:
        """The next (type, object), or None when `timeout` seconds pass first."""
        if not self.queue.empty():
            # wait_for(get(), 0) times out even with items queued (py3.11): a watch whose
            # bookmark is due would then spin without ever sending its queued events
            return self.queue.get_nowait()
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._store._watchers.discard(self)


class Store:
    def __init__(self, history: int = 200_000):
        self._objects: dict[Resource, dict[tuple[str, str], dict]] = collections.defaultdict(dict)
        self._history: collections.deque[Event] = collections.deque(maxlen=history)
        self._watchers: set[Watch] = set()
        self._rv = 1
        self._hooks: list[Callable[[Event], None]] = []

    # --- reading ---------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, resource: Resource, namespace: str, name: str) -> dict:
        obj = self._objects[resource].get((namespace if resource.namespaced else "", name))
        if obj is None:
            raise errors.not_found(resource.group, resource.plural, name)
        return obj

    def try_get(self, resource: Resource, namespace: str, name: str) -> dict | None:
        return self._objects[resource].get((namespace if resource.namespaced else "", name))

    def list(self, resource: Resource, namespace: str | None = None,
             predicate: Predicate | None = None) -> tuple[list[dict], int]:
        """Objects sorted by (namespace, name), and the resourceVersion they are current at."""
        items: Iterable[dict] = (o for (ns, _), o in sorted(self._objects[resource].items())
                                 if not namespace or ns == namespace)
        if predicate is not None:
            items = (o for o in items if predicate(o))
        return list(items), self._rv

    def count(self, resource: Resource) -> int:
        return len(self._objects[resource])

    # --- writing ---------------------------------------------------------------------------
    def create(self, resource: Resource, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + random_suffix()
        name = meta.get("name")
        if not name:
            raise errors.invalid(resource.group, resource.kind, "",
                                 [errors.Cause("metadata.name", "FieldValueRequired",
                                               "Required value: name or generateName is required")])
        ns = meta.get("namespace", "") if resource.namespaced else ""
        if resource.namespaced:
            if not ns:
                raise errors.bad_request("the namespace of the provided object does not match the "
                                         "namespace sent on the request")
            if resource.plural != "namespaces" and not self._namespace_exists(ns):
                raise errors.not_found("", "namespaces", ns)
        else:
            meta.pop("namespace", None)
        key = (ns, name)
        if key in self._objects[resource]:
            raise errors.already_exists(resource.group, resource.plural, name)
        obj["apiVersion"] = resource.api_version
        obj["kind"] = resource.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta.setdefault("generation", 1)
        meta.pop("deletionTimestamp", None)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[resource][key] = obj
        self._emit(Event(self._rv, "ADDED", resource, obj, None))
        return obj

    def update(self, resource: Resource, obj: dict, subresource: str | None = None) -> dict:
        """Replace an object. With subresource "status" only .status is taken from `obj` (and what
        STATUS_METADATA names); without,
        .status is kept from the stored object for kinds that have a status subresource.
        A resourceVersion in `obj` is a precondition (409 Conflict when stale)."""
        meta = obj.setdefault("metadata", {})
        ns = meta.get("namespace", "") if resource.namespaced else ""
        name = meta.get("name", "")
        old = self.get(resource, ns, name)
        want_rv = meta.get("resourceVersion")
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(resource.group, resource.plural, name,
                                  "the object has been modified; please apply your changes to the "
                                  "latest version and try again")
        if subresource == "status":
            new = copy.copy(old)
            new["metadata"] = dict(old["metadata"])
            take_status_metadata(resource, new["metadata"], meta)
            if "status" in obj:
                new["status"] = obj["status"]
        else:
            new = obj
            new["apiVersion"] = resource.api_version
            new["kind"] = resource.kind
            for keep in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if keep in old["metadata"]:
                    meta[keep] = old["metadata"][keep]
                elif keep in ("uid", "creationTimestamp"):
                    meta.pop(keep, None)
            if "status" in resource.subresources and "status" in old:
                new["status"] = old["status"]
            if new.get("spec") != old.get("spec"):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            else:
                meta["generation"] = old["metadata"].get("generation", 1)
        if new == old:
            return old          # a no-op write does not bump resourceVersion, as on a real server
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[resource][(ns, name)] = new
        self._emit(Event(self._rv, "MODIFIED", resource, new, old))
        return new

    def delete(self, resource: Resource, namespace: str, name: str) -> dict:
        ns = namespace if resource.namespaced else ""
        old = self.get(resource, ns, name)
        del self._objects[resource][(ns, name)]
        self._rv += 1
        gone = dict(old)
        gone["metadata"] = dict(old["metadata"], resourceVersion=str(self._rv))
        self._emit(Event(self._rv, "DELETED", resource, gone, old))
        if resource.plural == "namespaces":
            self._delete_namespace_contents(name)
        return gone

    # --- watching --------------------------------------------------------------------------
    def watch(self, resource: Resource | None, namespace: str | None = None,
              predicate: Predicate | None = None, since: int | None = None) -> Watch:
        """Events after resourceVersion `since` (all future ones when None). Raises Gone (410)
        when the history no longer reaches back to `since`."""
        w = Watch(self, resource, namespace, predicate)
        if since is not None and since < self._rv:
            oldest = self._history[0].rv if self._history else self._rv + 1
            if since < oldest - 1:
                raise errors.gone(f"too old resource version: {since} ({oldest - 1})")
            for ev in self._history:
                if ev.rv > since:
                    w.offer(ev)
        self._watchers.add(w)
        return w

    def add_hook(self, hook: Callable[[Event], None]) -> None:
        """Call `hook` synchronously after every write (controllers use it to notice work)."""
        self._hooks.append(hook)

    # --- snapshots --------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Every object and the resourceVersion, as JSON-ready data (not the event history: a
        watch from before a restore gets 410 Gone and re-lists, as after an etcd compaction)."""
        return {"resourceVersion": self._rv,
                "objects": [{"group": r.group, "plural": r.plural, "items": list(objs.values())}
                            for r, objs in self._objects.items() if objs]}

    def restore(self, data: dict) -> None:
        """Load a snapshot into an empty store: the same objects, uids and resourceVersions, and
        the counter where it was, so versions handed out afterwards never go backwards."""
        for entry in data.get("objects", []):
            resource = find(entry["group"], entry["plural"])
            if resource is None:
                raise ValueError(f"snapshot: unknown resource {entry['group']}/{entry['plural']}")
            for obj in entry["items"]:
                meta = obj["metadata"]
                ns = meta.get("namespace", "") if resource.namespaced else ""
                self._objects[resource][(ns, meta["name"])] = obj
        self._rv = max(self._rv, int(data.get("resourceVersion", 1)))

    # --- internals -------------------------------------------------------------------------
    def _emit(self, ev: Event) -> None:
        self._history.append(ev)
        for w in list(self._watchers):
            w.offer(ev)
        for hook in self._hooks:
            hook(ev)

    def _namespace_exists(self, ns: str) -> bool:
        return ("", ns) in self._objects[NAMESPACES]

    def _delete_namespace_contents(self, ns: str) -> None:
        for resource, objs in list(self._objects.items()):
            if resource.namespaced:
                for (ons, name) in [k for k in objs if k[0] == ns]:
                    self.delete(resource, ons, name)
