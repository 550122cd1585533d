"""ConfigMaps and Secrets at admission: keys, sizes, immutability, Secret types and stringData.
Pure. Wording from k8s.io/kubernetes/pkg/apis/core/validation.

A Secret's stringData is merged into data (base64 of its UTF-8) and dropped, as the real server's
conversion does, so a read never shows it; data values must be valid base64.
"""
from __future__ import annotations

import base64
import binascii
import re

from .. import errors
from ..errors import Cause
from .fields import forbidden, invalid, raise_if, required

CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
                  "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
MAX_SIZE = 1024 * 1024          # bytes of data and binaryData together (etcd's object limit)
IMMUTABLE_MSG = "field is immutable when `immutable` is set"

# Secret type -> data keys it requires (validation.ValidateSecret)
SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"


def check_key(path: str, key: str) -> list[Cause]:
    out = []
    if len(key) > 253:
        out.append(invalid(path, key, "must be no more than 253 characters"))
    if not CONFIG_KEY.match(key):
        out.append(invalid(path, key, CONFIG_KEY_MSG))
    if key in (".", ".."):
        out.append(invalid(path, key, f"must not be '{key}'"))
    elif key.startswith(".."):
        out.append(invalid(path, key, "must not start with '..'"))
    return out


def _decoded_size(value: str) -> int:
    return len(value) * 3 // 4 - value.count("=")


def validate_config_map(cm: dict) -> list[Cause]:
    data, binary = cm.get("data") or {}, cm.get("binaryData") or {}
    causes = []
    size = 0
    for key, value in data.items():
        causes += check_key(f"data[{key}]", key)
        size += len(key) + len(str(value))
    for key, value in binary.items():
        causes += check_key(f"binaryData[{key}]", key)
        if key in data:
            causes.append(invalid(f"binaryData[{key}]", key, "duplicate of key present in data"))
        size += len(key) + _decoded_size(str(value))
    if size > MAX_SIZE:
        causes.append(Cause("", "FieldValueTooLong", f"Too long: must have at most {MAX_SIZE} bytes"))
    return causes


def validate_immutable(obj: dict, old: dict, fields: tuple[str, ...]) -> list[Cause]:
    """An object once immutable keeps its data and stays immutable."""
    if not old.get("immutable"):
        return []
    causes = [forbidden(f, IMMUTABLE_MSG) for f in fields if (obj.get(f) or {}) != (old.get(f) or {})]
    if not obj.get("immutable"):
        causes.append(forbidden("immutable", IMMUTABLE_MSG))
    return causes


def _bad_base64_offset(value: str) -> int | None:
    """Where Go's base64 decoder stops, or None when `value` decodes."""
    try:
        base64.b64decode(value, validate=True)
        return None
    except (binascii.Error, ValueError):
        pass
    for i, ch in enumerate(value):
        if not (ch.isalnum() or ch in "+/="):
            return i
    return len(value) - len(value) % 4


def default_secret(secret: dict) -> dict:
    """type Opaque; stringData merged into data as base64 and removed; a data value that is not
    base64 is the decoder's 400, as the real server fails to decode it."""
    if not secret.get("type"):
        secret["type"] = "Opaque"
    data = secret.get("data") or {}
    if not isinstance(data, dict):
        raise errors.bad_request("Secret in version \"v1\" cannot be handled as a Secret: data must be an object")
    for key, value in data.items():
        offset = _bad_base64_offset(value) if isinstance(value, str) else 0
        if offset is not None:
            raise errors.bad_request(f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                                     f"at input byte {offset}")
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        secret["data"] = data
    return secret


def validate_secret(secret: dict) -> list[Cause]:
    data = secret.get("data") or {}
    causes = []
    size = 0
    for key, value in data.items():
        causes += check_key(f"data[{key}]", key)
        size += _decoded_size(value)
    if size > MAX_SIZE:
        causes.append(Cause("data", "FieldValueTooLong", f"Too long: must have at most {MAX_SIZE} bytes"))
    stype = secret.get("type", "Opaque")
    for key in SECRET_REQUIRED_KEYS.get(stype, ()):
        if key not in data:
            causes.append(required(f"data[{key}]"))
    if stype == "kubernetes.io/service-account-token":
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        if not annotations.get(SA_NAME_ANNOTATION):
            causes.append(required(f"metadata.annotations[{SA_NAME_ANNOTATION}]"))
    if stype == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        causes.append(required("data[username]"))
    return causes


def validate_secret_update(secret: dict, old: dict) -> list[Cause]:
    causes = validate_immutable(secret, old, ("data",))
    if secret.get("type") != old.get("type"):
        causes.append(invalid("type", secret.get("type"), "field is immutable"))
    return causes


def admit_config_map(obj: dict, old: dict | None) -> dict:
    causes = validate_config_map(obj)
    if old is not None:
        causes += validate_immutable(obj, old, ("data", "binaryData"))
    raise_if(causes, "", "ConfigMap", obj)
    return obj


def admit_secret(obj: dict, old: dict | None) -> dict:
    default_secret(obj)
    causes = validate_secret(obj)
    if old is not None:
        causes += validate_secret_update(obj, old)
    raise_if(causes, "", "Secret", obj)
    return obj
