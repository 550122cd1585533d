"""Roles, ClusterRoles and their bindings at admission: defaults and validation. Pure.
Wording from k8s.io/kubernetes/pkg/apis/rbac/validation."""
from __future__ import annotations

from ..errors import Cause
from .fields import invalid, raise_if, required, unsupported

RBAC_GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ("ServiceAccount", "User", "Group")


def validate_rule(rule: dict, path: str, namespaced: bool) -> list[Cause]:
    causes = []
    if not rule.get("verbs"):
        causes.append(Cause(f"{path}.verbs", "FieldValueRequired", "Required value: verbs must contain at least one value"))
    urls = rule.get("nonResourceURLs") or []
    if urls:
        if namespaced:
            causes.append(invalid(f"{path}.nonResourceURLs", urls, "namespaced rules cannot apply to non-resource URLs"))
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            causes.append(invalid(f"{path}.nonResourceURLs", urls,
                                  "rules cannot apply to both regular resources and non-resource URLs"))
        return causes
    if not rule.get("apiGroups"):
        causes.append(Cause(f"{path}.apiGroups", "FieldValueRequired",
                            "Required value: resource rules must supply at least one api group"))
    if not rule.get("resources"):
        causes.append(Cause(f"{path}.resources", "FieldValueRequired",
                            "Required value: resource rules must supply at least one resource"))
    return causes


def validate_role(role: dict, namespaced: bool) -> list[Cause]:
    causes = []
    for i, rule in enumerate(role.get("rules") or []):
        causes += validate_rule(rule, f"rules[{i}]", namespaced)
    return causes


def default_binding(binding: dict) -> dict:
    """SetDefaults_Subject: User and Group subjects are in the RBAC group, ServiceAccounts in core."""
    for s in binding.get("subjects") or []:
        if isinstance(s, dict) and not s.get("apiGroup"):
            s["apiGroup"] = "" if s.get("kind") == "ServiceAccount" else RBAC_GROUP
            if s["apiGroup"] == "":
                del s["apiGroup"]
    return binding


def validate_binding(binding: dict, namespaced: bool) -> list[Cause]:
    causes = []
    ref = binding.get("roleRef") or {}
    if ref.get("apiGroup") != RBAC_GROUP:
        causes.append(unsupported("roleRef.apiGroup", ref.get("apiGroup", ""), (RBAC_GROUP,)))
    kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if ref.get("kind") not in kinds:
        causes.append(unsupported("roleRef.kind", ref.get("kind", ""), kinds))
    if not ref.get("name"):
        causes.append(required("roleRef.name"))
    for i, s in enumerate(binding.get("subjects") or []):
        path = f"subjects[{i}]"
        if not s.get("name"):
            causes.append(required(f"{path}.name"))
        kind = s.get("kind")
        if kind == "ServiceAccount":
            if s.get("apiGroup"):
                causes.append(unsupported(f"{path}.apiGroup", s["apiGroup"], ("",)))
            if not s.get("namespace") and not namespaced:
                causes.append(required(f"{path}.namespace"))
        elif kind in ("User", "Group"):
            if s.get("apiGroup") != RBAC_GROUP:
                causes.append(unsupported(f"{path}.apiGroup", s.get("apiGroup", ""), (RBAC_GROUP,)))
        else:
            causes.append(unsupported(f"{path}.kind", kind or "", SUBJECT_KINDS))
    return causes


def admit_role(kind: str, obj: dict) -> dict:
    raise_if(validate_role(obj, kind == "Role"), RBAC_GROUP, kind, obj)
    return obj


def admit_binding(kind: str, obj: dict, old: dict | None) -> dict:
    default_binding(obj)
    causes = validate_binding(obj, kind == "RoleBinding")
    if old is not None and (obj.get("roleRef") or {}) != (old.get("roleRef") or {}):
        causes.append(invalid("roleRef", obj.get("roleRef"), "cannot change roleRef"))
    raise_if(causes, RBAC_GROUP, kind, obj)
    return obj
