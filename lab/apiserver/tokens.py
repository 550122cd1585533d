"""ServiceAccount tokens: the signed JWTs a TokenRequest returns, and their verification.

Claims are the real server's bound tokens' (iss, sub, aud, exp, iat, nbf, jti and the
kubernetes.io claim naming the namespace, the ServiceAccount and the Pod, Secret or Node the
token is bound to), signed ES256 with the lab's service-account key; the header's kid is
the real server's key id, base64url(sha256(DER public key)). `plan_claims` is pure; PyJWT does
the JOSE encoding and the checks of signature, expiry and audience.
"""
from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import identity

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (ISSUER,)             # kube-apiserver's --api-audiences default to the issuer
ALGORITHM = "ES256"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600                  # ValidateTokenRequest: "less than 10 minutes"
MAX_EXPIRATION = 1 << 32
BOUND_KINDS = ("Pod", "Secret", "Node")
# the long-lived tokens the token controller writes into kubernetes.io/service-account-token Secrets
LEGACY_ISSUER = "kubernetes/serviceaccount"
LEGACY_PREFIX = "kubernetes.io/serviceaccount/"


class InvalidToken(Exception):
    """Why a bearer token does not authenticate anyone (logged; the client sees 401)."""


@dataclass(frozen=True)
class Bound:
    """What a token is bound to: it stops working when that object is gone."""
    kind: str                         # Pod, Secret or Node
    name: str
    uid: str
    node_name: str = ""               # a Pod's node, named in the claims as the real server does
    node_uid: str = ""


def plan_claims(namespace: str, name: str, sa_uid: str, audiences: list[str], now: int,
                expiration_seconds: int, bound: Bound | None = None, jti: str | None = None) -> dict:
    """The claims of a token for ServiceAccount namespace/name, valid from `now` (unix seconds)."""
    private: dict = {"namespace": namespace, "serviceaccount": {"name": name, "uid": sa_uid}}
    if bound is not None:
        private[bound.kind.lower()] = {"name": bound.name, "uid": bound.uid}
        if bound.kind == "Pod" and bound.node_name:
            private["node"] = {"name": bound.node_name, "uid": bound.node_uid}
    return {"aud": list(audiences), "exp": now + expiration_seconds, "iat": now, "iss": ISSUER,
            "jti": jti or str(uuid.uuid4()), "kubernetes.io": private, "nbf": now,
            "sub": identity.service_account_username(namespace, name)}


def plan_legacy_claims(namespace: str, name: str, sa_uid: str, secret: str) -> dict:
    """The claims of a Secret-based token: no audience, no expiry, valid while the Secret lives."""
    return {"iss": LEGACY_ISSUER, f"{LEGACY_PREFIX}namespace": namespace,
            f"{LEGACY_PREFIX}secret.name": secret, f"{LEGACY_PREFIX}service-account.name": name,
            f"{LEGACY_PREFIX}service-account.uid": sa_uid, "sub": identity.service_account_username(namespace, name)}


def unverified_issuer(token: str) -> str:
    try:
        return str(jwt.decode(token, options={"verify_signature": False}).get("iss", ""))
    except jwt.PyJWTError:
        return ""


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


class Signer:
    """Issues and verifies tokens with one EC P-256 key."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey):
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.kid = key_id(self.public_key)

    @classmethod
    def from_pem(cls, pem: bytes) -> Signer:
        key = serialization.load_pem_private_key(pem, None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the service-account key must be an EC P-256 key")
        return cls(key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def issue(self, claims: dict) -> str:
        # the real server's header has no "typ"
        return jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": None})

    def verify(self, token: str, audiences: tuple[str, ...] = API_AUDIENCES) -> dict:
        """The claims of a token this key signed, for one of `audiences`, not expired, with the
        shape of a ServiceAccount token; InvalidToken otherwise."""
        try:
            claims = jwt.decode(token, self.public_key, algorithms=[ALGORITHM], audience=list(audiences),
                                issuer=ISSUER,
                                options={"require": ["aud", "exp", "iat", "iss", "nbf", "sub"]})
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from None
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict) or not isinstance(private.get("serviceaccount"), dict):
            raise InvalidToken("not a service account token: no kubernetes.io claim")
        ns, sa = private.get("namespace", ""), private["serviceaccount"].get("name", "")
        if claims["sub"] != identity.service_account_username(ns, sa):
            raise InvalidToken(f"sub {claims['sub']!r} does not name the service account {ns}/{sa}")
        return claims

    def verify_legacy(self, token: str) -> dict:
        """The claims of a Secret-based token this key signed; InvalidToken otherwise."""
        try:
            claims = jwt.decode(token, self.public_key, algorithms=[ALGORITHM], issuer=LEGACY_ISSUER,
                                options={"require": ["iss", "sub"], "verify_aud": False})
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from None
        ns = claims.get(f"{LEGACY_PREFIX}namespace", "")
        name = claims.get(f"{LEGACY_PREFIX}service-account.name", "")
        if not claims.get(f"{LEGACY_PREFIX}secret.name") or \
                claims["sub"] != identity.service_account_username(ns, name):
            raise InvalidToken("not a service account token: claims do not name a ServiceAccount and Secret")
        return claims


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")
