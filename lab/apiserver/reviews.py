"""The create-only reviews: authorization.k8s.io/v1 SelfSubjectAccessReview, SubjectAccessReview,
LocalSubjectAccessReview, SelfSubjectRulesReview and authentication.k8s.io/v1 SelfSubjectReview
(`kubectl auth can-i [--list]`, `kubectl auth whoami`). Pure: the request body and a decision in,
the response out. Nothing is stored.
"""
from __future__ import annotations

from .. import errors
from ..admission.fields import invalid, raise_if, required
from .identity import User
from .rbac import Attributes, Decision

AUTHZ = "authorization.k8s.io"


def review_user(kind: str, spec: dict, requester: User) -> User:
    """Whose access is reviewed: the requester's for the Self* kinds, the spec's otherwise."""
    if kind.startswith("Self"):
        return requester
    extra = tuple(sorted((k, tuple(v or ())) for k, v in (spec.get("extra") or {}).items()))
    return User(spec.get("user") or "", spec.get("uid") or "", tuple(spec.get("groups") or ()), extra)


def validate_access_review(kind: str, body: dict, request_namespace: str) -> None:
    """422 as ValidateSubjectAccessReview and friends word it."""
    spec = body.get("spec") or {}
    causes = []
    res, nonres = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if res is not None and nonres is not None:
        causes.append(invalid("spec.nonResourceAttributes", nonres,
                              "cannot be specified in combination with resourceAttributes"))
    elif res is None and nonres is None:
        causes.append(invalid("spec.resourceAttributes", None,
                              "exactly one of nonResourceAttributes or resourceAttributes must be specified"))
    if not kind.startswith("Self") and not spec.get("user") and not spec.get("groups"):
        causes.append(invalid("spec.user", spec.get("user") or "", "at least one of user or group must be specified"))
    if kind == "LocalSubjectAccessReview":
        if nonres is not None:
            causes.append(invalid("spec.nonResourceAttributes", nonres, "disallowed on this kind of request"))
        if res is not None and (res.get("namespace") or request_namespace) != request_namespace:
            causes.append(invalid("spec.resourceAttributes.namespace", res.get("namespace"),
                                  "must match metadata.namespace"))
    raise_if(causes, AUTHZ, kind, body)


def review_attributes(spec: dict, user: User) -> Attributes:
    res = spec.get("resourceAttributes")
    if res is not None:
        return Attributes(user, res.get("verb") or "", True, res.get("namespace") or "", res.get("group") or "",
                          res.get("version") or "", res.get("resource") or "", res.get("subresource") or "",
                          res.get("name") or "")
    nonres = spec.get("nonResourceAttributes") or {}
    return Attributes(user, nonres.get("verb") or "", False, path=nonres.get("path") or "")


def render_access_review(kind: str, body: dict, user: User, decision: Decision,
                         namespace: str = "") -> dict:
    spec = dict(body.get("spec") or {})
    if kind == "LocalSubjectAccessReview" and spec.get("resourceAttributes") is not None:
        spec["resourceAttributes"] = dict(spec["resourceAttributes"], namespace=namespace)
    status: dict = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    if decision.evaluation_error:
        status["evaluationError"] = decision.evaluation_error
    meta: dict = {"creationTimestamp": None}
    if namespace:
        meta["namespace"] = namespace
    return {"kind": kind, "apiVersion": f"{AUTHZ}/v1", "metadata": meta, "spec": spec, "status": status}


def split_rules(rules: list[dict]) -> tuple[list[dict], list[dict]]:
    """SubjectRulesReviewStatus's resourceRules and nonResourceRules."""
    resource, nonresource = [], []
    for r in rules:
        if r.get("nonResourceURLs"):
            nonresource.append({"verbs": list(r.get("verbs") or []),
                                "nonResourceURLs": list(r["nonResourceURLs"])})
        else:
            out = {"verbs": list(r.get("verbs") or []), "apiGroups": list(r.get("apiGroups") or []),
                   "resources": list(r.get("resources") or [])}
            if r.get("resourceNames"):
                out["resourceNames"] = list(r["resourceNames"])
            resource.append(out)
    return resource, nonresource


def validate_rules_review(body: dict) -> None:
    if not (body.get("spec") or {}).get("namespace"):
        raise_if([required("spec.namespace")], AUTHZ, "SelfSubjectRulesReview", body)


def render_rules_review(body: dict, rules: list[dict], problems: list[str]) -> dict:
    resource, nonresource = split_rules(rules)
    status: dict = {"resourceRules": resource, "nonResourceRules": nonresource, "incomplete": bool(problems)}
    if problems:
        status["evaluationError"] = "; ".join(problems)
    return {"kind": "SelfSubjectRulesReview", "apiVersion": f"{AUTHZ}/v1",
            "metadata": {"creationTimestamp": None}, "spec": dict(body.get("spec") or {}), "status": status}


def render_self_subject_review(user: User) -> dict:
    return {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "status": {"userInfo": user.to_user_info()}}


def check_kind(body: object, kind: str, api_version: str) -> dict:
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request was empty or not an object")
    if body.get("kind") not in (None, "", kind) or body.get("apiVersion") not in (None, "", api_version):
        raise errors.bad_request(f"the body is a {body.get('apiVersion')}/{body.get('kind')}, "
                                 f"not a {api_version}/{kind}")
    return body
