"""The kinds the lab's API server serves, and what discovery says of them. Pure data."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    group: str                  # "" for core
    version: str
    plural: str                 # the URL segment, and the store's key
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    singular: str = ""
    categories: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",), "namespace"),
    Resource("", "v1", "nodes", "Node", False, ("no",), ("status",), "node"),
    Resource("", "v1", "pods", "Pod", True, ("po",), ("status",), "pod", ("all",)),
    Resource("", "v1", "services", "Service", True, ("svc",), ("status",), "service", ("all",)),
    Resource("", "v1", "events", "Event", True, ("ev",), (), "event"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, (), (), "endpointslice"),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",), (),
             "networkpolicy"),
)

BY_PLURAL: dict[tuple[str, str], Resource] = {(r.group, r.plural): r for r in RESOURCES}
BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES}

NAMESPACES = BY_PLURAL[("", "namespaces")]
NODES = BY_PLURAL[("", "nodes")]
PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
EVENTS = BY_PLURAL[("", "events")]
SLICES = BY_PLURAL[("discovery.k8s.io", "endpointslices")]


def find(group: str, plural: str) -> Resource | None:
    return BY_PLURAL.get((group, plural))


def groups() -> list[tuple[str, str]]:
    """(group, version) pairs in discovery order, core first."""
    seen: list[tuple[str, str]] = []
    for r in RESOURCES:
        if (r.group, r.version) not in seen:
            seen.append((r.group, r.version))
    return seen
