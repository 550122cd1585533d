"""The default ClusterRoles and ClusterRoleBindings every cluster starts with (kube-apiserver's
bootstrap policy), and their creation at start.

cluster-admin may do everything; admin, edit and view are aggregated (their rules are the union
of the system:aggregate-to-* roles, filled in by controllers/clusterroles.py), so a ClusterRole
labelled rbac.authorization.k8s.io/aggregate-to-view=true extends view as on a real cluster.
Every authenticated user may read discovery and ask what it may do (system:discovery,
system:basic-user, system:public-info-viewer). The rules are the real ones for the kinds a
cluster serves; kinds this lab does not serve are named all the same, as a real role names them.
"""
from __future__ import annotations

from ..resources import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES
from . import identity

BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
READ_WRITE = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]


def rule(verbs: list[str], groups: list[str], resources: list[str]) -> dict:
    return {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}


def url_rule(verbs: list[str], urls: list[str]) -> dict:
    return {"verbs": list(verbs), "nonResourceURLs": list(urls)}


def _role(name: str, rules: list[dict] | None, labels: dict | None = None,
          aggregate_from: str | None = None) -> dict:
    role: dict = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                  "metadata": {"name": name, "labels": {**BOOTSTRAP_LABELS, **(labels or {})},
                               "annotations": dict(AUTOUPDATE)}}
    if aggregate_from is not None:
        role["aggregationRule"] = {"clusterRoleSelectors": [
            {"matchLabels": {f"{AGGREGATE_TO}{aggregate_from}": "true"}}]}
        role["rules"] = []
    else:
        role["rules"] = rules or []
    return role


def _binding(name: str, role: str, groups: list[str]) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": dict(BOOTSTRAP_LABELS), "annotations": dict(AUTOUPDATE)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}
                         for g in groups]}


def _aggregate_to(target: str) -> dict:
    return {f"{AGGREGATE_TO}{target}": "true"}


VIEW_RULES = [
    rule(READ, [""], ["pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
                      "services", "services/status", "endpoints", "persistentvolumeclaims",
                      "persistentvolumeclaims/status", "configmaps"]),
    rule(READ, [""], ["limitranges", "resourcequotas", "bindings", "events", "pods/status",
                      "resourcequotas/status", "namespaces/status", "replicationcontrollers/status",
                      "pods/log"]),
    rule(READ, [""], ["namespaces"]),
    rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
    rule(READ, ["apps"], ["controllerrevisions", "statefulsets", "statefulsets/scale", "statefulsets/status",
                          "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                          "deployments/status", "replicasets", "replicasets/scale", "replicasets/status"]),
    rule(READ, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
    rule(READ, ["batch"], ["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
    rule(READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    rule(READ, ["networking.k8s.io"], ["networkpolicies", "ingresses", "ingresses/status"]),
]

EDIT_RULES = [
    rule(READ, [""], ["pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets",
                      "services/proxy"]),
    rule(["impersonate"], [""], ["serviceaccounts"]),
    rule(WRITE, [""], ["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
    rule(["create"], [""], ["pods/eviction"]),
    rule(WRITE, [""], ["replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                       "services/proxy", "persistentvolumeclaims", "configmaps", "secrets", "events"]),
    rule(["create"], [""], ["serviceaccounts/token"]),
    rule(WRITE, ["apps"], ["statefulsets", "statefulsets/scale", "daemonsets", "deployments",
                           "deployments/scale", "deployments/rollback", "replicasets", "replicasets/scale"]),
    rule(WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
    rule(WRITE, ["batch"], ["jobs", "cronjobs"]),
    rule(WRITE, ["policy"], ["poddisruptionbudgets"]),
    rule(WRITE, ["networking.k8s.io"], ["networkpolicies", "ingresses"]),
    rule(READ_WRITE, ["coordination.k8s.io"], ["leases"]),
]

ADMIN_RULES = [
    rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    rule(READ_WRITE, ["rbac.authorization.k8s.io"], ["roles", "rolebindings"]),
]

DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                  "/readyz", "/version", "/version/"]
PUBLIC_INFO_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]


def render_cluster_roles() -> list[dict]:
    return [
        _role("cluster-admin", [rule(["*"], ["*"], ["*"]), url_rule(["*"], ["*"])]),
        _role("admin", None, aggregate_from="admin"),
        _role("edit", None, _aggregate_to("admin"), aggregate_from="edit"),
        _role("view", None, _aggregate_to("edit"), aggregate_from="view"),
        _role("system:aggregate-to-admin", ADMIN_RULES, _aggregate_to("admin")),
        _role("system:aggregate-to-edit", EDIT_RULES, _aggregate_to("edit")),
        _role("system:aggregate-to-view", VIEW_RULES, _aggregate_to("view")),
        _role("system:discovery", [url_rule(["get"], DISCOVERY_URLS)]),
        _role("system:basic-user", [
            rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
            rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"])]),
        _role("system:public-info-viewer", [url_rule(["get"], PUBLIC_INFO_URLS)]),
    ]


def render_cluster_role_bindings() -> list[dict]:
    return [
        _binding("cluster-admin", "cluster-admin", [identity.MASTERS]),
        _binding("system:discovery", "system:discovery", [identity.AUTHENTICATED]),
        _binding("system:basic-user", "system:basic-user", [identity.AUTHENTICATED]),
        _binding("system:public-info-viewer", "system:public-info-viewer",
                 [identity.AUTHENTICATED, identity.UNAUTHENTICATED]),
    ]


def ensure_bootstrap_policy(store) -> None:
    """Create the default roles and bindings that are missing (ones a user changed are kept)."""
    for resource, objs in ((CLUSTER_ROLES, render_cluster_roles()),
                           (CLUSTER_ROLE_BINDINGS, render_cluster_role_bindings())):
        for obj in objs:
            if store.try_get(resource, "", obj["metadata"]["name"]) is None:
                store.create(resource, obj)
