"""Services, EndpointSlices and Nodes as frozen dataclasses: the watch edge of the service proxy.

`parse_*` take the raw JSON the informer hands over and return an immutable value, None for an
object the proxy leaves alone (headless, ExternalName, another proxy's Service), or raise
InvalidObject for one it cannot trust (bad addresses, ports, types): the caller logs and skips
it, a hostile object never stops a sync. Pure: no I/O.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import socket
import sys
from dataclasses import dataclass

from kubeweft.cni.protocols import PROTOCOLS

from .ip_family import version_of
from .scheduler import ANNOTATION as SCHEDULER_ANNOTATION
from .scheduler import parse_scheduler

LABEL_PROXY_NAME = "service.kubernetes.io/service-proxy-name"
LABEL_HEADLESS = "service.kubernetes.io/headless"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_ZONE = "topology.kubernetes.io/zone"
TAINT_TO_BE_DELETED = "ToBeDeletedByClusterAutoscaler"
IP_MODE_VIP = "VIP"
IP_MODE_PROXY = "Proxy"
MAX_AFFINITY_TIMEOUT = 86400
DEFAULT_AFFINITY_TIMEOUT = 10800


class InvalidObject(ValueError):
    """An object the proxy refuses to program (the message says why)."""


@dataclass(frozen=True, order=True, slots=True)
class ServicePort:
    name: str
    protocol: str                  # tcp | udp | sctp (nft's spelling)
    port: int
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """Addresses of both IP families, each as the API has it (IPv6 in its canonical form):
    for_family gives each family's proxier its share."""
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    type: str = "ClusterIP"
    external_ips: tuple[str, ...] = ()
    lb_ips: tuple[str, ...] = ()
    lb_source_ranges: tuple[str, ...] = ()
    external_local: bool = False          # externalTrafficPolicy: Local (NodePort/LoadBalancer)
    internal_local: bool = False          # internalTrafficPolicy: Local
    health_check_node_port: int | None = None
    affinity_timeout: int | None = None   # sessionAffinity ClientIP: seconds; None: no affinity
    scheduler: str = ""                   # the kubeweft.io/scheduler annotation; "": the agent's default

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


@dataclass(frozen=True, order=True, slots=True)
class SlicePort:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True, order=True, slots=True)
class Endpoint:
    ip: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""
    zone: str = ""
    hint_zones: tuple[str, ...] | None = None   # None: the endpoint has no zone hints
    hint_nodes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str
    ports: tuple[SlicePort, ...]
    endpoints: tuple[Endpoint, ...]
    family: int = 4            # addressType IPv4 | IPv6: the proxier of that family reads it

    @property
    def service_key(self) -> tuple[str, str]:
        return self.namespace, self.service_name


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    zone: str = ""
    eligible: bool = True      # False while being deleted or marked for deletion by the autoscaler


# ---- helpers ------------------------------------------------------------------------------------

def _meta(obj: dict) -> tuple[str, str, dict]:
    if not isinstance(obj, dict):
        raise InvalidObject("not an object")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidObject("no metadata")
    ns, name = meta.get("namespace", ""), meta.get("name")
    if not isinstance(name, str) or not name or not isinstance(ns, str):
        raise InvalidObject("no name")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        raise InvalidObject("labels are not a map")
    # one copy of a namespace's name for all its objects (100k objects kept: ~10 MB less)
    return sys.intern(ns), name, labels


def _address(value, what: str) -> str:
    """An IPv4 or IPv6 address usable by a Service or endpoint, IPv6 in canonical form (the
    form nft and the netlink codec print, so that what is read back equals what was written)."""
    if isinstance(value, str) and ":" in value:
        return _ipv6(value, what)
    return _ipv4(value, what)


def _ipv6(value: str, what: str) -> str:
    """An IPv6 address usable by a Service or endpoint, in canonical form. The C inet_pton and
    inet_ntop give ipaddress's canonical text (RFC 5952) at ~1 us where ipaddress takes ~20 us,
    the largest part of decoding a dual-stack list (30k Services: 120k addresses). ipaddress
    still speaks for what inet_pton refuses (a zone index, or no address at all) and for ::/96,
    which inet_ntop prints with a dotted quad."""
    try:
        packed = socket.inet_pton(socket.AF_INET6, value)
    except (OSError, TypeError, ValueError):
        return _ipv6_checked(value, what)
    if packed[:12] == _ZERO96:
        return _ipv6_checked(value, what)
    if packed[0] == 0xFF or packed[:12] == _V4_MAPPED:     # multicast, IPv4-mapped
        raise InvalidObject(f"{what}: {value} cannot be a Service or endpoint address")
    return socket.inet_ntop(socket.AF_INET6, packed)


_ZERO96 = bytes(12)
_V4_MAPPED = bytes(10) + b"\xff\xff"


def _ipv6_checked(value: str, what: str) -> str:
    try:
        addr = ipaddress.IPv6Address(value)
    except ValueError:
        raise InvalidObject(f"{what}: {value[:60]!r} is not an IPv6 address") from None
    if addr.is_loopback or addr.is_unspecified or addr.is_multicast or addr.ipv4_mapped is not None:
        raise InvalidObject(f"{what}: {value} cannot be a Service or endpoint address")
    return str(addr)


def _ipv4(value, what: str) -> str:
    """A dotted-quad IPv4 address usable by a Service or endpoint. Hand-parsed: ipaddress costs
    ~20 us an address, and a relist at 30k Services parses ~150k of them."""
    if not isinstance(value, str):
        raise InvalidObject(f"{what}: not a string")
    parts = value.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and len(p) <= 3 and (p == "0" or p[0] != "0")
                                  and int(p) <= 255 for p in parts):
        raise InvalidObject(f"{what}: {value[:60]!r} is not an IPv4 address")
    first = int(parts[0])
    if first == 127 or first == 0 or 224 <= first <= 239:
        raise InvalidObject(f"{what}: {value} cannot be a Service or endpoint address")
    return value


def _port(value, what: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidObject(f"{what}: {value!r} is not a port")
    return value


def _protocol(value) -> str:
    proto = PROTOCOLS.get(value if value is not None else "TCP") if isinstance(value, str | None) else None
    if proto is None:
        raise InvalidObject(f"protocol {value!r} is not TCP, UDP or SCTP")
    return proto


def _dict(value, what: str) -> dict:
    """A JSON object; None (a missing field) reads as empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidObject(f"{what}: not an object")
    return value


def _list(values, what: str) -> list:
    """A JSON list; None (a missing field) reads as empty."""
    if values is None:
        return []
    if not isinstance(values, list):
        raise InvalidObject(f"{what}: not a list")
    return values


def _objects(values, what: str, item: str) -> list[dict]:
    """A JSON list whose every item is an object (null, "", {} and missing read as empty)."""
    values = _list(values or None, what)
    if not all(isinstance(v, dict) for v in values):
        raise InvalidObject(f"{item} is not an object")
    return values


def _address_list(values, what: str) -> tuple[str, ...]:
    """Addresses of both families, in the API's order (the primary family first)."""
    return tuple(dict.fromkeys(_address(v, what) for v in _list(values, what)))


def _cidr_list(values, what: str) -> tuple[str, ...]:
    out = []
    for v in _list(values, what):
        if not isinstance(v, str):
            raise InvalidObject(f"{what}: not a string")
        try:
            net = ipaddress.ip_network(v.strip(), strict=False)
        except ValueError:
            raise InvalidObject(f"{what}: {v[:60]!r} is not a CIDR") from None
        out.append(str(net))
    return tuple(dict.fromkeys(out))


def _scheduler_annotation(obj) -> object:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return annotations.get(SCHEDULER_ANNOTATION) if isinstance(annotations, dict) else None


def invalid_scheduler(obj: dict) -> str | None:
    """The value of a Service's scheduler annotation when it names no scheduler (the Service
    then gets the agent's default); None when it is absent, empty or valid."""
    value = _scheduler_annotation(obj)
    if not value or parse_scheduler(value) is not None:
        return None
    return str(value)[:60]


def _scheduler(obj: dict) -> str:
    """The scheduler the annotation names; "" (the agent's default) without a valid one."""
    value = _scheduler_annotation(obj)
    return (parse_scheduler(value) or "") if value else ""


# ---- parsers ------------------------------------------------------------------------------------

def parse_service(obj: dict) -> Service | None:
    """A Service the proxy programs, None if it needs no rules, InvalidObject if it is broken."""
    ns, name, labels = _meta(obj)
    if LABEL_PROXY_NAME in labels or LABEL_HEADLESS in labels:
        return None
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise InvalidObject("no spec")
    stype = spec.get("type") or "ClusterIP"
    if stype == "ExternalName":
        return None
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer"):
        raise InvalidObject(f"type {stype!r}")
    raw_ips = _list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []), "clusterIPs")
    if not raw_ips or raw_ips[0] == "None":
        return None                                    # headless
    cluster_ips = _address_list(raw_ips, "clusterIPs")
    ports = []
    for p in _objects(spec.get("ports"), "ports", "a port"):
        pname = p.get("name") or ""
        if not isinstance(pname, str):
            raise InvalidObject("port name is not a string")
        node_port = _port(p.get("nodePort"), "nodePort", optional=True) \
            if stype in ("NodePort", "LoadBalancer") else None
        ports.append(ServicePort(sys.intern(pname), _protocol(p.get("protocol")), _port(p.get("port"), "port"),
                                 node_port))
    keys = [(p.protocol, p.port) for p in ports]
    if len(set(keys)) != len(keys) or len({p.name for p in ports}) != len(ports):
        raise InvalidObject("duplicate ports")
    lb_ips: tuple[str, ...] = ()
    if stype == "LoadBalancer":
        status = _dict(obj.get("status"), "status")
        ingress = _list(_dict(status.get("loadBalancer"), "status.loadBalancer").get("ingress") or None,
                        "status.loadBalancer.ingress")
        # ipMode Proxy: the load balancer rewrites the destination (to a nodePort, say), so its
        # address is not the proxy's to short-circuit: in-cluster traffic to it leaves for the
        # load balancer, as kube-proxy has it (only VIP addresses, the default, are programmed)
        lb_ips = _address_list([i.get("ip") for i in ingress if isinstance(i, dict) and i.get("ip")
                             and i.get("ipMode", IP_MODE_VIP) != IP_MODE_PROXY], "loadBalancer ingress")
    affinity_timeout = None
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = _dict(_dict(spec.get("sessionAffinityConfig"), "sessionAffinityConfig").get("clientIP"),
                    "sessionAffinityConfig.clientIP")
        t = cfg.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= MAX_AFFINITY_TIMEOUT:
            raise InvalidObject(f"sessionAffinity timeoutSeconds {t!r}")
        affinity_timeout = t
    external = stype in ("NodePort", "LoadBalancer") or bool(spec.get("externalIPs"))
    hc = spec.get("healthCheckNodePort")
    return Service(
        namespace=ns, name=name, cluster_ips=cluster_ips, ports=tuple(ports), type=stype,
        external_ips=_address_list(spec.get("externalIPs"), "externalIPs"), lb_ips=lb_ips,
        lb_source_ranges=_cidr_list(spec.get("loadBalancerSourceRanges"), "loadBalancerSourceRanges")
        if stype == "LoadBalancer" else (),
        external_local=external and spec.get("externalTrafficPolicy") == "Local",
        internal_local=spec.get("internalTrafficPolicy") == "Local",
        health_check_node_port=_port(hc, "healthCheckNodePort", optional=True)
        if stype == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local" else None,
        affinity_timeout=affinity_timeout, scheduler=_scheduler(obj))


def _of_version(items: tuple[str, ...], version: int) -> tuple[str, ...]:
    return tuple(a for a in items if version_of(a) == version)


def has_family(svc: Service, version: int) -> bool:
    """Whether the proxier of one IP family programs the Service: it has a ClusterIP of that
    family (for_family is not None)."""
    return any(version_of(a) == version for a in svc.cluster_ips)


def for_family(svc: Service, version: int) -> Service | None:
    """The share of one IP family's proxier: the Service with that family's addresses and source
    ranges alone; None when it has no ClusterIP of that family (kube-proxy's proxier of a family
    skips such a Service whole). A Service of one family is returned as is."""
    # by the spelling of all addresses at once (IPv6 has colons, IPv4 never): one test per
    # Service, where one per address cost ~1 us of a full sync's 15 per Service
    spelled = (*svc.cluster_ips, *svc.external_ips, *svc.lb_ips, *svc.lb_source_ranges)
    if (":" not in " ".join(spelled)) if version == 4 else all(":" in a for a in spelled):
        return svc
    cluster_ips = _of_version(svc.cluster_ips, version)
    if not cluster_ips:
        return None
    return dataclasses.replace(svc, cluster_ips=cluster_ips, external_ips=_of_version(svc.external_ips, version),
                               lb_ips=_of_version(svc.lb_ips, version),
                               lb_source_ranges=_of_version(svc.lb_source_ranges, version))


def _names(hints, field: str) -> tuple[str, ...] | None:
    if not isinstance(hints, dict) or field not in hints:
        return None
    items = hints.get(field)
    if not isinstance(items, list):
        return None
    return tuple(sorted({h["name"] for h in items if isinstance(h, dict) and isinstance(h.get("name"), str)}))


ADDRESS_TYPES = {"IPv4": (4, _ipv4), "IPv6": (6, _ipv6)}


def parse_endpoint_slice(obj: dict) -> EndpointSlice | None:
    """An IPv4 or IPv6 EndpointSlice of a Service (addressType says which: every address must be
    of it), None for FQDN slices or orphans."""
    ns, name, labels = _meta(obj)
    svc = labels.get(LABEL_SERVICE_NAME)
    if not isinstance(svc, str) or not svc:
        return None
    address_type = obj.get("addressType", "IPv4")
    family = ADDRESS_TYPES.get(address_type) if isinstance(address_type, str) else None
    if family is None:
        return None
    version, parse_address = family
    ports = []
    for p in _objects(obj.get("ports"), "ports", "a port"):
        if p.get("port") is None:
            continue                       # "all ports" slices: nothing kube-proxy can use
        pname = p.get("name") or ""
        if not isinstance(pname, str):
            raise InvalidObject("port name is not a string")
        ports.append(SlicePort(sys.intern(pname), _protocol(p.get("protocol")), _port(p.get("port"), "port")))
    eps = []
    for e in _objects(obj.get("endpoints"), "endpoints", "an endpoint"):
        addrs = e.get("addresses")
        if not isinstance(addrs, list) or not addrs:
            raise InvalidObject("an endpoint without addresses")
        cond = e.get("conditions") or {}
        if not isinstance(cond, dict):
            raise InvalidObject("conditions: not an object")
        ready = cond.get("ready")
        ready = True if ready is None else ready is True        # nil ready means ready (the API's rule)
        serving = cond.get("serving")
        serving = ready if serving is None else serving is True
        node, zone = e.get("nodeName") or "", e.get("zone") or ""
        if not isinstance(node, str) or not isinstance(zone, str):
            raise InvalidObject("nodeName/zone: not strings")
        hints = e.get("hints")
        if not isinstance(addrs[0], str):
            raise InvalidObject("endpoint address: not a string")
        # node and zone names repeat over every endpoint (300k of them at 100k Services): one copy each
        eps.append(Endpoint(ip=parse_address(addrs[0], "endpoint address"), ready=ready, serving=serving,
                            terminating=cond.get("terminating") is True, node_name=sys.intern(node),
                            zone=sys.intern(zone),
                            hint_zones=_names(hints, "forZones"), hint_nodes=_names(hints, "forNodes")))
    return EndpointSlice(ns, name, svc, tuple(ports), tuple(eps), version)


def parse_node(obj: dict) -> Node:
    """A Node; not eligible for load-balancer traffic while it is being deleted or carries the
    cluster autoscaler's deletion taint (kube-proxy's /healthz then answers 503, KEP-3836)."""
    _, name, labels = _meta(obj)
    zone = labels.get(LABEL_ZONE, "")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    taints = spec.get("taints") if isinstance(spec.get("taints"), list) else []
    doomed = bool(obj["metadata"].get("deletionTimestamp")) or any(
        isinstance(t, dict) and t.get("key") == TAINT_TO_BE_DELETED for t in taints)
    return Node(name, zone if isinstance(zone, str) else "", not doomed)


def plan_service_cidrs(objects, version: int = 4) -> tuple[str, ...]:
    """The ranges of one IP family of ServiceCIDR objects (JSON), sorted, deduplicated; a
    malformed one is skipped."""
    out = set()
    for obj in objects:
        spec = obj.get("spec") if isinstance(obj, dict) else None
        cidrs = spec.get("cidrs") if isinstance(spec, dict) else None
        for c in cidrs if isinstance(cidrs, list) else ():
            try:
                net = ipaddress.ip_network(c, strict=False) if isinstance(c, str) else None
            except ValueError:
                continue
            if net is not None and net.version == version:
                out.add(str(net))
    return tuple(sorted(out))
