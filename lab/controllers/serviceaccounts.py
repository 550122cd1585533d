"""What every namespace holds from birth: the `default` ServiceAccount (kube-controller-manager's
serviceaccount controller) and the kube-root-ca.crt ConfigMap with the cluster's CA (its root CA
publisher). Either is made again when deleted; the ConfigMap is put back when changed.
"""
from __future__ import annotations

import logging

from ..resources import CONFIG_MAPS, NAMESPACES, SERVICE_ACCOUNTS
from .loop import Reconciler

log = logging.getLogger("kubeweft.lab.controllers.serviceaccounts")


DEFAULT_SA = "default"
ROOT_CA = "kube-root-ca.crt"
ROOT_CA_DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
                       "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
                       "guaranteed across distributions of Kubernetes clusters.")


def plan_root_ca(namespace: str, ca_pem: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CA, "namespace": namespace,
                         "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
            "data": {"ca.crt": ca_pem}}


class ServiceAccountsController(Reconciler):
    name = "serviceaccount-controller"

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        try:
            self.ca_pem = (cfg.pki_dir / "ca.crt").read_text()
        except OSError:
            self.ca_pem = ""                  # an API server without a PKI (in-process tests)

    def prime(self) -> None:
        for ns in self.store.list(NAMESPACES)[0]:
            self.mark(ns["metadata"]["name"])

    def on_event(self, ev) -> None:
        meta = ev.obj["metadata"]
        if ev.resource is NAMESPACES and ev.type != "DELETED":
            self.mark(meta["name"])
        elif ev.resource is SERVICE_ACCOUNTS and ev.type == "DELETED" and meta["name"] == DEFAULT_SA or ev.resource is CONFIG_MAPS and meta["name"] == ROOT_CA and not self.syncing:
            self.mark(meta.get("namespace", ""))

    def sync(self, namespace: str) -> None:
        ns = self.store.try_get(NAMESPACES, "", namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp") or (ns.get("status") or {}).get("phase") == "Terminating":
            return
        if self.store.try_get(SERVICE_ACCOUNTS, namespace, DEFAULT_SA) is None:
            self.store.create(SERVICE_ACCOUNTS, {"metadata": {"name": DEFAULT_SA, "namespace": namespace}})
            self.writes += 1
        if not self.ca_pem:
            return
        want = plan_root_ca(namespace, self.ca_pem)
        have = self.store.try_get(CONFIG_MAPS, namespace, ROOT_CA)
        if have is None:
            self.store.create(CONFIG_MAPS, want)
            self.writes += 1
        elif have.get("data") != want["data"]:
            new = dict(have, data=want["data"])
            new["metadata"] = dict(have["metadata"])
            self.store.update(CONFIG_MAPS, new)
            self.writes += 1
