"""What the Ingress controller keeps of each API object: frozen views made at the watch edge
(the informers' transform), so the renderer works on plain values and never on API JSON.

A kubernetes.io/tls Secret's certificate is parsed here once: its names (for ingress-nginx's
match of a host against a certificate) and whether its key belongs to it, so a broken Secret
falls back to the default certificate instead of failing `nginx -t` for every Ingress.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace

from .certs import certificate_names

SSL_REDIRECT = "nginx.ingress.kubernetes.io/ssl-redirect"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Key = tuple[str, str]           # (namespace, name); namespace "" for cluster-scoped kinds


@dataclass(frozen=True)
class Backend:
    service: str
    port: str                   # the Ingress's service port: a number or a port name, as text


@dataclass(frozen=True)
class HTTPPath:
    path: str
    path_type: str              # Exact, Prefix or ImplementationSpecific
    backend: Backend | None     # None: a resource backend, which nginx cannot serve


@dataclass(frozen=True)
class Rule:
    host: str                   # "" matches every host
    paths: tuple[HTTPPath, ...]


@dataclass(frozen=True)
class TLS:
    hosts: tuple[str, ...]
    secret: str


@dataclass(frozen=True)
class IngressView:
    namespace: str
    name: str
    created: str                # creationTimestamp: ingress-nginx orders Ingresses by it
    class_name: str | None      # spec.ingressClassName
    class_annotation: str | None
    default_backend: Backend | None
    rules: tuple[Rule, ...]
    tls: tuple[TLS, ...]
    ssl_redirect: bool
    addresses: tuple[tuple[str, str], ...]      # status.loadBalancer.ingress as (ip, hostname)

    @property
    def key(self) -> Key:
        return self.namespace, self.name


@dataclass(frozen=True)
class IngressClassView:
    name: str
    controller: str
    is_default: bool


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: str
    protocol: str


@dataclass(frozen=True)
class ServiceView:
    namespace: str
    name: str
    type: str
    cluster_ip: str
    ports: tuple[ServicePort, ...]
    external_ips: tuple[str, ...]
    lb_addresses: tuple[tuple[str, str], ...]   # status.loadBalancer.ingress as (ip, hostname)
    external_name: str = ""


@dataclass(frozen=True)
class SlicePort:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class SliceView:
    namespace: str
    name: str
    service: str
    ports: tuple[SlicePort, ...]
    ready: tuple[str, ...]      # addresses of the ready endpoints (ready unset counts as ready)


@dataclass(frozen=True)
class SecretView:
    namespace: str
    name: str
    pem: bytes                  # key then certificate chain, as one file nginx reads for both
    names: tuple[str, ...]      # the certificate's DNS names (the subject's CN when it has none)
    problem: str                # why it cannot serve ("" when it can)


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _backend(b: dict | None) -> Backend | None:
    svc = (b or {}).get("service")
    if not svc:
        return None
    port = svc.get("port") or {}
    return Backend(svc.get("name", ""), str(port.get("number") or port.get("name") or ""))


def _lb(status: dict | None) -> tuple[tuple[str, str], ...]:
    items = ((status or {}).get("loadBalancer") or {}).get("ingress") or []
    return tuple((i.get("ip") or "", i.get("hostname") or "") for i in items)


def ingress_view(obj: dict) -> IngressView:
    meta, spec = _meta(obj), obj.get("spec") or {}
    annotations = meta.get("annotations") or {}
    rules = []
    for r in spec.get("rules") or []:
        paths = tuple(HTTPPath(p.get("path") or "", p.get("pathType") or "ImplementationSpecific",
                               _backend(p.get("backend")))
                      for p in (r.get("http") or {}).get("paths") or [])
        rules.append(Rule(r.get("host") or "", paths))
    tls = tuple(TLS(tuple(t.get("hosts") or ()), t.get("secretName") or "") for t in spec.get("tls") or [])
    return IngressView(meta.get("namespace", ""), meta.get("name", ""), meta.get("creationTimestamp", ""),
                       spec.get("ingressClassName"), annotations.get(CLASS_ANNOTATION),
                       _backend(spec.get("defaultBackend")), tuple(rules), tls,
                       annotations.get(SSL_REDIRECT, "true").lower() != "false", _lb(obj.get("status")))


def ingress_class_view(obj: dict) -> IngressClassView:
    meta = _meta(obj)
    return IngressClassView(meta.get("name", ""), (obj.get("spec") or {}).get("controller", ""),
                            (meta.get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true")


def service_view(obj: dict) -> ServiceView:
    meta, spec = _meta(obj), obj.get("spec") or {}
    ports = tuple(ServicePort(p.get("name") or "", int(p.get("port") or 0), str(p.get("targetPort") or p.get("port")),
                              p.get("protocol") or "TCP") for p in spec.get("ports") or [])
    return ServiceView(meta.get("namespace", ""), meta.get("name", ""), spec.get("type") or "ClusterIP",
                       spec.get("clusterIP") or "", ports, tuple(spec.get("externalIPs") or ()),
                       _lb(obj.get("status")), spec.get("externalName") or "")


def slice_view(obj: dict) -> SliceView:
    meta = _meta(obj)
    ports = tuple(SlicePort(p.get("name") or "", int(p["port"]), p.get("protocol") or "TCP")
                  for p in obj.get("ports") or [] if p.get("port") is not None)
    ready = tuple(a for e in obj.get("endpoints") or []
                  if (e.get("conditions") or {}).get("ready") is not False for a in e.get("addresses") or [])
    return SliceView(meta.get("namespace", ""), meta.get("name", ""),
                     (meta.get("labels") or {}).get(SERVICE_NAME_LABEL, ""), ports, ready)


def secret_view(obj: dict) -> SecretView:
    meta = _meta(obj)
    view = SecretView(meta.get("namespace", ""), meta.get("name", ""), b"", (), "")
    data = obj.get("data") or {}
    if "tls.crt" not in data or "tls.key" not in data:
        return replace(view, problem="no tls.crt and tls.key")
    try:
        cert, key = base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
    except (binascii.Error, ValueError):
        return replace(view, problem="tls.crt or tls.key is not base64")
    names, problem = certificate_names(cert, key)
    return replace(view, pem=key.rstrip(b"\n") + b"\n" + cert, names=names, problem=problem)
