"""Services, EndpointSlices and Pods as the cluster DNS sees them: frozen values made at the watch
edge from the raw JSON the informer hands over.

`*_from(obj)` return None for an object that names nothing in DNS or that cannot be trusted (no
name, addresses that are not addresses): a broken object is skipped, it never stops the server.
Addresses are normalised (ipaddress' spelling, so "2001:DB8::1" and "2001:db8:0::1" are one) and
names lowercased, since every comparison between a query and the cluster is case-insensitive.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LABEL_SERVICE_NAME = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class Port:
    name: str                # lowercased; "" for an unnamed port
    protocol: str            # lowercased: tcp | udp | sctp
    port: int


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str                               # ClusterIP | NodePort | LoadBalancer | ExternalName
    cluster_ips: tuple[str, ...] = ()       # empty: headless (or ExternalName)
    ports: tuple[Port, ...] = ()
    external_name: str = ""

    @property
    def headless(self) -> bool:
        return not self.cluster_ips and self.type != "ExternalName"


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    ready: bool
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """A slice's namespace and name are its key in the index."""
    service: str
    ports: tuple[Port, ...]
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    ips: tuple[str, ...]


def _address(value) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _addresses(values) -> tuple[str, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(dict.fromkeys(a for a in map(_address, values) if a))


def _name_of(obj) -> tuple[str, str] | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return None
    ns, name = meta.get("namespace"), meta.get("name")
    if not isinstance(ns, str) or not isinstance(name, str) or not ns or not name:
        return None
    return ns.lower(), name.lower()


def _ports(values) -> tuple[Port, ...]:
    ports = []
    for p in values if isinstance(values, list) else ():
        if not isinstance(p, dict):
            continue
        number, name = p.get("port"), p.get("name") or ""
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(name, str):
            continue
        ports.append(Port(name.lower(), str(p.get("protocol") or "TCP").lower(), number))
    return tuple(ports)


def service_from(obj: dict) -> Service | None:
    key = _name_of(obj)
    spec = obj.get("spec") if key else None
    if not isinstance(spec, dict):
        return None
    stype = spec.get("type") or "ClusterIP"
    if stype == "ExternalName":
        target = spec.get("externalName")
        if not isinstance(target, str) or not target.strip("."):
            return None
        return Service(*key, type=stype, external_name=target.rstrip(".").lower())
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return Service(*key, type=str(stype), cluster_ips=_addresses(ips), ports=_ports(spec.get("ports")))


def slice_from(obj: dict) -> EndpointSlice | None:
    """The slice of a Service (its kubernetes.io/service-name label); FQDN slices name nothing."""
    key = _name_of(obj)
    if not key or obj.get("addressType") not in ("IPv4", "IPv6"):
        return None
    service = ((obj["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME))
    if not isinstance(service, str) or not service:
        return None
    endpoints = []
    for e in obj.get("endpoints") or ():
        if not isinstance(e, dict):
            continue
        addresses = _addresses(e.get("addresses"))
        if not addresses:
            continue
        ready = (e.get("conditions") or {}).get("ready")
        hostname = e.get("hostname") or ""
        # nil ready means ready: the API's rule for consumers
        endpoints.append(Endpoint(addresses, ready is None or ready is True,
                                  hostname.lower() if isinstance(hostname, str) else ""))
    return EndpointSlice(service.lower(), _ports(obj.get("ports")), tuple(endpoints))


def pod_from(obj: dict) -> Pod | None:
    key = _name_of(obj)
    status = obj.get("status") if key else None
    if not isinstance(status, dict):
        return None
    ips = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, dict)] or [status.get("podIP")]
    return Pod(*key, _addresses(ips))
