"""NetworkPolicy model -> the nftables table that enforces it. Pure: no I/O imports.

    table inet kubeweft-policy
      set in_isolated      local pods selected by at least one policy with Ingress
      set eg_isolated      local pods selected by at least one policy with Egress
      set local_pods       local pods (from their ADD on): other addresses of the node's pod CIDR
                           are dropped, so nothing waits in a neighbour queue for a pod to come
      set p<id>_sel        local pods a policy selects                  (one per policy)
      set p<id>_i<R>       pods matching the selector peers of ingress rule R   (all nodes)
      set p<id>_e<R>       pods matching the selector peers of egress rule R    (all nodes)
      set np_<proto>_<name>  pod ip . proto . port of every pod's containerPort <name> (all nodes)
      counter p<id>_{in,eg}_{ok,drop}   per policy and direction: allowed / denied packets
      chain filter_forward   hook forward: pod traffic, bridged or routed (after DNAT, before SNAT)
      chain filter_input     hook input: a local pod's egress to its own node
      chain pol_egress       egress isolation: each namespace's dispatch chain, then drop
      chain pol_ingress      ingress isolation: each namespace's dispatch chain, then drop
      chain n<id>_in / n<id>_eg   one namespace's policies: jump to each selecting policy's
                           allow rules, then log and count the denial (a policy change
                           rewrites its namespace's chain only)
      chain p<id>_in / p<id>_eg   one policy's allow rules

Flow of a new connection in forward: egress is checked if the source is a local isolated pod
(an allow there continues with `goto pol_ingress`), then ingress if the destination is a local
isolated pod. So a connection needs the source's egress (on its node) and the destination's
ingress (on its node). Established and related packets are accepted first: replies pass, and a
policy change does not cut connections that are already established (as Calico and Cilium).
The node's own traffic to its pods takes the output hook, where nothing is checked: kubelet
probes always pass. A pod's traffic to its own node takes input, where its egress is checked.

Every set holds addresses (or addr . proto . port for named ports), so a label or namespace
change is a few element changes; chains change only when policies do.

IP families: one `inet` table for both. An nft set has one element type, so every address set
has a twin per family (IPv4 keeps the name: `local_pods`, `p<id>_sel`; IPv6 adds `_v6`:
`local_pods_v6`, `p<id>_sel_v6`; named ports `np6_<proto>_<name>`), and only the rules that
match an address are written once per family (`ip saddr @x`, `ip6 saddr @x_v6`). Chains,
counters, port-only rules and the dispatch structure are shared, so a dual-stack table has one
counter pair per policy and direction, not two, and a policy change rewrites the same chains.
One table per family (ip and ip6) would double every chain and rule and split each policy's
counters in two; the element path is the same either way (each set has one address type).
A dual-stack pod puts each of its addresses into the twin of its family: a policy selecting it
isolates both, a selector peer admits both, an ipBlock only addresses of its own family.
A family the node has no pod range of is not policed (its forwarded packets are accepted).
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from .nft_text import quote
from .policy_marks import ADMIN_EGRESS, ADMIN_INGRESS, NP_EGRESS, NP_INGRESS, mark_test
from .policy_model import EGRESS, INGRESS, Labels, Namespace, Peer, Pod, Policy, PortSpec, Rule

FAMILY = "inet"
TABLE = "kubeweft-policy"
T = f"{FAMILY} {TABLE}"
NFLOG_GROUP = 7                                  # denied connections, read by the agent
LOG_LIMIT = "rate 10/second burst 20 packets"    # per policy and direction
IN_ISOLATED, EG_ISOLATED = "in_isolated", "eg_isolated"
LOCAL_PODS = "local_pods"
CHAIN_FORWARD, CHAIN_INPUT = "filter_forward", "filter_input"
CHAIN_INGRESS, CHAIN_EGRESS = "pol_ingress", "pol_egress"
ADDR = "ipv4_addr"
ADDR_PORT = "ipv4_addr . inet_proto . inet_service"
ADDR6 = "ipv6_addr"
ADDR_PORT6 = "ipv6_addr . inet_proto . inet_service"
Family = int                                     # 4 or 6
LOG_PREFIX = "kwp"


# ---- the IR: what is rendered, and what the semantics test interprets -------------------------

@dataclass(frozen=True)
class Match:
    expr: str                      # "ip saddr", "ip daddr", "meta l4proto", "th dport", "ct state",
                                   # "ip daddr . meta l4proto . th dport", "meta nfproto", and
                                   # "icmpv6 type", the "ip6 ..." forms of the address ones
    op: str = "=="                 # "==" or "!="
    set: str = ""                  # a named set of ours
    values: tuple[str, ...] = ()   # literals: prefixes, a protocol, "80" or "80-90", ct states


@dataclass(frozen=True)
class NftRule:
    matches: tuple[Match, ...]
    verdict: str = ""              # accept, drop, "jump X", "goto X", or "" (log only)
    counter: str = ""              # a named counter
    log: str = ""                  # nflog prefix (rate-limited by LOG_LIMIT)
    comment: str = ""
    mark: int = 0                  # OR these bits into the packet mark (proxy/policy_marks.py)


@dataclass(frozen=True)
class SetDecl:
    name: str
    type: str
    comment: str


@dataclass(frozen=True)
class CounterDecl:
    name: str
    comment: str


@dataclass(frozen=True)
class Chain:
    name: str
    comment: str
    rules: tuple[NftRule, ...] = ()
    hook: str = ""                 # "forward" / "input" for base chains


Decl = SetDecl | CounterDecl | Chain


def decl_key(d: Decl) -> str:
    kind = "set" if isinstance(d, SetDecl) else "counter" if isinstance(d, CounterDecl) else "chain"
    return f"{kind} {d.name}"


# ---- names -------------------------------------------------------------------------------------

def policy_id(key: str) -> str:
    """A short stable name for a policy's sets, chains and counters (names are limited and
    policy names are not all valid nft identifiers)."""
    # 13 characters: per-policy sets are recognised by their first 13 (plan_pod_members_delta,
    # plan_pod_members_change)
    return "p" + hashlib.sha256(key.encode()).hexdigest()[:12]


def named_port_set(protocol: str, name: str) -> str:
    return f"np_{protocol}_{name.replace('-', '_')}"      # port names never contain '_'


def family_set(name: str, version: Family) -> str:
    """The set of `name`'s addresses of IP `version`: IPv4's keeps the name. Named-port sets
    take the family in their prefix (a port may be named "http-v6", so a suffix could collide)."""
    if version == 4:
        return name
    return "np6_" + name[3:] if name.startswith("np_") else name + "_v6"


def is_named_port_set(name: str) -> bool:
    return name.startswith(("np_", "np6_"))


def is_selection_set(name: str) -> bool:
    """p<id>_sel and its IPv6 twin: the local pods a policy selects."""
    return name.endswith(("_sel", "_sel_v6"))


def addr_type(version: Family, with_port: bool = False) -> str:
    if with_port:
        return ADDR_PORT if version == 4 else ADDR_PORT6
    return ADDR if version == 4 else ADDR6


def addr_expr(expr: str, version: Family) -> str:
    """"ip saddr" (and the named-port concatenation) for IP `version`."""
    return expr if version == 4 else "ip6" + expr[2:]


def version_of(ip: str) -> Family:
    return 6 if ":" in ip else 4


def families_of(cidrs: Iterable[str] | str | None) -> tuple[Family, ...]:
    """The IP families of a node's pod ranges ("a,b" or a list), in their order; IPv4 without."""
    if isinstance(cidrs, str):
        cidrs = [c for c in cidrs.split(",") if c]
    found = tuple(dict.fromkeys(ipaddress.ip_network(c.strip(), strict=False).version for c in cidrs or ()))
    return found or (4,)


def _family_comment(comment: str, version: Family) -> str:
    return comment if version == 4 else f"{comment} (IPv6)"


def log_prefix(direction: str, pid: str) -> str:
    return f"{LOG_PREFIX} {direction} {pid} "


def parse_log_prefix(prefix: str) -> tuple[str, str] | None:
    """'kwp in p0123 ' -> ('in', 'p0123'); None for someone else's prefix."""
    parts = prefix.split()
    if len(parts) == 3 and parts[0] == LOG_PREFIX and parts[1] in ("in", "eg"):
        return parts[1], parts[2]
    return None


# ---- the policy index: which sets a pod can be in -----------------------------------------------

@dataclass(frozen=True)
class PeerSet:
    name: str
    namespace: str                 # the policy's
    peers: tuple[Peer, ...]        # selector peers only

    def matches(self, pod: Pod, ns_labels: Labels) -> bool:
        for p in self.peers:
            if p.namespace_selector is None:
                if pod.namespace == self.namespace and p.pod_selector.matches(pod.labels):
                    return True
            elif p.namespace_selector.matches(ns_labels) and (
                    p.pod_selector is None or p.pod_selector.matches(pod.labels)):
                return True
        return False


@dataclass(frozen=True)
class PolicyIndex:
    policies: tuple[tuple[str, Policy], ...] = ()                   # (id, policy), sorted by key
    by_namespace: Mapping[str, tuple[tuple[str, Policy], ...]] = field(default_factory=dict)
    local_peer_sets: Mapping[str, tuple[PeerSet, ...]] = field(default_factory=dict)  # pod-selector-only
    ns_peer_sets: tuple[PeerSet, ...] = ()                          # with a namespaceSelector
    named_ports: frozenset[tuple[str, str]] = frozenset()           # (protocol, name) in use
    types: Mapping[str, frozenset[str]] = field(default_factory=dict)  # id -> policyTypes


def _selector_peers(rule: Rule) -> tuple[Peer, ...]:
    return tuple(p for p in rule.peers if p.ip_block is None)


def _policy_parts(pol: Policy) -> tuple[str, tuple[tuple[PeerSet, bool], ...], frozenset[tuple[str, str]]]:
    """One policy's id, peer sets (with: has a namespaceSelector) and named ports."""
    pid = policy_id(pol.key)
    sets = []
    named: set[tuple[str, str]] = set()
    for d, rules in (("i", pol.ingress), ("e", pol.egress)):
        for r, rule in enumerate(rules):
            named.update((ps.protocol, ps.port) for ps in rule.ports if isinstance(ps.port, str))
            peers = _selector_peers(rule)
            if peers:
                sets.append((PeerSet(f"{pid}_{d}{r}", pol.namespace, peers),
                             any(p.namespace_selector is not None for p in peers)))
    return pid, tuple(sets), frozenset(named)


def index_policies(policies: Iterable[Policy], memo: dict | None = None) -> PolicyIndex:
    """memo: a cache the caller keeps from one call to the next (policy key -> (policy, its
    parts)); it only saves work, the index is the same without it."""
    ordered = sorted(policies, key=attrgetter("namespace", "name"))
    parts = []
    for pol in ordered:
        have = memo.get(pol.key) if memo is not None else None
        if have is None or have[0] is not pol:
            have = (pol, _policy_parts(pol))
            if memo is not None:
                memo[pol.key] = have
        parts.append(have[1])
    if memo is not None and len(memo) > len(parts):
        keep = {pol.key for pol in ordered}
        for k in [k for k in memo if k not in keep]:
            del memo[k]
    pairs = tuple((pid, pol) for (pid, _, _), pol in zip(parts, ordered))
    by_ns: dict[str, list] = {}
    local: dict[str, list] = {}
    ns_sets: list[PeerSet] = []
    named: set[tuple[str, str]] = set()
    for (pid, sets, names), pol in zip(parts, ordered):
        by_ns.setdefault(pol.namespace, []).append((pid, pol))
        named |= names
        for ps, across in sets:
            if across:
                ns_sets.append(ps)
            else:
                local.setdefault(pol.namespace, []).append(ps)
    return PolicyIndex(pairs, {k: tuple(v) for k, v in by_ns.items()},
                       {k: tuple(v) for k, v in local.items()}, tuple(ns_sets), frozenset(named),
                       {pid: pol.types for pid, pol in pairs})


def candidate_peer_sets(index: PolicyIndex, namespace: Namespace) -> tuple[PeerSet, ...]:
    """The peer sets a pod of this namespace might be in (the controller caches this per
    namespace, so that a pod is tested against few selectors)."""
    return index.local_peer_sets.get(namespace.name, ()) + filter_candidates(index.ns_peer_sets, namespace)


def filter_candidates(peer_sets: Iterable[PeerSet], namespace: Namespace) -> tuple[PeerSet, ...]:
    """Those of `peer_sets` a pod of this namespace might be in."""
    return tuple(ps for ps in peer_sets
                 if any(p.namespace_selector is not None and p.namespace_selector.matches(namespace.labels)
                        for p in ps.peers)
                 or any(p.namespace_selector is None for p in ps.peers) and ps.namespace == namespace.name)


Member = tuple[str, str]           # (set name, element text)


def _addresses(ips: Iterable[str], name: str) -> set[Member]:
    """(set, element) of every address in the twin of `name` of its family."""
    return {(family_set(name, version_of(ip)), ip) for ip in ips}


def _named_port_members(index: PolicyIndex, pod: Pod) -> set[Member]:
    out: set[Member] = set()
    for cp in pod.ports:
        if (cp.protocol, cp.name) in index.named_ports:
            name = named_port_set(cp.protocol, cp.name)
            out.update((family_set(name, version_of(ip)), f"{ip} . {cp.protocol} . {cp.port}")
                       for ip in pod.ips)
    return out


def plan_pod_members(index: PolicyIndex, pod: Pod, namespace: Namespace, local: bool,
                     candidates: tuple[PeerSet, ...] | None = None) -> frozenset[Member]:
    """Every (set, element) this pod puts into the kernel on this node: each set once per
    address, in the set of that address's family."""
    if not pod.ips or pod.host_network or pod.terminal:
        return frozenset()
    names: set[str] = set()
    if local:
        names.add(LOCAL_PODS)
        for pid, pol in index.by_namespace.get(pod.namespace, ()):
            if pol.pod_selector.matches(pod.labels):
                names.add(f"{pid}_sel")
                if INGRESS in pol.types:
                    names.add(IN_ISOLATED)
                if EGRESS in pol.types:
                    names.add(EG_ISOLATED)
    if candidates is None:
        candidates = candidate_peer_sets(index, namespace)
    names.update(ps.name for ps in candidates if ps.matches(pod, namespace.labels))
    out: set[Member] = set()
    for name in names:
        out |= _addresses(pod.ips, name)
    return frozenset(out | _named_port_members(index, pod))


_SHARED = frozenset(family_set(n, v) for n in (IN_ISOLATED, EG_ISOLATED, LOCAL_PODS) for v in (4, 6))


def plan_pod_members_delta(index: PolicyIndex, pod: Pod, namespace: Namespace, local: bool,
                           old: frozenset[Member], changed: frozenset[str],
                           candidates: tuple[PeerSet, ...] | None = None) -> frozenset[Member]:
    """plan_pod_members after the policies `changed` (ids: added, modified or deleted) changed
    and nothing else did, from the pod's members before: only those policies' selectors are
    evaluated, so a policy change costs one selector test per pod, not one per policy."""
    if not pod.ips or pod.host_network or pod.terminal:
        return frozenset()
    # per-policy sets are named p<12 hex>_...: their first 13 characters are the owner's id
    out = {m for m in old if m[0][:13] not in changed and m[0] not in _SHARED and not is_named_port_set(m[0])}
    names: set[str] = set()
    if local:
        names.add(LOCAL_PODS)
        for pid, pol in index.by_namespace.get(pod.namespace, ()):
            if pid in changed and pol.pod_selector.matches(pod.labels):
                names.add(f"{pid}_sel")
    if candidates is None:
        candidates = candidate_peer_sets(index, namespace)
    names.update(ps.name for ps in candidates if ps.name[:13] in changed and ps.matches(pod, namespace.labels))
    for owner in {s[:13] for s, _ in out if is_selection_set(s)} | {n[:13] for n in names if is_selection_set(n)}:
        types = index.types.get(owner, frozenset())
        if INGRESS in types:
            names.add(IN_ISOLATED)
        if EGRESS in types:
            names.add(EG_ISOLATED)
    for name in names:
        out |= _addresses(pod.ips, name)
    return frozenset(out | _named_port_members(index, pod))


_ISOLATION = frozenset(family_set(n, v) for n in (IN_ISOLATED, EG_ISOLATED) for v in (4, 6))


def plan_pod_members_change(index: PolicyIndex, pod: Pod, old: frozenset[Member], changed: frozenset[str],
                            matched: Iterable[str]) -> tuple[frozenset[Member], frozenset[Member]]:
    """What plan_pod_members_delta changes, as (members that go, members that come), for a pod
    whose `old` members were planned from its present state: only its members in the sets of
    the policies `changed` (of which it is now in `matched`: p<id>_sel, peer sets) and its
    isolation are looked at, so the cost follows the change, not the pod's memberships."""
    if not pod.ips or pod.host_network or pod.terminal:
        return old, frozenset()
    before = {m for m in old if m[0][:13] in changed}
    after: set[Member] = set()
    for name in matched:
        after |= _addresses(pod.ips, name)
    gone, came = before - after, after - before
    if any(is_selection_set(s) for s, _ in before) or any(is_selection_set(s) for s, _ in after):
        # a changed policy selects the pod, or did: isolation follows every selecting policy's types
        owners = {s[:13] for s, _ in old if s[:13] not in changed and is_selection_set(s)}
        owners.update(s[:13] for s, _ in after if is_selection_set(s))
        isolation: set[Member] = set()
        for owner in owners:
            types = index.types.get(owner, frozenset())
            if INGRESS in types:
                isolation |= _addresses(pod.ips, IN_ISOLATED)
            if EGRESS in types:
                isolation |= _addresses(pod.ips, EG_ISOLATED)
        have = {m for m in old if m[0] in _ISOLATION}
        gone |= have - isolation
        came |= isolation - have
    return frozenset(gone), frozenset(came)


# ---- rendering the structure ------------------------------------------------------------------

def plan_ip_block_prefixes(blocks: Iterable, version: Family = 4) -> tuple[str, ...]:
    """The prefixes of IP `version` of the union of (cidr minus its excepts), non-overlapping
    (nft rejects overlapping intervals in one set). A block of the other family adds none."""
    nets: list = []
    for b in blocks:
        net = ipaddress.ip_network(b.cidr, strict=False)
        if net.version != version:
            continue
        parts = [net]
        for x in b.excepts:
            ex = ipaddress.ip_network(x, strict=False)
            nxt = []
            for p in parts:
                if ex.subnet_of(p):
                    nxt.extend(p.address_exclude(ex))
                elif not p.subnet_of(ex):
                    nxt.append(p)
            parts = nxt
        nets.extend(parts)
    return tuple(str(n) for n in ipaddress.collapse_addresses(nets))


# A match list with the IP family it is bound to (None: either family's packets).
Option = tuple[tuple[Match, ...], "Family | None"]


def _port_matches(ports: tuple[PortSpec, ...], families: tuple[Family, ...]) -> list[Option]:
    if not ports:
        return [((), None)]
    out: list[Option] = []
    for ps in ports:
        if isinstance(ps.port, str):
            name = named_port_set(ps.protocol, ps.port)
            out += [((Match(addr_expr("ip daddr . meta l4proto . th dport", v), set=family_set(name, v)),), v)
                    for v in families]
        elif ps.port is None:
            out.append(((Match("meta l4proto", values=(ps.protocol,)),), None))
        else:
            rng = f"{ps.port}-{ps.end_port}" if ps.end_port and ps.end_port != ps.port else str(ps.port)
            out.append(((Match("meta l4proto", values=(ps.protocol,)), Match("th dport", values=(rng,))), None))
    return out


def _peer_matches(rule: Rule, addr: str, set_name: str, families: tuple[Family, ...]) -> list[Option]:
    if not rule.peers:
        return [((), None)]
    out: list[Option] = []
    if _selector_peers(rule):
        out += [((Match(addr_expr(addr, v), set=family_set(set_name, v)),), v) for v in families]
    blocks = [p.ip_block for p in rule.peers if p.ip_block is not None]
    for v in families:
        prefixes = plan_ip_block_prefixes(blocks, v)
        if prefixes:
            out.append(((Match(addr_expr(addr, v), values=prefixes),), v))
    return out                     # may be []: a rule whose peers can match nothing here


def render_policy(pid: str, pol: Policy, families: tuple[Family, ...] = (4,)) -> list[Decl]:
    """One policy's sets, counters and allow chains; the sets and address rules once per family."""
    who = f"{pol.namespace}/{pol.name}"
    decls: list[Decl] = [SetDecl(family_set(f"{pid}_sel", v), addr_type(v),
                                 _family_comment(f"local pods selected by {who}", v)) for v in families]
    for direction, d, rules, addr, verdict in (
            (INGRESS, "in", pol.ingress, "ip saddr", "accept"),
            (EGRESS, "eg", pol.egress, "ip daddr", f"goto {CHAIN_INGRESS}")):
        if direction not in pol.types:
            continue
        ok, drop = f"{pid}_{d}_ok", f"{pid}_{d}_drop"
        decls += [CounterDecl(ok, f"{who} {direction.lower()}: allowed"),
                  CounterDecl(drop, f"{who} {direction.lower()}: denied")]
        body = []
        for r, rule in enumerate(rules):
            set_name = f"{pid}_{d[0]}{r}"
            if _selector_peers(rule):
                side = "sources" if d == "in" else "destinations"
                decls += [SetDecl(family_set(set_name, v), addr_type(v), _family_comment(
                    f"{who} {direction.lower()} rule {r}: {side} by selector", v)) for v in families]
            for peer, peer_family in _peer_matches(rule, addr, set_name, families):
                for port, port_family in _port_matches(rule.ports, families):
                    if peer_family and port_family and peer_family != port_family:
                        continue            # an address of one family, a port set of the other
                    body.append(NftRule(peer + port, verdict, counter=ok))
        decls.append(Chain(f"{pid}_{d}", f"{who} {direction.lower()}: allow rules", tuple(body)))
    return decls


def namespace_chain(namespace: str, d: str) -> str:
    """The dispatch chain of one namespace's policies in direction d ("in"/"eg")."""
    return "n" + hashlib.sha256(namespace.encode()).hexdigest()[:12] + f"_{d}"


def render_namespace_dispatch(namespace: str, pols: Iterable[tuple[str, Policy]], direction: str,
                              d: str, addr: str, families: tuple[Family, ...] = (4,)) -> Chain:
    """Every policy of one namespace selecting the pod (a policy selects only pods of its own
    namespace, so a pod meets only its namespace's rules): jump to its allow rules, then log and
    count the denial. A policy change rewrites this chain only, not every namespace's."""
    pols = [pid for pid, pol in pols if direction in pol.types]

    def selected(pid: str, v: Family) -> tuple[Match, ...]:
        return (Match(addr_expr(addr, v), set=family_set(f"{pid}_sel", v)),)
    rules = [NftRule(selected(pid, v), f"jump {pid}_{d}") for pid in pols for v in families]
    rules += [NftRule(selected(pid, v), log=log_prefix(d, pid)) for pid in pols for v in families]
    rules += [NftRule(selected(pid, v), "drop", counter=f"{pid}_{d}_drop") for pid in pols for v in families]
    return Chain(namespace_chain(namespace, d), f"{direction.lower()} policies of namespace "
                 f"{namespace}", tuple(rules))


def _cidrs(pod_cidrs: Iterable[str] | str | None) -> list[str]:
    if isinstance(pod_cidrs, str):
        return [c.strip() for c in pod_cidrs.split(",") if c.strip()]
    return list(pod_cidrs or ())


_NFPROTO = {4: "ipv4", 6: "ipv6"}
NDP_TYPES = ("nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert")


def render_dispatch(index: PolicyIndex, pod_cidr: Iterable[str] | str | None = None,
                    previous: Mapping[str, Decl] | None = None,
                    only: Iterable[str] | None = None) -> list[Decl]:
    """The base chains, the two isolation chains and one dispatch chain per namespace with
    policies (the isolation chains change only when a namespace gets its first policy or loses
    its last). With `only` (namespaces whose policies changed), the other namespaces' chains are
    taken from `previous` (the decls rendered last time) as they are. pod_cidr: this node's pod
    ranges ("a,b" or a list, one per family); their families are the ones policed."""
    only = None if only is None else set(only)
    cidrs = _cidrs(pod_cidr)
    families = families_of(cidrs)
    est = NftRule((Match("ct state", values=("established,related",)),), "accept",
                  comment="replies and established connections (a policy change cuts none)")
    # Packets routed to an address of this node's pod CIDR before its pod exists would pass (no
    # policy selects an address without a pod) and wait in the neighbour queue, to be delivered
    # once the pod's interface is up: a packet before ADD returned. Only known pods' addresses.
    unknown = []
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        daddr = addr_expr("ip daddr", net.version)
        unknown.append(NftRule((Match(daddr, values=(str(net),)),
                                Match(daddr, "!=", set=family_set(LOCAL_PODS, net.version))), "drop",
                               comment="an address of this node's pods that no pod holds (yet)"))
    to_egress = [NftRule((Match(addr_expr("ip saddr", v), set=family_set(EG_ISOLATED, v)),), f"jump {CHAIN_EGRESS}",
                         comment="source is a local egress-isolated pod") for v in families]
    # Neighbour discovery is not tracked by conntrack (no "established" to let it pass): an
    # isolated pod that may not send or get ICMPv6 would lose its gateway's and its allowed
    # peers' link-layer addresses. IPv4's ARP never meets these hooks.
    ndp = [NftRule((Match("icmpv6 type", values=NDP_TYPES),), "accept",
                   comment="IPv6 neighbour discovery, as ARP is for IPv4")] if 6 in families else []
    forward = Chain(CHAIN_FORWARD, "NetworkPolicy of pod traffic, after DNAT and before SNAT",
                    (est, *ndp, *unknown, *to_egress, NftRule((), f"jump {CHAIN_INGRESS}")), hook="forward")
    inp = Chain(CHAIN_INPUT, "NetworkPolicy egress of local pods to this node", (est, *ndp, *to_egress),
                hook="input")
    chains: list[Decl] = []
    for direction, d, name, addr, isolated in ((INGRESS, "in", CHAIN_INGRESS, "ip daddr", IN_ISOLATED),
                                               (EGRESS, "eg", CHAIN_EGRESS, "ip saddr", None)):
        rules: list[NftRule] = list(cluster_policy_hooks(direction))
        if isolated:
            rules += [NftRule((Match(addr_expr(addr, v), "!=", set=family_set(isolated, v)),), "accept",
                              comment="destination not isolated for ingress") for v in families]
            rules += [NftRule((Match("meta nfproto", values=(_NFPROTO[v],)),), "accept",
                              comment="a family without pod addresses on this node: not policed")
                      for v in (4, 6) if v not in families]
            rules.append(NftRule((), mark=NP_INGRESS, comment="NetworkPolicy decides this ingress"))
        for ns, pols in sorted(index.by_namespace.items()):
            key = f"chain {namespace_chain(ns, d)}"
            if only is not None and previous is not None and ns not in only and key in previous:
                chains.append(previous[key])
                rules.append(NftRule((), f"jump {namespace_chain(ns, d)}"))
            elif any(direction in pol.types for _, pol in pols):
                chains.append(render_namespace_dispatch(ns, pols, direction, d, addr, families))
                rules.append(NftRule((), f"jump {namespace_chain(ns, d)}"))
        rules.append(NftRule((), "drop", comment="isolated, and no policy allowed it"))
        chains.append(Chain(name, f"{direction.lower()} isolation: every policy selecting the pod, "
                                  f"then drop", tuple(rules)))
    return [forward, inp, *chains]


def cluster_policy_hooks(direction: str) -> tuple[NftRule, ...]:
    """The first rules of pol_ingress / pol_egress, for ClusterNetworkPolicy's tiers
    (proxy/render_cluster_policy.py): a direction an Admin rule accepted is not NetworkPolicy's
    to judge; one NetworkPolicy judges is marked, so the Baseline tier leaves it alone."""
    if direction == INGRESS:
        return (NftRule((Match(mark_test(ADMIN_INGRESS), values=(hex(ADMIN_INGRESS),)),), "accept",
                        comment="an Admin ClusterNetworkPolicy accepted this ingress"),)
    return (NftRule((Match(mark_test(ADMIN_EGRESS), values=(hex(ADMIN_EGRESS),)),), "return",
                    comment="an Admin ClusterNetworkPolicy accepted this egress"),
            NftRule((), mark=NP_EGRESS, comment="NetworkPolicy decides this egress"))


def render_fixed_sets(index: PolicyIndex, families: tuple[Family, ...]) -> list[SetDecl]:
    """The sets every table has, and one per named port in use; each once per family."""
    fixed = [SetDecl(family_set(name, v), addr_type(v), _family_comment(comment, v))
             for name, comment in ((LOCAL_PODS, "pods of this node, from their CNI ADD on"),
                                   (IN_ISOLATED, "local pods selected by a policy with Ingress"),
                                   (EG_ISOLATED, "local pods selected by a policy with Egress"))
             for v in families]
    return fixed + [SetDecl(family_set(named_port_set(proto, name), v), addr_type(v, with_port=True),
                            _family_comment(f"pod ip . {proto} . port of every containerPort named {name}", v))
                    for proto, name in sorted(index.named_ports) for v in families]


def render_decls(index: PolicyIndex, pod_cidr: Iterable[str] | str | None = None) -> dict[str, Decl]:
    """The whole desired structure (no elements), keyed by decl_key; pod_cidr: this node's
    ranges, one per family."""
    families = families_of(_cidrs(pod_cidr))
    decls: list[Decl] = list(render_fixed_sets(index, families))
    for pid, pol in index.policies:
        decls += render_policy(pid, pol, families)
    decls += render_dispatch(index, pod_cidr)
    return {decl_key(d): d for d in decls}


# ---- text --------------------------------------------------------------------------------------

def render_match(m: Match) -> str:
    if m.set:
        value = f"@{m.set}"
    elif len(m.values) == 1:
        value = m.values[0]
    else:
        value = "{ " + ", ".join(m.values) + " }"
    return f"{m.expr} {'!= ' if m.op == '!=' else ''}{value}"


def render_rule(chain: str, rule: NftRule, table: str = T) -> str:
    parts = [render_match(m) for m in rule.matches]
    if rule.log:
        parts.append(f"limit {LOG_LIMIT} log prefix {quote(rule.log)} group {NFLOG_GROUP}")
    if rule.mark:
        parts.append(f"meta mark set meta mark | {rule.mark:#x}")
    if rule.counter:
        parts.append(f"counter name {quote(rule.counter)}")
    if rule.verdict:
        parts.append(rule.verdict)
    if rule.comment:
        parts.append(f"comment {quote(rule.comment)}")
    return f"add rule {table} {chain} " + " ".join(parts)


def render_add(d: Decl) -> str:
    if isinstance(d, SetDecl):
        return f"add set {T} {d.name} {{ type {d.type}; comment {quote(d.comment)}; }}"
    if isinstance(d, CounterDecl):
        return f"add counter {T} {d.name} {{ comment {quote(d.comment)}; }}"
    hook = f"type filter hook {d.hook} priority filter; policy accept; " if d.hook else ""
    return f"add chain {T} {d.name} {{ {hook}comment {quote(d.comment)}; }}"


def render_fill(c: Chain) -> list[str]:
    return [render_rule(c.name, r) for r in c.rules]


def render_elements(verb: str, members: Iterable[Member]) -> list[str]:
    by_set: dict[str, list[str]] = {}
    for s, e in members:
        by_set.setdefault(s, []).append(e)
    return [f"{verb} element {T} {s} {{ {', '.join(sorted(es))} }}" for s, es in sorted(by_set.items())]


def render_table(decls: Mapping[str, Decl], members: Iterable[Member]) -> list[str]:
    """The whole table from scratch, replacing whatever is there, as one transaction."""
    lines = [f"add table {T}", f"delete table {T}",
             f'add table {T} {{ comment "kubeweft NetworkPolicy enforcement"; }}']
    lines += [render_add(d) for d in decls.values()]
    for d in decls.values():
        if isinstance(d, Chain):
            lines += render_fill(d)
    return lines + render_elements("add", members)


def plan_structure(old: Mapping[str, Decl], new: Mapping[str, Decl],
                   keys: Iterable[str] | None = None) -> tuple[list[str], list[str], set[str]]:
    """The structure's commands from `old` to `new`: (declare and refill changed chains,
    delete what went, the names of the sets that went). keys: the only decl keys that may
    differ (the caller knows; the rest is not compared)."""
    if keys is not None:
        keys = set(keys)
        old = {k: old[k] for k in keys if k in old}
        new = {k: new[k] for k in keys if k in new}
    pre = [render_add(d) for k, d in new.items() if k not in old]
    for k, d in new.items():
        if isinstance(d, Chain) and old.get(k) != d:
            if k in old:
                pre.append(f"flush chain {T} {d.name}")
            pre += render_fill(d)
    gone = [d for k, d in old.items() if k not in new]
    # a chain that goes may be jumped to from another that goes: flush them all first
    post = [f"flush chain {T} {d.name}" for d in gone if isinstance(d, Chain)]
    post += [f"delete chain {T} {d.name}" for d in gone if isinstance(d, Chain)]
    post += [f"delete {'set' if isinstance(d, SetDecl) else 'counter'} {T} {d.name}"
             for d in gone if not isinstance(d, Chain)]
    return pre, post, {d.name for d in gone if isinstance(d, SetDecl)}


def plan_update(old: Mapping[str, Decl], new: Mapping[str, Decl],
                removed: Iterable[Member], added: Iterable[Member],
                keys: Iterable[str] | None = None) -> list[str]:
    """The commands from `old` to `new` plus element changes, in an order nft accepts in one
    transaction: declare, refill changed chains, element changes, then delete what went."""
    pre, post, gone_sets = plan_structure(old, new, keys)
    return (pre + render_elements("delete", (m for m in removed if m[0] not in gone_sets))
            + render_elements("add", added) + post)
