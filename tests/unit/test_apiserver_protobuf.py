"""The protobuf bodies kubectl's typed clients send (kubectl create service|namespace)."""
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
        decode_object(envelope("v1", "Secret", b""))
    assert e.value.code == 415
    with pytest.raises(errors.APIError) as e:
        decode_object(MAGIC + b"\x0a\xff")
    assert e.value.code == 400
    with pytest.raises(errors.APIError) as e:
        decode_object(b"{}")
    assert e.value.code == 400
