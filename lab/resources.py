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
    verbs: tuple[str, ...] = ()         # empty: the eight of VERBS (reviews are create-only)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def served_verbs(self) -> tuple[str, ...]:
        return self.verbs or VERBS

    @property
    def stored(self) -> bool:
        """False for the create-only reviews: answered from the request, never kept."""
        return "get" in self.served_verbs


VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",), "namespace"),
    Resource("", "v1", "nodes", "Node", False, ("no",), ("status",), "node"),
    Resource("", "v1", "pods", "Pod", True, ("po",), ("status", "eviction", "exec", "log"), "pod", ("all",)),
    Resource("", "v1", "services", "Service", True, ("svc",), ("status",), "service", ("all",)),
    Resource("", "v1", "events", "Event", True, ("ev",), (), "event"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, (), (), "endpointslice"),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",), (),
             "networkpolicy"),
    Resource("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), ("status",), "ingress"),
    Resource("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False, (), (), "ingressclass"),
    Resource("networking.k8s.io", "v1", "servicecidrs", "ServiceCIDR", False, (), ("status",), "servicecidr"),
    Resource("networking.k8s.io", "v1", "ipaddresses", "IPAddress", False, ("ip",), (), "ipaddress"),
    # the CRD of network-policy-api v0.2.0, served as a cluster with it installed serves it
    Resource("policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies", "ClusterNetworkPolicy", False,
             ("cnp",), ("status",), "clusternetworkpolicy"),
    # CRDs are accepted for the kinds above (lab/admission/crds.py): `kubectl apply -k deploy/` has one
    Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
             ("crd", "crds"), ("status",), "customresourcedefinition", ("api-extensions",)),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",), (), "configmap"),
    Resource("", "v1", "secrets", "Secret", True, (), (), "secret"),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ("token",), "serviceaccount"),
    Resource("", "v1", "endpoints", "Endpoints", True, ("ep",), (), "endpoints"),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, (), (),
             "clusterrolebinding"),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, (), (), "clusterrole"),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, (), (), "rolebinding"),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True, (), (), "role"),
    Resource("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", True,
             (), (), "localsubjectaccessreview", (), ("create",)),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
             (), (), "selfsubjectaccessreview", (), ("create",)),
    Resource("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False,
             (), (), "selfsubjectrulesreview", (), ("create",)),
    Resource("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False,
             (), (), "subjectaccessreview", (), ("create",)),
    Resource("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False,
             (), (), "selfsubjectreview", (), ("create",)),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True, (), (), "lease"),
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
    verbs: tuple[str, ...]
    group: str = ""             # a subresource of another kind than its parent (serviceaccounts/token)
    version: str = ""
    kind: str = ""


# what discovery says of each subresource; the rest (status) are get, patch, update of the parent kind
SUBRESOURCES: dict[str, Subresource] = {
    "token": Subresource(("create",), "authentication.k8s.io", "v1", "TokenRequest"),
    "scale": Subresource(("get", "patch", "update"), "autoscaling", "v1", "Scale"),
    "eviction": Subresource(("create",), "policy", "v1", "Eviction"),
    "exec": Subresource(("create", "get"), kind="PodExecOptions"),      # served by apiserver/streams.py
    "log": Subresource(("get",)),
}
STATUS_SUBRESOURCE = Subresource(("get", "patch", "update"))


def subresource(name: str) -> Subresource:
    return SUBRESOURCES.get(name, STATUS_SUBRESOURCE)


BY_PLURAL: dict[tuple[str, str], Resource] = {(r.group, r.plural): r for r in RESOURCES}
BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES}

NAMESPACES = BY_PLURAL[("", "namespaces")]
NODES = BY_PLURAL[("", "nodes")]
PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
EVENTS = BY_PLURAL[("", "events")]
SLICES = BY_PLURAL[("discovery.k8s.io", "endpointslices")]
INGRESSES = BY_PLURAL[("networking.k8s.io", "ingresses")]
INGRESS_CLASSES = BY_PLURAL[("networking.k8s.io", "ingressclasses")]
SERVICE_CIDRS = BY_PLURAL[("networking.k8s.io", "servicecidrs")]
IP_ADDRESSES = BY_PLURAL[("networking.k8s.io", "ipaddresses")]
CLUSTER_NETWORK_POLICIES = BY_PLURAL[("policy.networking.k8s.io", "clusternetworkpolicies")]
CONFIG_MAPS = BY_PLURAL[("", "configmaps")]
SECRETS = BY_PLURAL[("", "secrets")]
SERVICE_ACCOUNTS = BY_PLURAL[("", "serviceaccounts")]
ENDPOINTS = BY_PLURAL[("", "endpoints")]
ROLES = BY_PLURAL[("rbac.authorization.k8s.io", "roles")]
CLUSTER_ROLES = BY_PLURAL[("rbac.authorization.k8s.io", "clusterroles")]
ROLE_BINDINGS = BY_PLURAL[("rbac.authorization.k8s.io", "rolebindings")]
CLUSTER_ROLE_BINDINGS = BY_PLURAL[("rbac.authorization.k8s.io", "clusterrolebindings")]
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
