"""Who a request is from: user.Info as the real API server builds it. Pure.

The lab's admin token is "kubernetes-admin" in the group system:masters, which the real server's
authorizer lets through before RBAC is asked; ServiceAccount tokens are
system:serviceaccount:<namespace>:<name> in system:serviceaccounts and
system:serviceaccounts:<namespace>. Every authenticated user is also in system:authenticated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
MASTERS = "system:masters"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def privileged(self) -> bool:
        """In system:masters: allowed everything without asking RBAC, as the real server does."""
        return MASTERS in self.groups

    def to_user_info(self) -> dict:
        """authentication.k8s.io/v1 UserInfo."""
        out: dict = {"username": self.name}
        if self.uid:
            out["uid"] = self.uid
        if self.groups:
            out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra}
        return out


ADMIN = User("kubernetes-admin", groups=(MASTERS, AUTHENTICATED))


def service_account_username(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of a ServiceAccount's username, or None for any other user."""
    if not username.startswith(SA_PREFIX):
        return None
    parts = username[len(SA_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return SA_GROUP, f"{SA_GROUP}:{namespace}"


def with_authenticated(groups: tuple[str, ...] | list[str], name: str) -> tuple[str, ...]:
    """The groups plus system:authenticated, which every user but system:anonymous is in."""
    out = tuple(dict.fromkeys(groups))
    if name != ANONYMOUS and AUTHENTICATED not in out:
        out += (AUTHENTICATED,)
    return out
