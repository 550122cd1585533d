"""NetworkPolicy, Pod and Namespace JSON -> frozen dataclasses, at the watch edge. Pure.

Only what enforcement needs is kept. An object that cannot be understood raises ModelError
from parse_*; the controller logs it and skips the object (a hostile or broken policy must not
stop the agent). For policies, "cannot be understood" is decided conservatively: a policy whose
peers or ports are malformed is skipped whole rather than half-applied, because half a policy
can allow more than the author meant.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from kubeweft.cni.protocols import NFT_PROTOCOLS

INGRESS, EGRESS = "Ingress", "Egress"
_OPS = ("In", "NotIn", "Exists", "DoesNotExist")
NAME_LABEL = "kubernetes.io/metadata.name"
# Peers, ports, rules, expressions per list: a sanity bound, above what the API's object size
# allows (an object is at most 1.5 MiB in etcd: ~40,000 ipBlock peers). A policy over it is
# skipped; one under it is enforced whole: 10,000 peers cost 0.13 s to parse and 0.07 s to
# plan (ipBlocks; selectors 0.04 s), once per change of that policy.
MAX_ITEMS = 50_000


class ModelError(ValueError):
    """An object that cannot be turned into the model (logged and skipped by the controller)."""


Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str                            # In, NotIn, Exists, DoesNotExist
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "Exists":
            return self.key in labels
        if self.op == "DoesNotExist":
            return self.key not in labels
        if self.op == "In":
            return self.key in labels and labels[self.key] in self.values
        return labels.get(self.key) not in self.values          # NotIn: absent keys match


@dataclass(frozen=True)
class Selector:
    """A LabelSelector; the empty one matches everything."""
    match_labels: Labels = frozenset()
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Labels) -> bool:
        if not self.match_labels <= labels:
            return False
        if self.expressions:
            d = dict(labels)
            return all(r.matches(d) for r in self.expressions)
        return True

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.expressions


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Peer:
    """One NetworkPolicyPeer. Selectors: None means the field was absent. With only
    pod_selector: pods of the policy's namespace; with only namespace_selector: every pod of
    the matching namespaces; with both: pods matching both (AND)."""
    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PortSpec:
    protocol: str                      # tcp, udp, sctp
    port: int | str | None = None      # None: every port of the protocol; str: a named port
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    peers: tuple[Peer, ...] = ()       # () : every source / destination
    ports: tuple[PortSpec, ...] = ()   # () : every port and protocol


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: Selector
    types: frozenset[str]              # of INGRESS, EGRESS, after defaulting
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ContainerPort:
    name: str
    protocol: str                      # tcp, udp, sctp
    port: int


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ips: tuple[str, ...]               # status.podIPs, primary first; () : no address yet
    node: str
    labels: Labels = frozenset()
    ports: tuple[ContainerPort, ...] = ()   # named containerPorts only
    host_network: bool = False
    terminal: bool = False             # Succeeded / Failed: holds no address any more

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Labels = frozenset()


# ---- parsing ---------------------------------------------------------------------------------

def _dict(obj, what: str) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ModelError(f"{what}: expected an object, got {type(obj).__name__}")
    return obj


def _list(obj, what: str) -> list:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise ModelError(f"{what}: expected a list, got {type(obj).__name__}")
    if len(obj) > MAX_ITEMS:
        raise ModelError(f"{what}: more than {MAX_ITEMS} items")
    return obj


def _str(obj, what: str) -> str:
    if not isinstance(obj, str):
        raise ModelError(f"{what}: expected a string, got {type(obj).__name__}")
    return obj


def parse_labels(obj, what: str = "labels") -> Labels:
    d = _dict(obj, what)
    return frozenset((_str(k, what), _str(v, f"{what}.{k}")) for k, v in d.items())


def parse_selector(obj, what: str = "selector") -> Selector:
    d = _dict(obj, what)
    reqs = []
    for i, e in enumerate(_list(d.get("matchExpressions"), f"{what}.matchExpressions")):
        e = _dict(e, f"{what}.matchExpressions[{i}]")
        op = e.get("operator")
        if op not in _OPS:
            raise ModelError(f"{what}.matchExpressions[{i}]: unknown operator {op!r}")
        values = frozenset(_str(v, f"{what}.matchExpressions[{i}].values")
                           for v in _list(e.get("values"), f"{what}.matchExpressions[{i}].values"))
        if op in ("In", "NotIn") and not values:
            raise ModelError(f"{what}.matchExpressions[{i}]: {op} needs values")
        if op in ("Exists", "DoesNotExist") and values:
            raise ModelError(f"{what}.matchExpressions[{i}]: {op} takes no values")
        reqs.append(Requirement(_str(e.get("key"), f"{what}.matchExpressions[{i}].key"), op, values))
    return Selector(parse_labels(d.get("matchLabels"), f"{what}.matchLabels"), tuple(reqs))


def _network(text, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(_str(text, what), strict=False)
    except ValueError as e:
        raise ModelError(f"{what}: {e}") from None


def parse_ip_block(obj, what: str) -> IPBlock:
    d = _dict(obj, what)
    net = _network(d.get("cidr"), f"{what}.cidr")
    excepts = []
    for i, x in enumerate(_list(d.get("except"), f"{what}.except")):
        sub = _network(x, f"{what}.except[{i}]")
        if sub.version != net.version or not sub.subnet_of(net):      # type: ignore[arg-type]
            raise ModelError(f"{what}.except[{i}]: {sub} is not inside {net}")
        excepts.append(str(sub))
    return IPBlock(str(net), tuple(excepts))


def parse_peer(obj, what: str) -> Peer:
    d = _dict(obj, what)
    pod = d.get("podSelector")
    ns = d.get("namespaceSelector")
    block = d.get("ipBlock")
    if block is not None:
        if pod is not None or ns is not None:
            raise ModelError(f"{what}: ipBlock cannot be combined with selectors")
        return Peer(ip_block=parse_ip_block(block, f"{what}.ipBlock"))
    if pod is None and ns is None:
        raise ModelError(f"{what}: a peer needs podSelector, namespaceSelector or ipBlock")
    return Peer(pod_selector=None if pod is None else parse_selector(pod, f"{what}.podSelector"),
                namespace_selector=None if ns is None else parse_selector(ns, f"{what}.namespaceSelector"))


def _port_number(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        raise ModelError(f"{what}: {v!r} is not a port number")
    return v


def parse_port(obj, what: str) -> PortSpec:
    d = _dict(obj, what)
    proto = d.get("protocol") or "TCP"
    if not isinstance(proto, str) or proto.lower() not in NFT_PROTOCOLS:
        raise ModelError(f"{what}.protocol: {proto!r} is not TCP, UDP or SCTP")
    port = d.get("port")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, str):
        # IANA_SVC_NAME: 1-15 lowercase letters, digits and '-'
        if not (0 < len(port) <= 15 and all(c.islower() or c.isdigit() or c == "-" for c in port)
                and any(c.islower() for c in port) and port.isascii()):
            raise ModelError(f"{what}.port: {port!r} is not a port name")
    elif port is not None:
        port = _port_number(port, f"{what}.port")
    end = d.get("endPort")
    if end is not None:
        if not isinstance(port, int):
            raise ModelError(f"{what}.endPort needs a numeric port")
        end = _port_number(end, f"{what}.endPort")
        if end < port:
            raise ModelError(f"{what}.endPort {end} is below port {port}")
    return PortSpec(proto.lower(), port, end)


def parse_rule(obj, what: str, peers_field: str) -> Rule:
    d = _dict(obj, what)
    peers = tuple(parse_peer(p, f"{what}.{peers_field}[{i}]")
                  for i, p in enumerate(_list(d.get(peers_field), f"{what}.{peers_field}")))
    ports = tuple(parse_port(p, f"{what}.ports[{i}]")
                  for i, p in enumerate(_list(d.get("ports"), f"{what}.ports")))
    return Rule(peers, ports)


def _meta(obj, what: str) -> tuple[str, str, dict]:
    d = _dict(obj, what)
    meta = _dict(d.get("metadata"), f"{what}.metadata")
    name = _str(meta.get("name"), f"{what}.metadata.name")
    return _str(meta.get("namespace") or "", f"{what}.metadata.namespace"), name, meta


def parse_policy(obj) -> Policy:
    ns, name, _ = _meta(obj, "NetworkPolicy")
    if not ns:
        raise ModelError(f"NetworkPolicy {name}: no namespace")
    spec = _dict(obj.get("spec"), f"{ns}/{name}.spec")
    sel = parse_selector(spec.get("podSelector"), f"{ns}/{name}.spec.podSelector")
    ingress = tuple(parse_rule(r, f"{ns}/{name}.spec.ingress[{i}]", "from")
                    for i, r in enumerate(_list(spec.get("ingress"), f"{ns}/{name}.spec.ingress")))
    egress = tuple(parse_rule(r, f"{ns}/{name}.spec.egress[{i}]", "to")
                   for i, r in enumerate(_list(spec.get("egress"), f"{ns}/{name}.spec.egress")))
    listed = _list(spec.get("policyTypes"), f"{ns}/{name}.spec.policyTypes")
    if listed:
        if any(t not in (INGRESS, EGRESS) for t in listed):
            raise ModelError(f"{ns}/{name}.spec.policyTypes: {listed!r}")
        types = frozenset(listed)
    else:
        # the API server's defaulting: Ingress always, Egress only when there are egress rules
        types = frozenset({INGRESS, EGRESS} if spec.get("egress") else {INGRESS})
    return Policy(ns, name, sel, types, ingress if INGRESS in types else (),
                  egress if EGRESS in types else ())


def parse_pod(obj) -> Pod:
    ns, name, meta = _meta(obj, "Pod")
    spec = _dict(obj.get("spec"), f"pod {ns}/{name}.spec")
    status = _dict(obj.get("status"), f"pod {ns}/{name}.status")
    ports = []
    for c in _list(spec.get("containers"), f"pod {ns}/{name}.spec.containers"):
        for p in _list(_dict(c, "container").get("ports"), f"pod {ns}/{name} ports"):
            p = _dict(p, "containerPort")
            pname, proto, number = p.get("name"), (p.get("protocol") or "TCP"), p.get("containerPort")
            # unnamed ports cannot be referred to by name; odd ones are ignored, not fatal
            if isinstance(pname, str) and pname and isinstance(proto, str) and proto.lower() in NFT_PROTOCOLS \
                    and isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 65535:
                ports.append(ContainerPort(pname, proto.lower(), number))
    return Pod(ns, name, parse_pod_ips(status, f"pod {ns}/{name}.status"),
               _str(spec.get("nodeName") or "", f"pod {ns}/{name}.spec.nodeName"),
               parse_labels(meta.get("labels"), f"pod {ns}/{name}"),
               tuple(ports), bool(spec.get("hostNetwork")), status.get("phase") in ("Succeeded", "Failed"))


def parse_pod_ips(status: dict, what: str) -> tuple[str, ...]:
    """status.podIPs (one per family, primary first), else status.podIP (a status written
    before podIPs existed), each in its canonical text (nft prints IPv6 compressed, and
    elements are compared as text). An address that is not one is skipped, as is a second
    address of a family: the kubelet reports at most one per family."""
    listed = [_dict(e, f"{what}.podIPs[{i}]").get("ip") for i, e in enumerate(_list(status.get("podIPs"), f"{what}.podIPs"))]
    if not listed and status.get("podIP"):
        listed = [status.get("podIP")]
    out: dict[int, str] = {}
    for text in listed:
        try:
            addr = ipaddress.ip_address(_str(text, f"{what}.podIPs"))
        except ValueError:
            continue
        out.setdefault(addr.version, str(addr))
    return tuple(out.values())


def parse_namespace(obj) -> Namespace:
    _, name, meta = _meta(obj, "Namespace")
    labels = dict(parse_labels(meta.get("labels"), f"namespace {name}"))
    # the API server sets this label on every namespace (1.22+); a stand-in may not
    labels.setdefault(NAME_LABEL, name)
    return Namespace(name, frozenset(labels.items()))
