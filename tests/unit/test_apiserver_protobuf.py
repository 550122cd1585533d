"""The protobuf bodies kubectl's typed clients send (kubectl create service|namespace|secret|...,
kubectl auth can-i)."""
import pytest
from kubeweft.lab import errors
from kubeweft.lab.apiserver.protobuf import MAGIC, decode_object


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def s(num: int, text: str) -> bytes:
    return ld(num, text.encode())


def i(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def entry(num: int, k: str, v: str) -> bytes:
    return ld(num, s(1, k) + s(2, v))


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return MAGIC + ld(1, s(1, api_version) + s(2, kind)) + ld(2, raw) + s(3, "") + s(4, "")


def test_service_as_kubectl_create_service_sends_it():
    meta = s(1, "foo") + s(2, "") + s(3, "") + entry(11, "app", "foo") + ld(8, i(1, -62135596800))
    port = s(1, "80-8080") + s(2, "TCP") + i(3, 80) + ld(4, i(1, 0) + i(2, 8080) + s(3, "")) + i(5, 0)
    spec = ld(1, port) + entry(2, "app", "foo") + s(3, "") + s(4, "NodePort") + s(10, "") + i(99, 7)
    obj = decode_object(envelope("v1", "Service", ld(1, meta) + ld(2, spec) + ld(3, ld(1, b""))))
    assert obj == {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "foo", "labels": {"app": "foo"}},
                   "spec": {"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                            "selector": {"app": "foo"}, "type": "NodePort"}}


def test_named_target_port_and_namespace():
    port = i(3, 53) + ld(4, i(1, 1) + s(3, "dns"))
    obj = decode_object(envelope("v1", "Service", ld(2, ld(1, port))))
    assert obj["spec"]["ports"] == [{"port": 53, "targetPort": "dns"}]
    ns = decode_object(envelope("v1", "Namespace", ld(1, s(1, "team-a"))))
    assert ns == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}


def test_unknown_kind_is_415_and_garbage_is_400():
    with pytest.raises(errors.APIError) as e:
        decode_object(envelope("v1", "PersistentVolumeClaim", b""))
    assert e.value.code == 415
    with pytest.raises(errors.APIError) as e:
        decode_object(MAGIC + b"\x0a\xff")
    assert e.value.code == 400
    with pytest.raises(errors.APIError) as e:
        decode_object(b"{}")
    assert e.value.code == 400


def test_secret_bytes_are_base64_and_pointer_bools_kept():
    meta = s(1, "db")
    raw = ld(1, meta) + ld(2, s(1, "pw") + ld(2, b"\x00s3cr3t")) + s(3, "Opaque") + entry(4, "user", "root") + i(5, 0)
    obj = decode_object(envelope("v1", "Secret", raw))
    assert obj == {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"pw": "AHMzY3IzdA=="},
                   "type": "Opaque", "stringData": {"user": "root"}, "immutable": False}


def test_access_review_and_token_request():
    attrs = s(1, "team") + s(2, "list") + s(3, "") + s(5, "pods")
    obj = decode_object(envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", ld(1, b"") + ld(2, ld(1, attrs))))
    assert obj["spec"] == {"resourceAttributes": {"namespace": "team", "verb": "list", "resource": "pods"}}
    spec = s(1, "vault") + s(1, "api") + i(4, 600) + ld(3, s(1, "Pod") + s(3, "web-0"))
    obj = decode_object(envelope("authentication.k8s.io/v1", "TokenRequest", ld(2, spec)))
    assert obj["spec"] == {"audiences": ["vault", "api"], "expirationSeconds": 600,
                           "boundObjectRef": {"kind": "Pod", "name": "web-0"}}
    rule = s(1, "get") + s(2, "") + s(3, "pods") + s(3, "pods/log")
    binding = ld(2, s(1, "ServiceAccount") + s(3, "reader") + s(4, "team")) + ld(3, s(1, "rbac.authorization.k8s.io")
                                                                                 + s(2, "Role") + s(3, "r"))
    assert decode_object(envelope("rbac.authorization.k8s.io/v1", "Role", ld(2, rule)))["rules"] == [
        {"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "pods/log"]}]
    obj = decode_object(envelope("rbac.authorization.k8s.io/v1", "RoleBinding", binding))
    assert obj["subjects"] == [{"kind": "ServiceAccount", "name": "reader", "namespace": "team"}]
    assert obj["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}
