"""What a request asks to do, for the authorizer: apiserver's RequestInfoFactory. Pure.

/api/v1/... and /apis/<group>/<version>/... are resource requests (verb from the method: a GET
without a name is list or watch, a DELETE without one deletecollection; a list or watch with the
field selector metadata.name=<x> names x); everything else (/api, /apis/<group>, /healthz,
/openapi/v3, ...) is a non-resource request whose verb is the lower-cased HTTP method.
"""
from __future__ import annotations

from collections.abc import Mapping

from .identity import User
from .rbac import Attributes

_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                 "DELETE": "delete"}
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


def _true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _name_from_field_selector(selector: str) -> str:
    for term in selector.split(","):
        key, op, value = term.partition("==") if "==" in term else term.partition("=")
        if op and key.strip() == "metadata.name" and not key.strip().endswith("!"):
            return value.strip()
    return ""


def request_attributes(user: User, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    parts = [p for p in path.split("/") if p]
    method = method.upper()
    nonresource = Attributes(user, method.lower(), resource_request=False, path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return nonresource
    rest = parts[1:]
    group = ""
    if parts[0] == "apis":
        if len(rest) < 3:
            return nonresource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    verb = _METHOD_VERBS.get(method, "")
    if rest[0] in ("watch", "proxy"):
        if len(rest) < 2:
            return nonresource
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if _true(query.get("watch")) else "list"
        name = _name_from_field_selector(query.get("fieldSelector", ""))
    elif not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(user, verb, True, namespace, group, version, resource, subresource, name)
