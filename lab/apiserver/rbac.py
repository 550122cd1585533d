"""RBAC authorization as kube-apiserver's RBAC authorizer decides it. Pure.

A request is its Attributes (user, verb, namespace, API group, resource, subresource, name, or a
non-resource path). ClusterRoleBindings are visited first, then the RoleBindings of the request's
namespace; the first rule of a bound role that allows the request decides, and its binding is the
reason ("RBAC: allowed by ..."). Rules match as plugin/pkg/auth/authorizer/rbac/rbac.go's: "*"
everywhere, "pods/log" for a subresource, "*/scale" for a subresource of any resource,
resourceNames narrowing to names, nonResourceURLs with a trailing "*" as a prefix. A binding
whose role is missing makes no grant and becomes the deny's reason. Members of system:masters
are allowed before RBAC is asked, as the real server's privileged-group authorizer does.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .. import errors
from .identity import User, split_service_account

RBAC_GROUP = "rbac.authorization.k8s.io"
ALL = "*"


@dataclass(frozen=True)
class Attributes:
    user: User
    verb: str
    resource_request: bool = True
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""                    # non-resource requests


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    evaluation_error: str = ""


# --- rule matching -------------------------------------------------------------------------

def _has(values: Iterable[str] | None, wanted: str) -> bool:
    values = values or ()
    return ALL in values or wanted in values


def resource_matches(rule: dict, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule.get("resources") or ():
        if r in (ALL, combined):
            return True
        if subresource and r == f"*/{subresource}":
            return True
    return False


def non_resource_url_matches(rule: dict, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or ():
        if url in (ALL, path):
            return True
        if url.endswith("*") and path.startswith(url[:-1]):
            return True
    return False


def rule_allows(attrs: Attributes, rule: dict) -> bool:
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        return non_resource_url_matches(rule, attrs.path)
    names = rule.get("resourceNames") or ()
    return (_has(rule.get("apiGroups"), attrs.api_group)
            and resource_matches(rule, attrs.resource, attrs.subresource)
            and (not names or attrs.name in names))


def applies_to(subject: dict, user: User, binding_namespace: str) -> bool:
    """Does this binding subject name this user (or one of its groups)?"""
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa = split_service_account(user.name)
        return sa is not None and sa == (subject.get("namespace") or binding_namespace, name)
    return False


def describe_subject(subject: dict, binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return f'ServiceAccount "{subject.get("name", "")}/{ns}"'
    return f'{subject.get("kind", "")} "{subject.get("name", "")}"'


# --- the authorizer ------------------------------------------------------------------------

RoleGetter = Callable[[str, str, str], dict | None]      # (kind, namespace, name) -> role or None


@dataclass(frozen=True)
class Grant:
    """The rules one binding gives the user, and how the reason names it."""
    source: str
    rules: tuple[dict, ...]


def _role_missing(kind: str, name: str) -> str:
    return f'{kind.lower()}.{RBAC_GROUP} "{name}" not found'


def visit_grants(user: User, namespace: str, cluster_bindings: Iterable[dict],
                 role_bindings: Iterable[dict], get_role: RoleGetter,
                 problems: list[str]) -> Iterable[Grant]:
    """Every binding that applies to `user` in `namespace` ("" for cluster scope), in the real
    visiting order, with its role's rules. A missing role is added to `problems`."""
    for b in cluster_bindings:
        ref = b.get("roleRef") or {}
        subject = next((s for s in b.get("subjects") or () if applies_to(s, user, "")), None)
        if subject is None:
            continue
        role = get_role("ClusterRole", "", ref.get("name", ""))
        if role is None:
            problems.append(_role_missing("ClusterRole", ref.get("name", "")))
            continue
        yield Grant(f'ClusterRoleBinding "{b["metadata"]["name"]}" of ClusterRole "{ref.get("name", "")}" '
                    f"to {describe_subject(subject, '')}", tuple(role.get("rules") or ()))
    if not namespace:
        return
    for b in role_bindings:
        meta = b["metadata"]
        ns = meta.get("namespace", "")
        ref = b.get("roleRef") or {}
        subject = next((s for s in b.get("subjects") or () if applies_to(s, user, ns)), None)
        if subject is None:
            continue
        kind = ref.get("kind", "")
        role = get_role(kind, ns if kind == "Role" else "", ref.get("name", ""))
        if role is None:
            problems.append(_role_missing(kind, ref.get("name", "")))
            continue
        yield Grant(f'RoleBinding "{meta["name"]}/{ns}" of {kind} "{ref.get("name", "")}" '
                    f"to {describe_subject(subject, ns)}", tuple(role.get("rules") or ()))


def join_problems(problems: list[str]) -> str:
    """utilerrors.NewAggregate's text: one error alone, several in brackets."""
    return problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"


def authorize(attrs: Attributes, cluster_bindings: Iterable[dict], role_bindings: Iterable[dict],
              get_role: RoleGetter) -> Decision:
    """Allowed, with the reason the real authorizer gives, or not (with RBAC's errors, if any).
    `role_bindings` are those of attrs.namespace."""
    if attrs.user.privileged:
        return Decision(True)
    problems: list[str] = []
    for grant in visit_grants(attrs.user, attrs.namespace, cluster_bindings, role_bindings, get_role,
                              problems):
        if any(rule_allows(attrs, r) for r in grant.rules):
            return Decision(True, f"RBAC: allowed by {grant.source}")
    if problems:
        text = join_problems(problems)
        return Decision(False, f"RBAC: {text}", text)
    return Decision(False)


def rules_for(user: User, namespace: str, cluster_bindings: Iterable[dict],
              role_bindings: Iterable[dict], get_role: RoleGetter) -> tuple[list[dict], list[str]]:
    """Every rule the user holds in `namespace`, and the RBAC errors met (SelfSubjectRulesReview)."""
    if user.privileged:
        return [{"verbs": [ALL], "apiGroups": [ALL], "resources": [ALL]},
                {"verbs": [ALL], "nonResourceURLs": [ALL]}], []
    problems: list[str] = []
    rules = [r for g in visit_grants(user, namespace, cluster_bindings, role_bindings, get_role, problems)
             for r in g.rules]
    return rules, problems


# --- the 403 -------------------------------------------------------------------------------

def forbidden_message(attrs: Attributes) -> str:
    """responsewriters.forbiddenMessage."""
    who = attrs.user.name
    if not attrs.resource_request:
        return f'User "{who}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    where = (f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope")
    return f'User "{who}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" {where}'


def forbidden(attrs: Attributes, reason: str = "") -> errors.APIError:
    """403 as apierrors.NewForbidden words it: '<resource>[.<group>] ["<name>"] is forbidden: ...'."""
    msg = forbidden_message(attrs)
    if reason:
        msg = f"{msg}: {reason}"
    if not attrs.resource_request or not attrs.resource:
        return errors.APIError(403, "Forbidden", f"forbidden: {msg}")
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    details = {k: v for k, v in (("name", attrs.name), ("group", attrs.api_group),
                                 ("kind", attrs.resource)) if v}
    return errors.APIError(403, "Forbidden", f"{subject} is forbidden: {msg}", details)


# --- escalation: one may grant only what one holds -----------------------------------------

def breakdown(rule: dict) -> list[dict]:
    """A rule as single-verb, single-resource (and single-name) rules (validation.BreakdownRule)."""
    out = []
    names = rule.get("resourceNames") or []
    for group in rule.get("apiGroups") or []:
        for resource in rule.get("resources") or []:
            for verb in rule.get("verbs") or []:
                base = {"apiGroups": [group], "resources": [resource], "verbs": [verb]}
                out += [dict(base, resourceNames=[n]) for n in names] if names else [base]
    for url in rule.get("nonResourceURLs") or []:
        for verb in rule.get("verbs") or []:
            out.append({"nonResourceURLs": [url], "verbs": [verb]})
    return out


def _has_all(owner: list[str], wanted: list[str]) -> bool:
    return all(w in owner for w in wanted)


def _resources_cover(owner: list[str], wanted: list[str]) -> bool:
    if ALL in owner or _has_all(owner, wanted):
        return True
    for path in wanted:
        if path in owner:
            continue
        if "/" not in path or f"*/{path.split('/', 1)[1]}" not in owner:
            return False
    return True


def _url_covers(owner: str, path: str) -> bool:
    return owner == path or (owner.endswith("*") and path.startswith(owner.rstrip("*")))


def rule_covers(owner: dict, sub: dict) -> bool:
    """validation.ruleCovers: does `owner` grant everything the broken-down rule `sub` does?"""
    ov, og = owner.get("verbs") or [], owner.get("apiGroups") or []
    onames, snames = owner.get("resourceNames") or [], sub.get("resourceNames") or []
    return ((ALL in ov or _has_all(ov, sub.get("verbs") or []))
            and (ALL in og or _has_all(og, sub.get("apiGroups") or []))
            and _resources_cover(owner.get("resources") or [], sub.get("resources") or [])
            and all(any(_url_covers(o, p) for o in owner.get("nonResourceURLs") or [])
                    for p in sub.get("nonResourceURLs") or [])
            and (not onames or (bool(snames) and _has_all(onames, snames))))


def uncovered(owner_rules: list[dict], rules: list[dict]) -> list[dict]:
    """The broken-down rules of `rules` that no rule of `owner_rules` covers (validation.Covers)."""
    return [sub for r in rules for sub in breakdown(r) if not any(rule_covers(o, sub) for o in owner_rules)]


def _go_quoted(values: list[str]) -> str:
    return "[" + " ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"


def compact_string(rule: dict) -> str:
    """rbacv1helpers.CompactString: {APIGroups:[""], Resources:["secrets"], Verbs:["get"]}."""
    parts = [f"{label}:{_go_quoted(rule[key])}" for label, key in
             (("APIGroups", "apiGroups"), ("Resources", "resources"), ("NonResourceURLs", "nonResourceURLs"),
              ("ResourceNames", "resourceNames"), ("Verbs", "verbs")) if rule.get(key)]
    return "{" + ", ".join(parts) + "}"


def escalation_message(user: User, missing: list[dict]) -> str:
    """ConfirmNoEscalation's error text."""
    lines = sorted({compact_string(r) for r in missing})
    return (f'user "{user.name}" (groups={_go_quoted(list(user.groups))}) is attempting to grant RBAC '
            "permissions not currently held:\n" + "\n".join(lines))
