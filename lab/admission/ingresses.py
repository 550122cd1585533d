"""Ingresses and IngressClasses at admission: the default class, and validation with the real
wording (k8s.io/kubernetes/pkg/apis/networking/validation and the DefaultIngressClass plugin).

The pure parts take plain dicts; `admit_ingress` reads the store's IngressClasses only to pick
the default one.
"""
from __future__ import annotations

import re

from ..errors import Cause
from ..resources import INGRESS_CLASSES
from .fields import (
    DNS1123_SUBDOMAIN,
    DNS1123_SUBDOMAIN_MSG,
    PORT_RANGE_MSG,
    check_dns1035,
    check_port_name,
    invalid,
    is_ip,
    raise_if,
    required,
    unsupported,
)

GROUP = "networking.k8s.io"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"                     # the deprecated way to name a class
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")          # sorted, as the server lists them
INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
INVALID_PATH_SUFFIXES = ("/..", "/.")
WILDCARD_DNS1123 = re.compile(r"^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
WILDCARD_MSG = ("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which "
                "must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric "
                "character (e.g. '*.example.com', regex used for validation is "
                "'\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
HTTP_PATH = re.compile(r"^[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")
MAX_CONTROLLER = 250
PARAMETER_SCOPES = ("Cluster", "Namespace")


def _required(path: str, detail: str) -> Cause:
    return Cause(path, "FieldValueRequired", f"Required value: {detail}")


def _subdomain_problems(value: str) -> list[str]:
    out = []
    if len(value) > 253:
        out.append("must be no more than 253 characters")
    if not DNS1123_SUBDOMAIN.match(value):
        out.append(DNS1123_SUBDOMAIN_MSG)
    return out


def _check_host(path: str, host: str) -> list[Cause]:
    """A rule's or a TLS entry's host: a DNS subdomain, or a wildcard one ("*.example.com")."""
    if "*" in host:
        return [] if WILDCARD_DNS1123.match(host) else [invalid(path, host, WILDCARD_MSG)]
    return [invalid(path, host, p) for p in _subdomain_problems(host)]


# --- Ingress ----------------------------------------------------------------------------------

def validate_backend(backend: dict, path: str) -> list[Cause]:
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        return [invalid(path, "", "cannot set both resource and service backends")]
    if resource is not None:
        causes = []
        for key in ("kind", "name"):
            if not resource.get(key):
                causes.append(required(f"{path}.resource.{key}"))
        return causes
    if service is None:
        return [invalid(path, "", "resource or service backend is required")]
    causes = []
    name = service.get("name") or ""
    if not name:
        causes.append(required(f"{path}.service.name"))
    else:
        causes += check_dns1035(f"{path}.service.name", name)
    port = service.get("port") or {}
    port_name, port_number = port.get("name") or "", port.get("number") or 0
    if port_name and port_number:
        causes.append(invalid(path, "", "cannot set both port name & port number"))
    elif port_name:
        causes += check_port_name(f"{path}.service.port.name", port_name)
    elif port_number:
        if not isinstance(port_number, int) or not 1 <= port_number <= 65535:
            causes.append(invalid(f"{path}.service.port.number", port_number, PORT_RANGE_MSG))
    else:
        causes.append(_required(path, "port name or number is required"))
    return causes


def validate_http_path(item: dict, path: str) -> list[Cause]:
    path_type = item.get("pathType")
    if path_type is None:
        return [_required(f"{path}.pathType", "pathType must be specified")]
    value = item.get("path") or ""
    causes = []
    if path_type in ("Exact", "Prefix"):
        if not value.startswith("/"):
            causes.append(invalid(f"{path}.path", value, "must be an absolute path"))
        for seq in INVALID_PATH_SEQUENCES if value else ():
            if seq in value:
                causes.append(invalid(f"{path}.path", value, f"must not contain '{seq}'"))
        for suffix in INVALID_PATH_SUFFIXES if value else ():
            if value.endswith(suffix):
                causes.append(invalid(f"{path}.path", value, f"cannot end with '{suffix}'"))
    elif path_type == "ImplementationSpecific":
        if value and not value.startswith("/"):
            causes.append(invalid(f"{path}.path", value, "must be an absolute path"))
    else:
        causes.append(unsupported(f"{path}.pathType", path_type, PATH_TYPES))
    return causes + validate_backend(item.get("backend") or {}, f"{path}.backend")


def validate_ingress(ing: dict, creating: bool) -> list[Cause]:
    spec = ing.get("spec") or {}
    rules, default = spec.get("rules") or [], spec.get("defaultBackend")
    causes = []
    if not rules and default is None:
        causes.append(invalid("spec", spec.get("rules"), "either `defaultBackend` or `rules` must be specified"))
    if default is not None:
        causes += validate_backend(default, "spec.defaultBackend")
    for i, rule in enumerate(rules):
        host = rule.get("host") or ""
        if host:
            if is_ip(host):
                causes.append(invalid(f"spec.rules[{i}].host", host, "must be a DNS name, not an IP address"))
            causes += _check_host(f"spec.rules[{i}].host", host)
        http = rule.get("http")
        if http is not None:
            paths = http.get("paths") or []
            if not paths:
                causes.append(required(f"spec.rules[{i}].http.paths"))
            for j, item in enumerate(paths):
                causes += validate_http_path(item, f"spec.rules[{i}].http.paths[{j}]")
    for i, tls in enumerate(spec.get("tls") or []):
        for j, host in enumerate(tls.get("hosts") or []):
            causes += _check_host(f"spec.tls[{i}].hosts[{j}]", host)
        secret = tls.get("secretName") or ""
        if secret:
            causes += [invalid(f"spec.tls[{i}].secretName", secret, p) for p in _subdomain_problems(secret)]
    class_name = spec.get("ingressClassName")
    if class_name is not None:
        causes += [invalid("spec.ingressClassName", class_name, p) for p in _subdomain_problems(class_name)]
    annotation = ((ing.get("metadata") or {}).get("annotations") or {}).get(CLASS_ANNOTATION)
    if creating and annotation is not None and class_name is not None and annotation != class_name:
        causes.append(invalid(f"annotations.{CLASS_ANNOTATION}", annotation,
                              "must match `ingressClassName` when both are specified"))
    return causes


def validate_ingress_status(ing: dict) -> list[Cause]:
    causes = []
    lb = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    for i, item in enumerate(lb):
        path = f"status.loadBalancer.ingress[{i}]"
        if item.get("ip") and not is_ip(item["ip"]):
            causes.append(invalid(f"{path}.ip", item["ip"], "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
        if item.get("hostname"):
            causes += [invalid(f"{path}.hostname", item["hostname"], p) for p in _subdomain_problems(item["hostname"])]
            if is_ip(item["hostname"]):
                causes.append(invalid(f"{path}.hostname", item["hostname"], "must be a DNS name, not an IP address"))
    return causes


def pick_default_class(classes: list[dict]) -> str | None:
    """The DefaultIngressClass plugin's choice: among the classes annotated default, the newest
    (ties by name)."""
    defaults = [c for c in classes
                if ((c.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    if not defaults:
        return None
    # by name first: max() keeps the first of equals, so the smallest name wins a tie; RFC 3339
    # timestamps of one format sort as text
    by_name = sorted(defaults, key=lambda c: c["metadata"].get("name", ""))
    return max(by_name, key=lambda c: c["metadata"].get("creationTimestamp", ""))["metadata"]["name"]


def default_ingress_class(ing: dict, classes: list[dict]) -> dict:
    """On create: an Ingress naming no class (neither field nor annotation) gets the default one."""
    spec = ing.setdefault("spec", {})
    annotations = (ing.get("metadata") or {}).get("annotations") or {}
    if spec.get("ingressClassName") is None and CLASS_ANNOTATION not in annotations:
        name = pick_default_class(classes)
        if name is not None:
            spec["ingressClassName"] = name
    return ing


def admit_ingress(store, operation: str, ing: dict, subresource: str | None) -> dict:
    if subresource == "status":
        raise_if(validate_ingress_status(ing), GROUP, "Ingress", ing)
        return ing
    if operation == "CREATE":
        default_ingress_class(ing, store.list(INGRESS_CLASSES)[0])
    raise_if(validate_ingress(ing, operation == "CREATE"), GROUP, "Ingress", ing)
    return ing


# --- IngressClass -----------------------------------------------------------------------------

def validate_controller(controller: str) -> list[Cause]:
    """IsDomainPrefixedPath, and at most 250 characters."""
    path = "spec.controller"
    if not controller:
        return [required(path)]
    causes = []
    if len(controller) > MAX_CONTROLLER:
        causes.append(Cause(path, "FieldValueTooLong", f"Too long: may not be more than {MAX_CONTROLLER} bytes"))
    host, sep, rest = controller.partition("/")
    if not sep or not host or not rest:
        return causes + [invalid(path, controller, 'must be a domain-prefixed path (such as "acme.io/foo")')]
    causes += [invalid(path, host, p) for p in _subdomain_problems(host)]
    if not HTTP_PATH.match(rest):
        causes.append(invalid(path, rest, "Invalid path (regex used for validation is "
                                          "'[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')"))
    return causes


def validate_parameters(params: dict | None) -> list[Cause]:
    if params is None:
        return []
    path = "spec.parameters"
    causes = []
    if params.get("apiGroup") is not None:
        causes += [invalid(f"{path}.apiGroup", params["apiGroup"], p) for p in _subdomain_problems(params["apiGroup"])]
    for key in ("kind", "name"):
        if not params.get(key):
            causes.append(required(f"{path}.{key}"))
    scope = params.get("scope")
    if scope is None:
        return causes + [required(f"{path}.scope")]
    if scope not in PARAMETER_SCOPES:
        return causes + [unsupported(f"{path}.scope", scope, PARAMETER_SCOPES)]
    if scope == "Namespace" and params.get("namespace") is None:
        causes.append(_required(f"{path}.namespace", "`parameters.scope` is set to 'Namespace'"))
    if scope == "Cluster" and params.get("namespace") is not None:
        causes.append(Cause(f"{path}.namespace", "FieldValueForbidden",
                            "Forbidden: `parameters.scope` is set to 'Cluster'"))
    return causes


def validate_ingress_class(ic: dict, old: dict | None) -> list[Cause]:
    spec = ic.get("spec") or {}
    causes = []
    if old is not None:
        was = (old.get("spec") or {}).get("controller")
        if spec.get("controller") != was:
            causes.append(invalid("spec.controller", spec.get("controller"), "field is immutable"))
    causes += validate_controller(spec.get("controller") or "")
    return causes + validate_parameters(spec.get("parameters"))


def admit_ingress_class(ic: dict, old: dict | None) -> dict:
    raise_if(validate_ingress_class(ic, old), GROUP, "IngressClass", ic)
    return ic
