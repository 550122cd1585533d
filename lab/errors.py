"""API errors of the lab's control plane, each able to render itself as a metav1.Status.

Messages follow the real API server's wording, since kubectl prints them verbatim.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cause:
    field: str
    reason: str      # FieldValueInvalid, FieldValueDuplicate, FieldValueRequired, FieldValueNotSupported ...
    message: str     # e.g. 'Invalid value: 70000: must be between 1 and 65535, inclusive'


@dataclass
class APIError(Exception):
    code: int
    reason: str
    message: str
    details: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> APIError:
    q = _qualified(group, plural)
    return APIError(404, "NotFound", f'{q} "{name}" not found',
                    {"name": name, "group": group, "kind": plural})


def already_exists(group: str, plural: str, name: str) -> APIError:
    q = _qualified(group, plural)
    return APIError(409, "AlreadyExists", f'{q} "{name}" already exists',
                    {"name": name, "group": group, "kind": plural})


def conflict(group: str, plural: str, name: str, why: str) -> APIError:
    q = _qualified(group, plural)
    return APIError(409, "Conflict", f'Operation cannot be fulfilled on {q} "{name}": {why}',
                    {"name": name, "group": group, "kind": plural})


def invalid(group: str, kind: str, name: str, causes: list[Cause]) -> APIError:
    """422, worded as the real server: 'The Service "x" is invalid: spec.ports[0].port: Invalid value: ...'
    (a kind of a named group is qualified by it: 'Role.rbac.authorization.k8s.io "x" is invalid')."""
    parts = [f"{c.field}: {c.message}" for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    qualified = f"{kind}.{group}" if group else kind
    return APIError(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}',
                    {"name": name, "group": group, "kind": kind,
                     "causes": [{"reason": c.reason, "message": c.message, "field": c.field}
                                for c in causes]})


def no_such_path() -> APIError:
    """404 for a path the server does not serve (no such group, version, kind or subresource)."""
    return APIError(404, "NotFound", "the server could not find the requested resource")


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def gone(message: str = "too old resource version") -> APIError:
    return APIError(410, "Expired", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource"
                       ) -> APIError:
    return APIError(405, "MethodNotAllowed", message)


def unauthorized() -> APIError:
    return APIError(401, "Unauthorized", "Unauthorized")


def unsupported_media_type(content_type: str) -> APIError:
    return APIError(415, "UnsupportedMediaType",
                    f'the body of the request was in an unknown format - accepted media types include: '
                    f'application/json, application/yaml, application/vnd.kubernetes.protobuf '
                    f'(got "{content_type}")')


class LabError(Exception):
    """A lab lifecycle failure (up, down, status, exec, topology): the message is for the user.
    Not an API error: nothing renders it as a metav1.Status."""
