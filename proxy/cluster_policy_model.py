"""ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, network-policy-api v0.2.0), Pod and
Node JSON -> frozen dataclasses, at the watch edge. Pure.

A policy that cannot be understood raises ModelError (the controller logs one line and skips
it). A peer with none of the fields this agent knows (a newer API's kind, or domainNames,
which needs a DNS-aware proxy) is kept as an `unknown` peer: the API says to fail closed, so an
Accept rule treats it as matching nothing and a Deny or Pass rule as matching everything.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from . import policy_model as pm
from .policy_model import ModelError, Selector, _dict, _list, _meta, _str, parse_selector

ADMIN, BASELINE = "Admin", "Baseline"
ACCEPT, DENY, PASS = "Accept", "Deny", "Pass"
INGRESS, EGRESS = pm.INGRESS, pm.EGRESS
PROTOCOLS = ("tcp", "udp", "sctp")      # the protocol entry's field names, as nft names them
MAX_PRIORITY = 1000
GROUP, VERSION, PLURAL = "policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies"
PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


@dataclass(frozen=True)
class Peer:
    """Exactly one kind: namespaces (every pod of them), pods (namespace AND pod selector),
    nodes (the Nodes' addresses), networks (CIDRs of either family), or unknown."""
    namespaces: Selector | None = None
    pods: tuple[Selector, Selector] | None = None          # (namespace selector, pod selector)
    nodes: Selector | None = None
    networks: tuple[str, ...] = ()
    unknown: str = ""                   # the fields of a peer this agent cannot match (domainNames)


@dataclass(frozen=True)
class Protocol:
    """One entry of a rule's protocols: a transport with an optional port or range, or a
    named port (any transport; the destination pod's containerPort of that name)."""
    protocol: str = ""                  # tcp, udp, sctp; "" with named_port
    port: int | None = None             # None: every port of the protocol
    end_port: int | None = None
    named_port: str = ""


@dataclass(frozen=True)
class Rule:
    action: str                         # Accept, Deny, Pass
    peers: tuple[Peer, ...]
    protocols: tuple[Protocol, ...] = ()   # (): every protocol and port
    name: str = ""


@dataclass(frozen=True)
class ClusterPolicy:
    name: str
    tier: str                           # Admin, Baseline
    priority: int
    subject: Peer                       # namespaces or pods
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    @property
    def order(self) -> tuple[int, str]:
        """Evaluation order in a tier: lowest priority first; ties (which the API leaves to the
        implementation) by name, so every node picks the same."""
        return self.priority, self.name


# A pod as NetworkPolicy's model has it: every address (status.podIPs, one per family), its node,
# labels and named ports.
Pod = pm.Pod


@dataclass(frozen=True)
class Node:
    name: str
    labels: pm.Labels
    ips: tuple[str, ...]                # InternalIP and ExternalIP addresses


# ---- parsing ---------------------------------------------------------------------------------

def _address(text) -> str | None:
    try:
        return str(ipaddress.ip_address(text)) if isinstance(text, str) else None
    except ValueError:
        return None


parse_pod = pm.parse_pod


def parse_node(obj) -> Node:
    _, name, meta = _meta(obj, "Node")
    status = _dict(obj.get("status"), f"node {name}.status")
    ips = [_address(_dict(a, "address").get("address"))
           for a in _list(status.get("addresses"), f"node {name}.status.addresses")
           if _dict(a, "address").get("type") in ("InternalIP", "ExternalIP")]
    return Node(name, pm.parse_labels(meta.get("labels"), f"node {name}"),
                tuple(dict.fromkeys(ip for ip in ips if ip)))


def _pods_peer(obj, what: str) -> tuple[Selector, Selector]:
    d = _dict(obj, what)
    return (parse_selector(d.get("namespaceSelector"), f"{what}.namespaceSelector"),
            parse_selector(d.get("podSelector"), f"{what}.podSelector"))


def parse_peer(obj, what: str, egress: bool) -> Peer:
    d = _dict(obj, what)
    if len(d) > 1:
        raise ModelError(f"{what}: a peer sets exactly one field, not {sorted(d)}")
    if "namespaces" in d:
        return Peer(namespaces=parse_selector(d["namespaces"], f"{what}.namespaces"))
    if "pods" in d:
        return Peer(pods=_pods_peer(d["pods"], f"{what}.pods"))
    if egress and "nodes" in d:
        return Peer(nodes=parse_selector(d["nodes"], f"{what}.nodes"))
    if egress and "networks" in d:
        nets = _list(d["networks"], f"{what}.networks")
        if not nets:
            raise ModelError(f"{what}.networks: empty")
        out = []
        for i, n in enumerate(nets):
            try:
                out.append(str(ipaddress.ip_network(_str(n, f"{what}.networks[{i}]"), strict=False)))
            except ValueError as e:
                raise ModelError(f"{what}.networks[{i}]: {e}") from None
        return Peer(networks=tuple(out))
    return Peer(unknown=",".join(sorted(d)) or "empty")


def _port(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        raise ModelError(f"{what}: {v!r} is not a port number")
    return v


def parse_protocol(obj, what: str) -> Protocol:
    d = _dict(obj, what)
    if len(d) != 1:
        raise ModelError(f"{what}: a protocol sets exactly one field, not {sorted(d)}")
    (field, value), = d.items()
    if field == "destinationNamedPort":
        name = _str(value, f"{what}.destinationNamedPort")
        if not 0 < len(name) <= 15:
            raise ModelError(f"{what}.destinationNamedPort: {name!r} is not a port name")
        return Protocol(named_port=name)
    proto = field
    if proto not in PROTOCOLS:
        raise ModelError(f"{what}: unknown protocol {field!r}")
    port = _dict(_dict(value, f"{what}.{field}").get("destinationPort"), f"{what}.{field}.destinationPort")
    if not port:
        return Protocol(proto)
    if len(port) != 1:
        raise ModelError(f"{what}.{field}.destinationPort: number or range, not both")
    if "number" in port:
        return Protocol(proto, _port(port["number"], f"{what}.{field}.destinationPort.number"))
    rng = _dict(port.get("range"), f"{what}.{field}.destinationPort.range")
    start = _port(rng.get("start"), f"{what}.{field}.destinationPort.range.start")
    end = _port(rng.get("end"), f"{what}.{field}.destinationPort.range.end")
    if end < start:
        raise ModelError(f"{what}.{field}.destinationPort.range: end {end} is below start {start}")
    return Protocol(proto, start, end)


def parse_rule(obj, what: str, egress: bool) -> Rule:
    d = _dict(obj, what)
    action = d.get("action")
    if action not in (ACCEPT, DENY, PASS):
        raise ModelError(f"{what}.action: {action!r} is not Accept, Deny or Pass")
    field = "to" if egress else "from"
    peers = tuple(parse_peer(p, f"{what}.{field}[{i}]", egress)
                  for i, p in enumerate(_list(d.get(field), f"{what}.{field}")))
    if not peers:
        raise ModelError(f"{what}.{field}: at least one peer")
    protocols = tuple(parse_protocol(p, f"{what}.protocols[{i}]")
                      for i, p in enumerate(_list(d.get("protocols"), f"{what}.protocols")))
    return Rule(action, peers, protocols, d.get("name") if isinstance(d.get("name"), str) else "")


def parse_cluster_policy(obj) -> ClusterPolicy:
    _, name, _ = _meta(obj, "ClusterNetworkPolicy")
    spec = _dict(obj.get("spec"), f"{name}.spec")
    tier = spec.get("tier")
    if tier not in (ADMIN, BASELINE):
        raise ModelError(f"{name}.spec.tier: {tier!r} is not Admin or Baseline")
    prio = spec.get("priority")
    if isinstance(prio, bool) or not isinstance(prio, int) or not 0 <= prio <= MAX_PRIORITY:
        raise ModelError(f"{name}.spec.priority: {prio!r} is not 0-{MAX_PRIORITY}")
    subj = _dict(spec.get("subject"), f"{name}.spec.subject")
    if len(subj) != 1 or next(iter(subj)) not in ("namespaces", "pods"):
        raise ModelError(f"{name}.spec.subject: exactly one of namespaces, pods")
    subject = parse_peer(subj, f"{name}.spec.subject", egress=False)
    ingress = tuple(parse_rule(r, f"{name}.spec.ingress[{i}]", False)
                    for i, r in enumerate(_list(spec.get("ingress"), f"{name}.spec.ingress")))
    egress = tuple(parse_rule(r, f"{name}.spec.egress[{i}]", True)
                   for i, r in enumerate(_list(spec.get("egress"), f"{name}.spec.egress")))
    return ClusterPolicy(name, tier, prio, subject, ingress, egress)


# ---- selection -------------------------------------------------------------------------------

def selects_pod(peer: Peer, pod: Pod, ns_labels: pm.Labels) -> bool:
    """A namespaces or pods peer (or subject) matches this pod; host-network pods never."""
    if pod.host_network:
        return False
    if peer.namespaces is not None:
        return peer.namespaces.matches(ns_labels)
    if peer.pods is not None:
        return peer.pods[0].matches(ns_labels) and peer.pods[1].matches(pod.labels)
    return False
