"""Decoding of the Kubernetes protobuf wire format, for the few request bodies kubectl sends as
application/vnd.kubernetes.protobuf (its typed clients: `kubectl create service|namespace|
deployment`).
Pure. Only the fields those commands set are known; other fields are skipped. Responses are
always JSON, which every client accepts.

The envelope is b"k8s\\x00" + runtime.Unknown{typeMeta=1{apiVersion=1, kind=2}, raw=2}, and raw
is the object's message, field numbers from k8s.io/api's generated.proto. gogo-protobuf writes
empty strings and zero numbers of non-pointer fields too; they are dropped here, as JSON's
omitempty would.
"""
from __future__ import annotations

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
    # kubectl create deployment (apps/v1 generated.proto)
    "Deployment": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "DeploymentSpec", False)},
    "DeploymentSpec": {1: ("replicas", _P, False), 2: ("selector", "LabelSelector", False),
                       3: ("template", "PodTemplateSpec", False), 4: ("strategy", "DeploymentStrategy", False),
                       5: ("minReadySeconds", _I, False), 6: ("revisionHistoryLimit", _P, False),
                       7: ("paused", _B, False), 9: ("progressDeadlineSeconds", _P, False)},
    "DeploymentStrategy": {1: ("type", _S, False), 2: ("rollingUpdate", "RollingUpdateDeployment", False)},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "IntOrString", False),
                                2: ("maxSurge", "IntOrString", False)},
    "LabelSelector": {1: ("matchLabels", "map", True),
                      2: ("matchExpressions", "LabelSelectorRequirement", True)},
    "LabelSelectorRequirement": {1: ("key", _S, False), 2: ("operator", _S, False), 3: ("values", _S, True)},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "PodSpec", False)},
    "PodSpec": {2: ("containers", "Container", True), 3: ("restartPolicy", _S, False),
                4: ("terminationGracePeriodSeconds", _P, False), 6: ("dnsPolicy", _S, False),
                7: ("nodeSelector", "map", True), 8: ("serviceAccountName", _S, False),
                10: ("nodeName", _S, False), 11: ("hostNetwork", _B, False)},
    "Container": {1: ("name", _S, False), 2: ("image", _S, False), 3: ("command", _S, True),
                  4: ("args", _S, True), 5: ("workingDir", _S, False), 6: ("ports", "ContainerPort", True),
                  7: ("env", "EnvVar", True)},
    "ContainerPort": {1: ("name", _S, False), 2: ("hostPort", _I, False), 3: ("containerPort", _I, False),
                      4: ("protocol", _S, False), 5: ("hostIP", _S, False)},
    "EnvVar": {1: ("name", _S, False), 2: ("value", _S, False)},
}
TOP_LEVEL = {"Service", "Namespace", "Deployment"}


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


def _map_entry(buf: bytes) -> tuple[str, str]:
    k = v = ""
    for num, _, val in protowire.fields(buf):
        if num == 1:
            k = val.decode()
        elif num == 2:
            v = val.decode()
    return k, v


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
        elif typ == "map":
            k, v = _map_entry(val)
            out.setdefault(field, {})[k] = v
            continue
        elif typ == "IntOrString":
            value = _int_or_string(val)
        else:
            value = decode_message(typ, val)
        if repeated:
            out.setdefault(field, []).append(value)
        elif typ == _P or value not in ("", 0, False, {}):
            out[field] = value
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
