"""The token controller of kube-controller-manager for Secrets of type
kubernetes.io/service-account-token: one annotated kubernetes.io/service-account.name=<sa> gets
that ServiceAccount's uid as an annotation and, in its data, a long-lived token, the cluster's CA
and the namespace. A token Secret whose ServiceAccount is gone (or was recreated) is deleted.
"""
from __future__ import annotations

import base64
import logging

from ..apiserver import tokens
from ..resources import SECRETS, SERVICE_ACCOUNTS
from .loop import Reconciler

log = logging.getLogger("kubeweft.lab.controllers.tokensecrets")

TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME = "kubernetes.io/service-account.name"
SA_UID = "kubernetes.io/service-account.uid"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def is_token_secret(obj: dict) -> bool:
    return obj.get("type") == TOKEN_TYPE and bool(((obj.get("metadata") or {}).get("annotations") or {}).get(SA_NAME))


class TokenSecretsController(Reconciler):
    name = "tokens-controller"

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        try:
            self.signer: tokens.Signer | None = tokens.Signer.from_pem((cfg.pki_dir / "sa.key").read_bytes())
            self.ca_pem = (cfg.pki_dir / "ca.crt").read_text()
        except OSError:
            self.signer, self.ca_pem = None, ""       # an API server without a PKI (in-process tests)

    def prime(self) -> None:
        for s in self.store.list(SECRETS)[0]:
            if is_token_secret(s):
                self.mark((s["metadata"]["namespace"], s["metadata"]["name"]))

    def on_event(self, ev) -> None:
        if self.syncing or self.signer is None:
            return
        meta = ev.obj["metadata"]
        if ev.resource is SECRETS and ev.type != "DELETED" and is_token_secret(ev.obj):
            self.mark((meta["namespace"], meta["name"]))
        elif ev.resource is SERVICE_ACCOUNTS:
            ns = meta.get("namespace", "")
            for s in self.store.list(SECRETS, ns)[0]:
                if is_token_secret(s) and s["metadata"]["annotations"][SA_NAME] == meta["name"]:
                    self.mark((ns, s["metadata"]["name"]))

    def sync(self, key: tuple[str, str]) -> None:
        ns, name = key
        secret = self.store.try_get(SECRETS, ns, name)
        if secret is None or not is_token_secret(secret) or self.signer is None:
            return
        annotations = secret["metadata"].get("annotations") or {}
        sa = self.store.try_get(SERVICE_ACCOUNTS, ns, annotations[SA_NAME])
        if sa is None or annotations.get(SA_UID, sa["metadata"]["uid"]) != sa["metadata"]["uid"]:
            self.delete(SECRETS, ns, name)
            return
        data = dict(secret.get("data") or {})
        if annotations.get(SA_UID) and data.get("token") and data.get("ca.crt") and data.get("namespace"):
            return
        uid = sa["metadata"]["uid"]
        data["token"] = _b64(self.signer.issue(tokens.plan_legacy_claims(ns, sa["metadata"]["name"], uid, name)))
        data["ca.crt"] = _b64(self.ca_pem)
        data["namespace"] = _b64(ns)
        new = dict(secret, data=data)
        new["metadata"] = dict(secret["metadata"], annotations=dict(annotations, **{SA_UID: uid}))
        self.store.update(SECRETS, new)
        self.writes += 1
