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
    Resource("", "v1", "pods", "Pod", True, ("po",), ("status", "eviction"), "pod", ("all",)),
    Resource("", "v1", "services", "Service", True, ("svc",), ("status",), "service", ("all",)),
    Resource("", "v1", "events", "Event", True, ("ev",), (), "event"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, (), (), "endpointslice"),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",), (),
             "networkpolicy"),
    Resource("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"),
             "deployment", ("all",)),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"),
             "replicaset", ("all",)),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), "daemonset", ("all",)),
    Resource("apps", "v1", "controllerrevisions", "ControllerRevision", True, (), (),
             "controllerrevision"),
)


@dataclass(frozen=True)
class Subresource:
    """A subresource whose body is a kind of its own (discovery names its group, version, kind)."""
    group: str
    version: str
    kind: str
    verbs: tuple[str, ...]


# subresource name -> its kind; the others ("status") carry the parent's kind
SUBRESOURCE_KINDS: dict[str, Subresource] = {
    "scale": Subresource("autoscaling", "v1", "Scale", ("get", "patch", "update")),
    "eviction": Subresource("policy", "v1", "Eviction", ("create",)),
}

BY_PLURAL: dict[tuple[str, str], Resource] = {(r.group, r.plural): r for r in RESOURCES}
BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES}

NAMESPACES = BY_PLURAL[("", "namespaces")]
NODES = BY_PLURAL[("", "nodes")]
PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
EVENTS = BY_PLURAL[("", "events")]
SLICES = BY_PLURAL[("discovery.k8s.io", "endpointslices")]
DEPLOYMENTS = BY_PLURAL[("apps", "deployments")]
REPLICASETS = BY_PLURAL[("apps", "replicasets")]
DAEMONSETS = BY_PLURAL[("apps", "daemonsets")]
REVISIONS = BY_PLURAL[("apps", "controllerrevisions")]


def find(group: str, plural: str) -> Resource | None:
    return BY_PLURAL.get((group, plural))


def groups() -> list[tuple[str, str]]:
    """(group, version) pairs in discovery order, core first."""
    seen: list[tuple[str, str]] = []
    for r in RESOURCES:
        if (r.group, r.version) not in seen:
            seen.append((r.group, r.version))
    return seen
