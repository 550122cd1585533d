"""The ServiceAccount admission plugin on Pod creation: the pod runs as `default` unless it names
another ServiceAccount, and gets the projected kube-api-access-<suffix> volume (a token, the
cluster's CA from kube-root-ca.crt, the namespace) mounted read-only at
/var/run/secrets/kubernetes.io/serviceaccount in every container, unless automountServiceAccountToken
is false on the pod or on its ServiceAccount.

A pod naming a ServiceAccount that does not exist is refused with the real message; one that runs
as `default` in a namespace whose `default` the controller has not made yet is let through (the
real server refuses it, and its clients retry).
"""
from __future__ import annotations

import secrets

from .. import errors
from ..resources import SERVICE_ACCOUNTS

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_EXPIRATION = 3607                  # the kubelet's projected tokens: one hour and 7 s
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"  # utilrand's alphabet, as in kube-api-access-xxxxx


def plan_token_volume(suffix: str) -> dict:
    return {"name": f"kube-api-access-{suffix}", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}


def mount_token(spec: dict, suffix: str) -> None:
    """Add the token volume and mount it in every container that has nothing at MOUNT_PATH (in place)."""
    if any((v.get("projected") or {}) and v.get("name", "").startswith("kube-api-access-")
           for v in spec.get("volumes") or []):
        return
    volume = plan_token_volume(suffix)
    mounted = False
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            mounts = c.setdefault("volumeMounts", [])
            if any(m.get("mountPath") == MOUNT_PATH for m in mounts):
                continue
            mounts.append({"name": volume["name"], "mountPath": MOUNT_PATH, "readOnly": True})
            mounted = True
    if mounted:
        spec.setdefault("volumes", []).append(volume)


def admit_pod_service_account(store, pod: dict) -> dict:
    spec = pod.setdefault("spec", {})
    name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = name
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    sa = store.try_get(SERVICE_ACCOUNTS, namespace, name)
    if sa is None and name != "default":
        pod_name = (pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get("generateName", "")
        raise errors.APIError(403, "Forbidden",
                              f'pods "{pod_name}" is forbidden: error looking up service account '
                              f'{namespace}/{name}: serviceaccount "{name}" not found',
                              {"name": pod_name, "kind": "pods"})
    automount = spec.get("automountServiceAccountToken")
    if automount is None and sa is not None:
        automount = sa.get("automountServiceAccountToken")
    if automount is not False:
        mount_token(spec, "".join(secrets.choice(_SUFFIX) for _ in range(5)))
    return pod
