"""Authentication, impersonation and authorization of requests against the store's RBAC objects,
and the TokenRequest that issues ServiceAccount tokens.

A bearer token is the admin's (kubernetes-admin, system:masters) or a ServiceAccount token this
server signed: valid signature, not expired, for the API server's audience, its ServiceAccount
(and the Pod, Secret or Node it is bound to) still there with the same uid. Anything else is 401.
Impersonate-User / -Group / -Uid / -Extra-* replace the user when the requester may
`impersonate` each of them, as the real impersonation filter checks it.
"""
from __future__ import annotations

import base64
import datetime
import logging
import time
from collections.abc import Mapping

from .. import errors
from ..admission.fields import invalid, raise_if
from ..resources import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    NODES,
    PODS,
    ROLE_BINDINGS,
    ROLES,
    SECRETS,
    SERVICE_ACCOUNTS,
)
from . import identity, rbac, tokens
from .identity import User

log = logging.getLogger("kubeweft.lab.apiserver")

BOUND_RESOURCES = {"Pod": PODS, "Secret": SECRETS, "Node": NODES}
EXTRA_PREFIX = "Impersonate-Extra-"


class Access:
    def __init__(self, store, admin_token: str, signer: tokens.Signer):
        self.store = store
        self.admin_token = admin_token
        self.signer = signer

    # --- authentication ---------------------------------------------------------------------
    def authenticate(self, authorization: str) -> User:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.unauthorized()
        if token == self.admin_token:
            return identity.ADMIN
        if tokens.looks_like_jwt(token):
            try:
                if tokens.unverified_issuer(token) == tokens.LEGACY_ISSUER:
                    return self.legacy_user(token, self.signer.verify_legacy(token))
                return self.service_account_user(self.signer.verify(token))
            except tokens.InvalidToken as e:
                log.info("service account token rejected: %s", e)
        raise errors.unauthorized()

    def service_account_user(self, claims: dict) -> User:
        private = claims["kubernetes.io"]
        ns, sa_claim = private.get("namespace", ""), private["serviceaccount"]
        sa = self.store.try_get(SERVICE_ACCOUNTS, ns, sa_claim.get("name", ""))
        if sa is None or sa["metadata"].get("uid") != sa_claim.get("uid"):
            raise tokens.InvalidToken(f"service account {ns}/{sa_claim.get('name')} is gone or was recreated")
        extra: dict[str, tuple[str, ...]] = {}
        if claims.get("jti"):
            extra["authentication.kubernetes.io/credential-id"] = (f"JTI={claims['jti']}",)
        for kind in tokens.BOUND_KINDS:
            ref = private.get(kind.lower())
            if not isinstance(ref, dict):
                continue
            obj = self.store.try_get(BOUND_RESOURCES[kind], ns, ref.get("name", ""))
            if obj is None or obj["metadata"].get("uid") != ref.get("uid"):
                raise tokens.InvalidToken(f"the {kind} {ref.get('name')} the token is bound to is gone")
            if kind in ("Pod", "Node"):
                key = kind.lower()
                extra[f"authentication.kubernetes.io/{key}-name"] = (ref.get("name", ""),)
                extra[f"authentication.kubernetes.io/{key}-uid"] = (ref.get("uid", ""),)
        name = sa_claim.get("name", "")
        return User(identity.service_account_username(ns, name), sa["metadata"]["uid"],
                    identity.with_authenticated(identity.service_account_groups(ns), name),
                    tuple(sorted(extra.items())))

    def legacy_user(self, token: str, claims: dict) -> User:
        """A Secret-based token: valid while its Secret holds it and its ServiceAccount is the same."""
        p = tokens.LEGACY_PREFIX
        ns, name = claims[f"{p}namespace"], claims[f"{p}service-account.name"]
        secret = self.store.try_get(BOUND_RESOURCES["Secret"], ns, claims[f"{p}secret.name"])
        held = ((secret or {}).get("data") or {}).get("token", "")
        if secret is None or base64.b64decode(held or "").decode(errors="replace") != token:
            raise tokens.InvalidToken(f"the token's Secret {ns}/{claims[f'{p}secret.name']} is gone or changed")
        sa = self.store.try_get(SERVICE_ACCOUNTS, ns, name)
        if sa is None or sa["metadata"].get("uid") != claims.get(f"{p}service-account.uid"):
            raise tokens.InvalidToken(f"service account {ns}/{name} is gone or was recreated")
        return User(identity.service_account_username(ns, name), sa["metadata"]["uid"],
                    identity.with_authenticated(identity.service_account_groups(ns), name))

    # --- impersonation -----------------------------------------------------------------------
    def impersonate(self, requester: User, headers: Mapping[str, str]) -> User:
        """The user the request acts as: the requester, or whom its Impersonate-* headers name."""
        getall = getattr(headers, "getall", None)
        user_name = headers.get("Impersonate-User", "")
        groups = list(getall("Impersonate-Group", [])) if getall else (
            [headers["Impersonate-Group"]] if "Impersonate-Group" in headers else [])
        uid = headers.get("Impersonate-Uid", "")
        extras = [(k[len(EXTRA_PREFIX):].lower(), v) for k, v in headers.items()
                  if k.lower().startswith(EXTRA_PREFIX.lower())]
        if not (user_name or groups or uid or extras):
            return requester
        if not user_name:
            raise errors.APIError(500, "InternalError", "Internal error occurred: requested "
                                  "impersonation of groups, uid or extra without impersonating a user")
        checks: list[rbac.Attributes] = []
        sa = identity.split_service_account(user_name)
        if sa is not None:
            checks.append(rbac.Attributes(requester, "impersonate", True, sa[0], "", "v1", "serviceaccounts",
                                          name=sa[1]))
            if not groups:
                groups = list(identity.service_account_groups(sa[0]))
        else:
            checks.append(rbac.Attributes(requester, "impersonate", True, "", "", "v1", "users", name=user_name))
        checks += [rbac.Attributes(requester, "impersonate", True, "", "", "v1", "groups", name=g) for g in groups]
        checks += [rbac.Attributes(requester, "impersonate", True, "", "authentication.k8s.io", "v1",
                                   "userextras", k, v) for k, v in extras]
        if uid:
            checks.append(rbac.Attributes(requester, "impersonate", True, "", "authentication.k8s.io", "v1",
                                          "uids", name=uid))
        for attrs in checks:
            decision = self.authorize(attrs)
            if not decision.allowed:
                raise rbac.forbidden(attrs, decision.reason)
        if user_name != identity.ANONYMOUS and not {identity.AUTHENTICATED, identity.UNAUTHENTICATED} & set(groups):
            groups.append(identity.AUTHENTICATED)
        extra: dict[str, list[str]] = {}
        for k, v in extras:
            extra.setdefault(k, []).append(v)
        return User(user_name, uid, tuple(groups), tuple(sorted((k, tuple(v)) for k, v in extra.items())))

    # --- authorization -----------------------------------------------------------------------
    def _get_role(self, kind: str, namespace: str, name: str) -> dict | None:
        if kind == "ClusterRole":
            return self.store.try_get(CLUSTER_ROLES, "", name)
        if kind == "Role":
            return self.store.try_get(ROLES, namespace, name)
        return None

    def _bindings(self, namespace: str) -> tuple[list[dict], list[dict]]:
        cluster = self.store.list(CLUSTER_ROLE_BINDINGS)[0]
        local = self.store.list(ROLE_BINDINGS, namespace)[0] if namespace else []
        return cluster, local

    def authorize(self, attrs: rbac.Attributes) -> rbac.Decision:
        if attrs.user.privileged:
            return rbac.Decision(True)
        cluster, local = self._bindings(attrs.namespace)
        return rbac.authorize(attrs, cluster, local, self._get_role)

    def check(self, attrs: rbac.Attributes) -> None:
        decision = self.authorize(attrs)
        if not decision.allowed:
            raise rbac.forbidden(attrs, decision.reason)

    def rules_for(self, user: User, namespace: str) -> tuple[list[dict], list[str]]:
        cluster, local = self._bindings(namespace)
        return rbac.rules_for(user, namespace, cluster, local, self._get_role)

    # --- RBAC writes ---------------------------------------------------------------------------
    def check_rbac_write(self, user: User, kind: str, namespace: str, obj: dict) -> None:
        """Creating or changing a role or binding grants nothing the writer does not hold, unless
        the writer may `escalate` that role or `bind` the role referenced (as the real registry's
        escalation check): 403 otherwise."""
        if user.privileged:
            return
        name = (obj.get("metadata") or {}).get("name", "")
        plural = {"Role": "roles", "ClusterRole": "clusterroles", "RoleBinding": "rolebindings",
                  "ClusterRoleBinding": "clusterrolebindings"}[kind]

        def deny(why: str) -> errors.APIError:
            qualified = f"{plural}.{rbac.RBAC_GROUP}"
            return errors.APIError(403, "Forbidden", f'{qualified} "{name}" is forbidden: {why}',
                                   {"name": name, "group": rbac.RBAC_GROUP, "kind": plural})

        if kind in ("Role", "ClusterRole"):
            if self.authorize(rbac.Attributes(user, "escalate", True, namespace, rbac.RBAC_GROUP, "v1", plural,
                                              name=name)).allowed:
                return
            owner, _ = self.rules_for(user, namespace)
            if obj.get("aggregationRule") and uncovered_all(owner):
                raise deny("must have cluster-admin privileges to use the aggregationRule")
            missing = rbac.uncovered(owner, list(obj.get("rules") or []))
        else:
            ref = obj.get("roleRef") or {}
            ref_plural = "roles" if ref.get("kind") == "Role" else "clusterroles"
            if self.authorize(rbac.Attributes(user, "bind", True, namespace, rbac.RBAC_GROUP, "v1", ref_plural,
                                              name=ref.get("name", ""))).allowed:
                return
            role = self._get_role(ref.get("kind", ""), namespace if ref.get("kind") == "Role" else "",
                                  ref.get("name", ""))
            if role is None:
                raise deny(f'{ref_plural[:-1]}.{rbac.RBAC_GROUP} "{ref.get("name", "")}" not found')
            owner, _ = self.rules_for(user, namespace)
            missing = rbac.uncovered(owner, list(role.get("rules") or []))
        if missing:
            raise deny(rbac.escalation_message(user, missing))

    # --- TokenRequest ------------------------------------------------------------------------
    def token_request(self, namespace: str, name: str, body: dict) -> dict:
        """POST .../serviceaccounts/<name>/token: a signed token for that ServiceAccount."""
        sa = self.store.get(SERVICE_ACCOUNTS, namespace, name)
        spec = dict(body.get("spec") or {})
        validate_token_request(spec, name)
        spec["audiences"] = list(spec.get("audiences") or tokens.API_AUDIENCES)
        spec["expirationSeconds"] = int(spec.get("expirationSeconds") or tokens.DEFAULT_EXPIRATION)
        bound = self._bound(namespace, spec.get("boundObjectRef"))
        now = int(time.time())
        claims = tokens.plan_claims(namespace, name, sa["metadata"]["uid"], spec["audiences"], now,
                                    spec["expirationSeconds"], bound)
        expires = datetime.datetime.fromtimestamp(claims["exp"], datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        created = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if spec.get("boundObjectRef"):
            spec["boundObjectRef"] = dict(spec["boundObjectRef"], uid=bound.uid if bound else "")
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
                "spec": spec, "status": {"token": self.signer.issue(claims), "expirationTimestamp": expires}}

    def _bound(self, namespace: str, ref: dict | None) -> tokens.Bound | None:
        if not ref:
            return None
        kind = ref.get("kind", "")
        resource = BOUND_RESOURCES[kind]
        obj = self.store.get(resource, namespace, ref.get("name", ""))
        uid = obj["metadata"].get("uid", "")
        if ref.get("uid") and ref["uid"] != uid:
            raise errors.conflict(resource.group, kind, ref.get("name", ""),
                                  f"the UID in the bound object reference ({ref['uid']}) does not match the UID "
                                  "in record. The object might have been deleted and then recreated")
        node_name = node_uid = ""
        if kind == "Pod":
            node_name = (obj.get("spec") or {}).get("nodeName", "")
            node = self.store.try_get(BOUND_RESOURCES["Node"], "", node_name) if node_name else None
            node_uid = node["metadata"].get("uid", "") if node else ""
            if node is None:
                node_name = ""
        return tokens.Bound(kind, obj["metadata"]["name"], uid, node_name, node_uid)


def validate_token_request(spec: dict, name: str) -> None:
    """ValidateTokenRequest's causes, worded as the real server."""
    causes = []
    seconds = spec.get("expirationSeconds")
    if seconds is not None:
        if not isinstance(seconds, int) or seconds < tokens.MIN_EXPIRATION:
            causes.append(invalid("spec.expirationSeconds", seconds,
                                  "may not specify a duration less than 10 minutes"))
        elif seconds > tokens.MAX_EXPIRATION:
            causes.append(invalid("spec.expirationSeconds", seconds,
                                  "may not specify a duration larger than 2^32 seconds"))
    ref = spec.get("boundObjectRef")
    if ref:
        if ref.get("kind") not in tokens.BOUND_KINDS:
            causes.append(invalid("spec.boundObjectRef.kind", ref.get("kind"),
                                  f"supported kinds are {', '.join(tokens.BOUND_KINDS)}"))
        elif ref.get("apiVersion") not in (None, "", "v1"):
            causes.append(invalid("spec.boundObjectRef.apiVersion", ref.get("apiVersion"),
                                  'apiVersion must be "v1"'))
        elif not ref.get("name"):
            causes.append(invalid("spec.boundObjectRef.name", ref.get("name", ""), "name must be set"))
    raise_if(causes, "authentication.k8s.io", "TokenRequest", {"metadata": {"name": name}})


FULL_AUTHORITY = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]}]


def uncovered_all(owner: list[dict]) -> bool:
    """True unless `owner` holds everything (cluster-admin's rules)."""
    return bool(rbac.uncovered(owner, FULL_AUTHORITY))
