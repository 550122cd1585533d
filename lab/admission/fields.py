"""Field errors as the real API server words them (field.Invalid, Required, ...), and the name and
port checks that several kinds share. Pure."""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from kubeweft.cni.protocols import PROTOCOLS as _PROTOCOLS

from .. import errors
from ..errors import Cause

PROTOCOLS = tuple(sorted(_PROTOCOLS))       # in the order the API server lists them

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")

DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
               "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
               "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                     "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
                     "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                         "characters, '-' or '.', and must start and end with an alphanumeric character "
                         "(e.g. 'example.com', regex used for validation is "
                         "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"
CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def raise_if(causes: list[Cause], group: str, kind: str, obj: dict) -> None:
    if causes:
        raise errors.invalid(group, kind, (obj.get("metadata") or {}).get("name", ""), causes)


def fmt_value(value: Any) -> str:
    """A bad value as the real server prints it: numbers bare, strings quoted, lists as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, "FieldValueInvalid", f"Invalid value: {fmt_value(value)}: {detail}")


def required(path: str) -> Cause:
    return Cause(path, "FieldValueRequired", "Required value")


def duplicate(path: str, shown: str) -> Cause:
    return Cause(path, "FieldValueDuplicate", f"Duplicate value: {shown}")


def forbidden(path: str, detail: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"Forbidden: {detail}")


def unsupported(path: str, value: Any, supported: tuple[str, ...]) -> Cause:
    shown = ", ".join(json.dumps(s) for s in supported)
    return Cause(path, "FieldValueNotSupported",
                 f"Unsupported value: {fmt_value(value)}: supported values: {shown}")



def is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return False
    return True


def check_dns1035(path: str, name: str) -> list[Cause]:
    if not name:
        return []
    out = []
    if len(name) > 63:
        out.append(invalid(path, name, "must be no more than 63 characters"))
    if not DNS1035.match(name):
        out.append(invalid(path, name, DNS1035_MSG))
    return out


def check_port_number(path: str, value: Any) -> list[Cause]:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        return [invalid(path, value, PORT_RANGE_MSG)]
    return []


def check_port_name(path: str, name: str) -> list[Cause]:
    """A named targetPort or containerPort: IANA_SVC_NAME."""
    if len(name) > 15:
        return [invalid(path, name, "must be no more than 15 characters")]
    if not IANA_SVC_NAME.match(name):
        return [invalid(path, name, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")]
    if "--" in name:
        return [invalid(path, name, "must not contain consecutive hyphens")]
    if name.startswith("-") or name.endswith("-"):
        return [invalid(path, name, "must not begin or end with a hyphen")]
    if not re.search("[a-z]", name):
        return [invalid(path, name, "must contain at least one letter (a-z)")]
    return []

