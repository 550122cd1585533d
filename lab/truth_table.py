"""The expected reachability under a set of NetworkPolicies: a small, independent evaluator of
the networking.k8s.io/v1 semantics, the oracle of the NetworkPolicy lab tests and of
`kubeweft lab matrix --expect`. Pure: policies are plain dicts (their JSON/YAML form).

The semantics, as upstream defines them:
- A policy selects the pods of its own namespace that its spec.podSelector matches ({} = all).
- policyTypes, when absent, is [Ingress] plus Egress when spec.egress has a rule.
- A pod is isolated for a direction only when some policy selects it with that type; an
  isolated pod accepts what the union of all those policies' rules allows, in any order.
- A rule with no `from`/`to` (or an empty list) matches every peer; with no `ports` every port.
- A peer: ipBlock (cidr minus except, matched on the address), or podSelector and/or
  namespaceSelector: both in one peer is AND, two peers is OR; no namespaceSelector means the
  policy's namespace; an empty selector matches everything.
- A port: protocol (TCP by default) and a number, a number range (endPort), a name resolved
  on the destination pod (name AND protocol must match a containerPort), or none (every port
  of that protocol).
- A connection needs the source's egress and the destination's ingress; traffic from a pod's
  own node to it always passes, and so does a pod's traffic to its own address (loopback). Replies of allowed connections pass (not modelled: the
  probes see them as part of the connection).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .selectors import selector_matches

INGRESS, EGRESS = "Ingress", "Egress"


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod, a node or a host outside the cluster."""
    key: str                                   # "x/a", "node:node1", "external"
    ip: str
    namespace: str | None = None               # None: not a pod
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)
    ns_labels: Mapping[str, str] = field(default_factory=dict, compare=False)
    node: str | None = None                    # the pod's node, or the node itself
    named_ports: tuple[tuple[str, int, str], ...] = ()   # (name, containerPort, protocol)

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


def pod_endpoint(pod: Mapping, ns_labels: Mapping[str, str]) -> Endpoint:
    """A pod object (JSON form, status.podIP set) and its namespace's labels -> an Endpoint."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    named = tuple((p["name"], int(p["containerPort"]), (p.get("protocol") or "TCP").upper())
                  for c in spec.get("containers") or () for p in c.get("ports") or ()
                  if p.get("name") and p.get("containerPort"))
    return Endpoint(key=f"{meta['namespace']}/{meta['name']}", ip=(pod.get("status") or {}).get("podIP", ""),
                    namespace=meta["namespace"], labels=dict(meta.get("labels") or {}),
                    ns_labels=dict(ns_labels), node=spec.get("nodeName"), named_ports=named)


# --- policies ------------------------------------------------------------------------------------
def policy_types(policy: Mapping) -> set[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {INGRESS, EGRESS} if spec.get("egress") else {INGRESS}


def policy_namespace(policy: Mapping) -> str:
    return (policy.get("metadata") or {}).get("namespace") or "default"


def selects(policy: Mapping, pod: Endpoint) -> bool:
    return pod.is_pod and policy_namespace(policy) == pod.namespace and \
        selector_matches((policy.get("spec") or {}).get("podSelector"), pod.labels)


def ip_in_block(ip: str, block: Mapping) -> bool:
    if not ip:
        return False
    addr = ipaddress.ip_address(ip)
    net = ipaddress.ip_network(block["cidr"], strict=False)
    if addr.version != net.version or addr not in net:
        return False
    return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.get("except") or ()
                   if ipaddress.ip_network(e, strict=False).version == addr.version)


def peer_matches(peer: Mapping, policy_ns: str, other: Endpoint) -> bool:
    """One NetworkPolicyPeer against the other end of the connection."""
    if "ipBlock" in peer:
        return ip_in_block(other.ip, peer["ipBlock"])
    if not other.is_pod:
        return False                     # selectors match pods only
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], other.ns_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    if "podSelector" in peer:
        return selector_matches(peer["podSelector"], other.labels)
    return True


def port_matches(rule_ports: Sequence[Mapping] | None, dest: Endpoint, port: int, proto: str) -> bool:
    """A rule's ports against (port, protocol) on the destination; no ports = every port."""
    if not rule_ports:
        return True
    for rp in rule_ports:
        if (rp.get("protocol") or "TCP").upper() != proto:
            continue
        want = rp.get("port")
        if want is None:
            return True
        if isinstance(want, str) and not want.isdigit():
            # named: resolved on the destination pod, name and protocol together
            if any(n == want and p == port and pr == proto for n, p, pr in dest.named_ports):
                return True
            continue
        lo = int(want)
        hi = int(rp.get("endPort") or lo)
        if lo <= port <= hi:
            return True
    return False


def _rule_allows(rules: Iterable[Mapping], peers_key: str, policy_ns: str, peer: Endpoint,
                 dest: Endpoint, port: int, proto: str) -> bool:
    for rule in rules or ():
        peers = rule.get(peers_key)
        if peers and not any(peer_matches(p, policy_ns, peer) for p in peers):
            continue
        if port_matches(rule.get("ports"), dest, port, proto):
            return True
    return False


def direction_allows(policies: Sequence[Mapping], direction: str, local: Endpoint, remote: Endpoint,
                     dest: Endpoint, port: int, proto: str) -> bool:
    """Does `local` (the isolated side) allow this connection in `direction`? `dest` is the
    connection's destination (named ports resolve there)."""
    relevant = [p for p in policies if direction in policy_types(p) and selects(p, local)]
    if not relevant:
        return True                      # not isolated in this direction
    rules_key, peers_key = ("ingress", "from") if direction == INGRESS else ("egress", "to")
    return any(_rule_allows((p.get("spec") or {}).get(rules_key), peers_key, policy_namespace(p),
                            remote, dest, port, proto) for p in policies if p in relevant)


def allowed(policies: Sequence[Mapping], src: Endpoint, dst: Endpoint, port: int, proto: str) -> bool:
    """May `src` open a connection to `dst` on port/proto (after any Service DNAT)?"""
    proto = proto.upper()
    if src.is_pod and src.key == dst.key:
        return True                      # a pod to its own address: loopback, no policy (upstream
        #                                  e2e's AllowLoopback); it never leaves the pod's netns
    if not src.is_pod and src.node is not None and dst.is_pod and src.node == dst.node:
        return True                      # a pod's own node always reaches it
    return direction_allows(policies, EGRESS, src, dst, dst, port, proto) and \
        direction_allows(policies, INGRESS, dst, src, dst, port, proto)


def expected_table(policies: Sequence[Mapping], sources: Sequence[Endpoint], dests: Sequence[Endpoint],
                   ports: Sequence[tuple[int, str]]) -> dict[tuple[str, str, int, str], bool]:
    """(from key, to key, port, proto) -> allowed, for every combination."""
    return {(s.key, d.key, port, proto): allowed(policies, s, d, port, proto)
            for s in sources for d in dests for port, proto in ports}


def diff_tables(expected: Mapping[tuple, bool], actual: Mapping[tuple, bool]) -> list[str]:
    """Cells where the two tables disagree, one readable line each ([] when equal)."""
    out = []
    for key in sorted(set(expected) | set(actual)):
        e, a = expected.get(key), actual.get(key)
        if e != a:
            src, dst, port, proto = key
            out.append(f"{src} -> {dst} {port}/{proto}: expected "
                       f"{'allow' if e else 'deny' if e is not None else '?'}, got "
                       f"{'allow' if a else 'deny' if a is not None else '?'}")
    return out
