"""Decoding of the Kubernetes protobuf wire format, for the few request bodies kubectl sends as
application/vnd.kubernetes.protobuf (its typed clients: `kubectl create service|namespace|configmap|
secret|serviceaccount|token|role|rolebinding|clusterrole|clusterrolebinding|deployment`, `kubectl
auth can-i` and `kubectl auth whoami`).
Pure. Only the fields those commands set are known; other fields are skipped. Responses are
always JSON, which every client accepts.

The envelope is b"k8s\\x00" + runtime.Unknown{typeMeta=1{apiVersion=1, kind=2}, raw=2}, and raw
is the object's message, field numbers from k8s.io/api's generated.proto. gogo-protobuf writes
empty strings and zero numbers of non-pointer fields too; they are dropped here, as JSON's
omitempty would.
"""
from __future__ import annotations

import base64

from kubeweft.cni import protowire

from .. import errors

MAGIC = b"k8s\x00"

# message -> field number -> (json name, type, repeated); type is a scalar kind or a message name.
# _P is an int behind a Go pointer (replicas): its zero is sent, and kept here.
_S, _I, _B, _P = "string", "int", "bool", "int*"
SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Unknown": {1: ("typeMeta", "TypeMeta", False), 2: ("raw", "bytes", False)},
    "TypeMeta": {1: ("apiVersion", _S, False), 2: ("kind", _S, False)},
    "ObjectMeta": {1: ("name", _S, False), 2: ("generateName", _S, False), 3: ("namespace", _S, False),
                   11: ("labels", "map", True), 12: ("annotations", "map", True),
                   14: ("finalizers", _S, True)},
    "Service": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "ServiceSpec", False)},
    "ServiceSpec": {1: ("ports", "ServicePort", True), 2: ("selector", "map", True),
                    3: ("clusterIP", _S, False), 4: ("type", _S, False), 5: ("externalIPs", _S, True),
                    7: ("sessionAffinity", _S, False), 10: ("externalName", _S, False),
                    18: ("clusterIPs", _S, True)},
    "ServicePort": {1: ("name", _S, False), 2: ("protocol", _S, False), 3: ("port", _I, False),
                    4: ("targetPort", "IntOrString", False), 5: ("nodePort", _I, False),
                    6: ("appProtocol", _S, False)},
    "Namespace": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False)},
    "NamespaceSpec": {1: ("finalizers", _S, True)},
    "ConfigMap": {1: ("metadata", "ObjectMeta", False), 2: ("data", "map", True),
                  3: ("binaryData", "bytesmap", True), 4: ("immutable", _B, False)},
    "Secret": {1: ("metadata", "ObjectMeta", False), 2: ("data", "bytesmap", True), 3: ("type", _S, False),
               4: ("stringData", "map", True), 5: ("immutable", _B, False)},
    "ServiceAccount": {1: ("metadata", "ObjectMeta", False), 2: ("secrets", "ObjectReference", True),
                       3: ("imagePullSecrets", "LocalObjectReference", True),
                       4: ("automountServiceAccountToken", _B, False)},
    "ObjectReference": {1: ("kind", _S, False), 2: ("namespace", _S, False), 3: ("name", _S, False),
                        4: ("uid", _S, False), 5: ("apiVersion", _S, False)},
    "LocalObjectReference": {1: ("name", _S, False)},
    # kubectl create ingress (networking/v1 generated.proto); a field named "" is inlined in JSON
    "Ingress": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "IngressSpec", False)},
    "IngressSpec": {1: ("defaultBackend", "IngressBackend", False), 2: ("tls", "IngressTLS", True),
                    3: ("rules", "IngressRule", True), 4: ("ingressClassName", _S, False)},
    "IngressBackend": {3: ("resource", "TypedLocalObjectReference", False),
                       4: ("service", "IngressServiceBackend", False)},
    "IngressServiceBackend": {1: ("name", _S, False), 2: ("port", "ServiceBackendPort", False)},
    "ServiceBackendPort": {1: ("name", _S, False), 2: ("number", _I, False)},
    "TypedLocalObjectReference": {1: ("apiGroup", _S, False), 2: ("kind", _S, False), 3: ("name", _S, False)},
    "IngressTLS": {1: ("hosts", _S, True), 2: ("secretName", _S, False)},
    "IngressRule": {1: ("host", _S, False), 2: ("", "IngressRuleValue", False)},
    "IngressRuleValue": {1: ("http", "HTTPIngressRuleValue", False)},
    "HTTPIngressRuleValue": {1: ("paths", "HTTPIngressPath", True)},
    "HTTPIngressPath": {1: ("path", _S, False), 2: ("backend", "IngressBackend", False),
                        3: ("pathType", _S, False)},
    "IngressClass": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "IngressClassSpec", False)},
    "IngressClassSpec": {1: ("controller", _S, False)},
    "TokenRequest": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "TokenRequestSpec", False)},
    "TokenRequestSpec": {1: ("audiences", _S, True), 3: ("boundObjectRef", "BoundObjectReference", False),
                         4: ("expirationSeconds", _I, False)},
    "BoundObjectReference": {1: ("kind", _S, False), 2: ("apiVersion", _S, False), 3: ("name", _S, False),
                             4: ("uid", _S, False)},
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "SubjectAccessReviewSpec", False)},
    "SubjectAccessReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "SubjectAccessReviewSpec", False)},
    "LocalSubjectAccessReview": {1: ("metadata", "ObjectMeta", False),
                                 2: ("spec", "SubjectAccessReviewSpec", False)},
    "SubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes", False),
                                2: ("nonResourceAttributes", "NonResourceAttributes", False),
                                3: ("user", _S, False), 4: ("groups", _S, True), 6: ("uid", _S, False)},
    "ResourceAttributes": {1: ("namespace", _S, False), 2: ("verb", _S, False), 3: ("group", _S, False),
                           4: ("version", _S, False), 5: ("resource", _S, False), 6: ("subresource", _S, False),
                           7: ("name", _S, False)},
    "NonResourceAttributes": {1: ("path", _S, False), 2: ("verb", _S, False)},
    "SelfSubjectRulesReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "SelfSubjectRulesReviewSpec", False)},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", _S, False)},
    "SelfSubjectReview": {1: ("metadata", "ObjectMeta", False)},
    "Role": {1: ("metadata", "ObjectMeta", False), 2: ("rules", "PolicyRule", True)},
    "ClusterRole": {1: ("metadata", "ObjectMeta", False), 2: ("rules", "PolicyRule", True),
                    3: ("aggregationRule", "AggregationRule", False)},
    "PolicyRule": {1: ("verbs", _S, True), 2: ("apiGroups", _S, True), 3: ("resources", _S, True),
                   4: ("resourceNames", _S, True), 5: ("nonResourceURLs", _S, True)},
    "AggregationRule": {1: ("clusterRoleSelectors", "LabelSelector", True)},
    "LabelSelector": {1: ("matchLabels", "map", True), 2: ("matchExpressions", "LabelSelectorRequirement", True)},
    "LabelSelectorRequirement": {1: ("key", _S, False), 2: ("operator", _S, False), 3: ("values", _S, True)},
    "RoleBinding": {1: ("metadata", "ObjectMeta", False), 2: ("subjects", "Subject", True),
                    3: ("roleRef", "RoleRef", False)},
    "ClusterRoleBinding": {1: ("metadata", "ObjectMeta", False), 2: ("subjects", "Subject", True),
                           3: ("roleRef", "RoleRef", False)},
    "Subject": {1: ("kind", _S, False), 2: ("apiGroup", _S, False), 3: ("name", _S, False),
                4: ("namespace", _S, False)},
    "RoleRef": {1: ("apiGroup", _S, False), 2: ("kind", _S, False), 3: ("name", _S, False)},
    # kubectl create deployment (apps/v1 generated.proto)
    "Deployment": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "DeploymentSpec", False)},
    "DeploymentSpec": {1: ("replicas", _P, False), 2: ("selector", "LabelSelector", False),
                       3: ("template", "PodTemplateSpec", False), 4: ("strategy", "DeploymentStrategy", False),
                       5: ("minReadySeconds", _I, False), 6: ("revisionHistoryLimit", _P, False),
                       9: ("progressDeadlineSeconds", _P, False)},
    "DeploymentStrategy": {1: ("type", _S, False), 2: ("rollingUpdate", "RollingUpdateDeployment", False)},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "IntOrString", False),
                                2: ("maxSurge", "IntOrString", False)},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "PodSpec", False)},
    "PodSpec": {2: ("containers", "Container", True), 3: ("restartPolicy", _S, False),
                4: ("terminationGracePeriodSeconds", _P, False), 6: ("dnsPolicy", _S, False),
                7: ("nodeSelector", "map", True), 8: ("serviceAccountName", _S, False),
                10: ("nodeName", _S, False)},
    "Container": {1: ("name", _S, False), 2: ("image", _S, False), 3: ("command", _S, True),
                  4: ("args", _S, True), 5: ("workingDir", _S, False), 6: ("ports", "ContainerPort", True),
                  7: ("env", "EnvVar", True)},
    "ContainerPort": {1: ("name", _S, False), 2: ("hostPort", _I, False), 3: ("containerPort", _I, False),
                      4: ("protocol", _S, False), 5: ("hostIP", _S, False)},
    "EnvVar": {1: ("name", _S, False), 2: ("value", _S, False)},
}
TOP_LEVEL = {"Ingress", "IngressClass", "Service", "Namespace", "ConfigMap", "Secret", "ServiceAccount",
             "TokenRequest", "SelfSubjectAccessReview", "SubjectAccessReview", "LocalSubjectAccessReview",
             "SelfSubjectRulesReview", "SelfSubjectReview", "Role", "ClusterRole", "RoleBinding",
             "ClusterRoleBinding", "Deployment"}


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _int_or_string(buf: bytes) -> int | str:
    kind, ival, sval = 0, 0, ""
    for num, _, val in protowire.fields(buf):
        if num == 1:
            kind = val
        elif num == 2:
            ival = _signed(val)
        elif num == 3:
            sval = val.decode()
    return sval if kind == 1 else ival


def _map_entry(buf: bytes, raw: bool = False) -> tuple[str, str]:
    """One map<string, string> entry; with raw, a map<string, bytes> entry as JSON writes it
    (base64)."""
    k, v = "", b""
    for num, _, val in protowire.fields(buf):
        if num == 1:
            k = val.decode()
        elif num == 2:
            v = val
    return k, base64.b64encode(v).decode() if raw else v.decode()


def decode_message(name: str, buf: bytes) -> dict:
    schema = SCHEMA[name]
    out: dict = {}
    for num, _, val in protowire.fields(buf):
        if num not in schema:
            continue
        field, typ, repeated = schema[num]
        if typ == _S:
            value = val.decode()
        elif typ in (_I, _P):
            value = _signed(val)
        elif typ == _B:
            value = bool(val)
        elif typ == "bytes":
            value = val
        elif typ in ("map", "bytesmap"):
            k, v = _map_entry(val, raw=typ == "bytesmap")
            out.setdefault(field, {})[k] = v
            continue
        elif field == "":
            out.update(decode_message(typ, val))
            continue
        elif typ == "IntOrString":
            value = _int_or_string(val)
        else:
            value = decode_message(typ, val)
        if repeated:
            out.setdefault(field, []).append(value)
        elif typ in (_B, _P) or value not in ("", 0, {}):
            out[field] = value           # bools and _P ints decoded here are pointers: present means set
    return out


def decode_object(body: bytes) -> dict:
    """The JSON form of a protobuf-encoded object; 415 for kinds this decoder does not know."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("protobuf body without the k8s envelope")
    try:
        unknown = decode_message("Unknown", body[len(MAGIC):])
        tm = unknown.get("typeMeta", {})
        kind = tm.get("kind", "")
        if kind not in TOP_LEVEL:
            raise errors.unsupported_media_type("application/vnd.kubernetes.protobuf")
        obj = decode_message(kind, unknown.get("raw", b""))
    except (ValueError, UnicodeDecodeError, IndexError) as e:
        raise errors.bad_request(f"error decoding protobuf body: {e}") from None
    return {"apiVersion": tm.get("apiVersion", "v1"), "kind": kind, **obj}
