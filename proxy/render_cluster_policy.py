"""ClusterNetworkPolicy model -> the nftables table that enforces it. Pure: no I/O imports.

    table inet kubeweft-cnp
      chain admin_forward    hook forward, priority filter - 10: before NetworkPolicy
      chain admin_input      hook input, priority filter - 10: a local pod's egress to its node
      chain admin_eg / admin_in   the Admin tier's rules, lowest priority first
      chain baseline_forward hook forward, priority filter + 10: after NetworkPolicy
      chain baseline_input   hook input, priority filter + 10
      chain base_eg / base_in     the Baseline tier's rules
      set c<id>_s4 / _s6     local pods the policy's subject selects
      set c<id>_<e|i><R>_4 / _6   pods (every node) and nodes a rule's selector peers match
      set cnp_np_<name>_4 / _6    pod ip . proto . port of every containerPort named <name>
      counter c<id>_<e|i><R>_n    packets of new connections rule R matched (every family and
                                  alternative of the rule counts into it); a Deny rule's packets
                                  are also logged to NFLOG group 8, prefix "kwc c<id>_<e|i><R>_n "

Why a table of its own at two priorities, rather than chains inside NetworkPolicy's table: the
kernel runs the base chains of one hook in priority order, so Admin runs before NetworkPolicy
and Baseline after it whatever either table holds, and neither planner rewrites the other's
chains. A base chain's accept ends only that chain, so an Admin Accept and NetworkPolicy's own
decision are passed on in packet-mark bits (proxy/policy_marks.py): an Admin Accept sets
ADMIN_EGRESS / ADMIN_INGRESS (NetworkPolicy and Baseline skip that direction), NetworkPolicy
sets NP_EGRESS / NP_INGRESS when it isolates the pod in that direction (Baseline skips it).
Deny is a drop, final in any chain. Pass returns from the tier's chain: the next tier decides.

A policy change replaces the table, and with it the counters: the controller reads them first
and creates them again with their packets and bytes, so Prometheus never sees them fall.

Egress is judged on the source's node (its subject set holds local pods only), ingress on the
destination's; a connection crosses both, as with NetworkPolicy. Established and related
packets are accepted first, so a policy change cuts no connection already made. Every address
set exists per family (an inet table's set holds one family); a rule is written once per family.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import cluster_policy_model as cm
from .nft_text import quote
from .policy_marks import ADMIN_EGRESS, ADMIN_INGRESS, NP_EGRESS, NP_INGRESS, mark_test
from .render_policy import LOG_LIMIT, CounterDecl, Match, SetDecl, render_rule
from .render_policy import NftRule as Rule

FAMILY, TABLE = "inet", "kubeweft-cnp"
T = f"{FAMILY} {TABLE}"
FAMILIES = (4, 6)
IP = {4: "ip", 6: "ip6"}
ADDR = {4: "ipv4_addr", 6: "ipv6_addr"}
ADMIN_FORWARD, ADMIN_INPUT, ADMIN_EG, ADMIN_IN = "admin_forward", "admin_input", "admin_eg", "admin_in"
BASE_FORWARD, BASE_INPUT, BASE_EG, BASE_IN = "baseline_forward", "baseline_input", "base_eg", "base_in"
PRIORITY = {cm.ADMIN: "filter - 10", cm.BASELINE: "filter + 10"}
NFLOG_GROUP = 8                 # Deny rules' packets (NetworkPolicy's denials go to group 7)
LOG_PREFIX = "kwc"
DIRECTION = {"e": cm.EGRESS, "i": cm.INGRESS}


@dataclass(frozen=True)
class Chain:
    name: str
    comment: str
    rules: tuple[Rule, ...] = ()
    hook: str = ""                 # forward / input for base chains
    priority: str = ""


@dataclass(frozen=True)
class World:
    """What one node's table is made from."""
    node: str
    policies: tuple[cm.ClusterPolicy, ...]
    pods: tuple[cm.Pod, ...]
    namespaces: Mapping[str, frozenset]          # name -> labels
    nodes: tuple[cm.Node, ...]
    local: frozenset[tuple[str, str]] = frozenset()   # pods this node's CNI wired (whatever the API says)

    def is_local(self, pod: cm.Pod) -> bool:
        return pod.key in self.local or pod.node == self.node


def policy_id(name: str) -> str:
    return "c" + hashlib.sha256(name.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RuleRef:
    """What a rule's counter and log lines name: the labels of its metric."""
    tier: str
    policy: str
    direction: str                 # Ingress, Egress
    rule: str                      # the rule's name, else its index in the direction's list
    action: str                    # Accept, Deny, Pass


def rule_counter(pid: str, d: str, r: int) -> str:
    return f"{pid}_{d}{r}_n"


def rule_refs(policies: Iterable[cm.ClusterPolicy]) -> dict[str, RuleRef]:
    """Every rule's counter name -> what it counts."""
    out = {}
    for pol in policies:
        pid = policy_id(pol.name)
        for d, rules in (("i", pol.ingress), ("e", pol.egress)):
            for r, rule in enumerate(rules):
                out[rule_counter(pid, d, r)] = RuleRef(pol.tier, pol.name, DIRECTION[d], rule.name or str(r),
                                                       rule.action)
    return out


def log_prefix(counter: str) -> str:
    return f"{LOG_PREFIX} {counter} "


def parse_log_prefix(prefix: str) -> tuple[str, str] | None:
    """'kwc c0123_i2_n ' -> ('in', 'c0123_i2_n') (the drop log's direction and key); None for
    another prefix."""
    parts = prefix.split()
    if len(parts) == 2 and parts[0] == LOG_PREFIX and parts[1].endswith("_n"):
        d = parts[1].rsplit("_", 2)[-2][:1]
        if d in DIRECTION:
            return ("in" if d == "i" else "eg"), parts[1]
    return None


def named_port_set(name: str, family: int) -> str:
    return f"cnp_np_{name.replace('-', '_')}_{family}"


def family_of(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def _ns_labels(world: World, namespace: str) -> frozenset:
    return world.namespaces.get(namespace) or frozenset({("kubernetes.io/metadata.name", namespace)})


def _live(pod: cm.Pod) -> bool:
    return bool(pod.ips) and not pod.terminal


# ---- set contents ------------------------------------------------------------------------------

def pods_by_namespace(world: World) -> dict[str, list[cm.Pod]]:
    """The pods a selector can match (live, not host-network), by namespace: a namespace
    selector is tested once per namespace, not once per pod."""
    out: dict[str, list[cm.Pod]] = {}
    for p in world.pods:
        if _live(p) and not p.host_network:
            out.setdefault(p.namespace, []).append(p)
    return out


def _selected(peer: cm.Peer, world: World, by_ns: Mapping[str, list[cm.Pod]]) -> Iterable[cm.Pod]:
    for ns, pods in by_ns.items():
        labels = _ns_labels(world, ns)
        if peer.namespaces is not None:
            if peer.namespaces.matches(labels):
                yield from pods
        elif peer.pods is not None and peer.pods[0].matches(labels):
            yield from (p for p in pods if peer.pods[1].matches(p.labels))


def peer_addresses(peers: Iterable[cm.Peer], world: World,
                   by_ns: Mapping[str, list[cm.Pod]] | None = None) -> frozenset[str]:
    """Addresses of the pods and nodes the selector peers match (networks are literal)."""
    by_ns = pods_by_namespace(world) if by_ns is None else by_ns
    out: set[str] = set()
    for peer in peers:
        if peer.nodes is not None:
            out.update(ip for n in world.nodes if peer.nodes.matches(n.labels) for ip in n.ips)
        else:
            out.update(ip for p in _selected(peer, world, by_ns) for ip in p.ips)
    return frozenset(out)


def subject_addresses(pol: cm.ClusterPolicy, world: World,
                      by_ns: Mapping[str, list[cm.Pod]] | None = None) -> frozenset[str]:
    by_ns = pods_by_namespace(world) if by_ns is None else by_ns
    return frozenset(ip for p in _selected(pol.subject, world, by_ns) if world.is_local(p) for ip in p.ips)


def _has_selector_peer(rule: cm.Rule) -> bool:
    return any(p.nodes is not None or p.namespaces is not None or p.pods is not None for p in rule.peers)


def _named_ports(world: World) -> set[str]:
    return {pr.named_port for pol in world.policies for rule in (*pol.ingress, *pol.egress)
            for pr in rule.protocols if pr.named_port}


def plan_members(world: World) -> dict[str, frozenset[str]]:
    """Every set's elements on this node: set name -> elements."""
    out: dict[str, set[str]] = {}

    def put(name: str, ips: Iterable[str]) -> None:
        for ip in ips:
            out.setdefault(f"{name}_{6 if ':' in ip else 4}", set()).add(ip)

    by_ns = pods_by_namespace(world)
    for pol in world.policies:
        pid = policy_id(pol.name)
        put(f"{pid}_s", subject_addresses(pol, world, by_ns))
        for d, rules in (("i", pol.ingress), ("e", pol.egress)):
            for r, rule in enumerate(rules):
                if _has_selector_peer(rule):
                    put(f"{pid}_{d}{r}", peer_addresses(rule.peers, world, by_ns))
    names = _named_ports(world)
    for pod in world.pods:
        if not _live(pod) or pod.host_network:
            continue
        for cp in pod.ports:
            if cp.name in names:
                for ip in pod.ips:
                    out.setdefault(named_port_set(cp.name, 6 if ":" in ip else 4), set()).add(
                        f"{ip} . {cp.protocol} . {cp.port}")
    return {k: frozenset(v) for k, v in out.items()}


# ---- structure ---------------------------------------------------------------------------------

def _prefixes(networks: Iterable[str], family: int) -> tuple[str, ...]:
    nets = [ipaddress.ip_network(n) for n in networks]
    return tuple(str(n) for n in ipaddress.collapse_addresses(n for n in nets if n.version == family))


def _peer_alternatives(rule: cm.Rule, set_name: str, family: int, other: str) -> list[tuple[Match, ...]]:
    """The matches on the other side's address, one tuple per alternative; [] matches nothing."""
    out: list[tuple[Match, ...]] = []
    if any(p.unknown for p in rule.peers) and rule.action != cm.ACCEPT:
        return [()]              # fail closed: a Deny or Pass with a peer it cannot read matches all
    if _has_selector_peer(rule):
        out.append((Match(other, set=set_name),))
    prefixes = _prefixes((n for p in rule.peers for n in p.networks), family)
    if prefixes:
        out.append((Match(other, values=prefixes),))
    return out


def _protocol_alternatives(rule: cm.Rule, family: int) -> list[tuple[Match, ...]]:
    if not rule.protocols:
        return [()]
    out = []
    for pr in rule.protocols:
        if pr.named_port:
            out.append((Match(f"{IP[family]} daddr . meta l4proto . th dport",
                              set=named_port_set(pr.named_port, family)),))
        elif pr.port is None:
            out.append((Match("meta l4proto", values=(pr.protocol,)),))
        else:
            rng = f"{pr.port}-{pr.end_port}" if pr.end_port and pr.end_port != pr.port else str(pr.port)
            out.append((Match("meta l4proto", values=(pr.protocol,)), Match("th dport", values=(rng,))))
    return out


def _action(tier: str, action: str, direction: str) -> tuple[str, int]:
    if action == cm.DENY:
        return "drop", 0
    if action == cm.ACCEPT and tier == cm.ADMIN:
        return "return", ADMIN_EGRESS if direction == cm.EGRESS else ADMIN_INGRESS
    return "return", 0           # Pass, or a Baseline Accept: this tier has decided, the next may judge


def render_rules(pol: cm.ClusterPolicy, direction: str) -> list[Rule]:
    """One policy's rules in one direction, in the order written, each once per family."""
    pid = policy_id(pol.name)
    eg = direction == cm.EGRESS
    rules = pol.egress if eg else pol.ingress
    out: list[Rule] = []
    d = "e" if eg else "i"
    for r, rule in enumerate(rules):
        verdict, mark = _action(pol.tier, rule.action, direction)
        label = f"{pol.name} {direction.lower()} {rule.name or r}: {rule.action}"
        counter = rule_counter(pid, d, r)
        for f in FAMILIES:
            subject = Match(f"{IP[f]} {'saddr' if eg else 'daddr'}", set=f"{pid}_s_{f}")
            other = f"{IP[f]} {'daddr' if eg else 'saddr'}"
            for peer in _peer_alternatives(rule, f"{pid}_{d}{r}_{f}", f, other):
                for proto in _protocol_alternatives(rule, f):
                    matches = (subject, *peer, *proto)
                    if rule.action == cm.DENY:
                        out.append(Rule(matches, log=log_prefix(counter)))
                    out.append(Rule(matches, verdict, mark=mark, counter=counter, comment=label[:120]))
    return out


def _tier_chain(name: str, tier: str, direction: str, policies: Iterable[cm.ClusterPolicy]) -> Chain:
    rules: list[Rule] = []
    for pol in sorted((p for p in policies if p.tier == tier), key=lambda p: p.order):
        rules += render_rules(pol, direction)
    return Chain(name, f"{tier} tier, {direction.lower()}: lowest priority first", tuple(rules))


Decl = SetDecl | CounterDecl | Chain


def render_decls(policies: Iterable[cm.ClusterPolicy], named_ports: Iterable[str] = ()) -> list[Decl]:
    """The whole structure (no elements)."""
    policies = tuple(policies)
    decls: list[Decl] = []
    for pol in sorted(policies, key=lambda p: p.name):
        pid = policy_id(pol.name)
        for f in FAMILIES:
            decls.append(SetDecl(f"{pid}_s_{f}", ADDR[f], f"local pods {pol.name} selects"))
            for d, rules in (("i", pol.ingress), ("e", pol.egress)):
                decls += [SetDecl(f"{pid}_{d}{r}_{f}", ADDR[f], f"{pol.name} {d}{r}: peers by selector")
                          for r, rule in enumerate(rules) if _has_selector_peer(rule)]
    decls += [CounterDecl(name, f"{ref.policy} {ref.direction.lower()} {ref.rule}: {ref.action}"[:120])
              for name, ref in sorted(rule_refs(policies).items())]
    for name in sorted(set(named_ports)):
        decls += [SetDecl(named_port_set(name, f), f"{ADDR[f]} . inet_proto . inet_service",
                          f"pod ip . proto . port of every containerPort named {name}") for f in FAMILIES]
    est = Rule((Match("ct state", values=("established,related",)),), "accept",
               comment="replies and established connections (a policy change cuts none)")
    eg_open = Match(mark_test(ADMIN_EGRESS | NP_EGRESS), values=("0",))
    in_open = Match(mark_test(ADMIN_INGRESS | NP_INGRESS), values=("0",))
    decls += [
        Chain(ADMIN_FORWARD, "Admin tier of pod traffic, before NetworkPolicy",
              (est, Rule((), f"jump {ADMIN_EG}"), Rule((), f"jump {ADMIN_IN}")), "forward", PRIORITY[cm.ADMIN]),
        Chain(ADMIN_INPUT, "Admin tier of local pods' egress to this node",
              (est, Rule((), f"jump {ADMIN_EG}")), "input", PRIORITY[cm.ADMIN]),
        _tier_chain(ADMIN_EG, cm.ADMIN, cm.EGRESS, policies),
        _tier_chain(ADMIN_IN, cm.ADMIN, cm.INGRESS, policies),
        Chain(BASE_FORWARD, "Baseline tier of pod traffic NetworkPolicy and Admin left undecided",
              (est, Rule((eg_open,), f"jump {BASE_EG}"), Rule((in_open,), f"jump {BASE_IN}")),
              "forward", PRIORITY[cm.BASELINE]),
        Chain(BASE_INPUT, "Baseline tier of local pods' egress to this node",
              (est, Rule((eg_open,), f"jump {BASE_EG}")), "input", PRIORITY[cm.BASELINE]),
        _tier_chain(BASE_EG, cm.BASELINE, cm.EGRESS, policies),
        _tier_chain(BASE_IN, cm.BASELINE, cm.INGRESS, policies),
    ]
    return decls


def render_world(world: World) -> tuple[list[Decl], dict[str, frozenset[str]]]:
    """The structure and the set elements of one node's table."""
    return render_decls(world.policies, _named_ports(world)), plan_members(world)


# ---- text --------------------------------------------------------------------------------------

Counts = Mapping[str, tuple[int, int]]          # counter name -> (packets, bytes)


def render_table(decls: Iterable[Decl], members: Mapping[str, Iterable[str]], counts: Counts | None = None) -> list[str]:
    """The whole table, replacing whatever is there, as one transaction; each counter starts
    from `counts` (what the table being replaced had counted)."""
    decls = list(decls)
    counts = counts or {}
    lines = [f"add table {T}", f"delete table {T}",
             f'add table {T} {{ comment "kubeweft ClusterNetworkPolicy enforcement"; }}']
    for d in decls:
        if isinstance(d, SetDecl):
            lines.append(f"add set {T} {d.name} {{ type {d.type}; comment {quote(d.comment)}; }}")
        elif isinstance(d, CounterDecl):
            packets, nbytes = counts.get(d.name, (0, 0))
            lines.append(f"add counter {T} {d.name} {{ packets {packets} bytes {nbytes}; comment {quote(d.comment)}; }}")
        else:
            hook = f"type filter hook {d.hook} priority {d.priority}; policy accept; " if d.hook else ""
            lines.append(f"add chain {T} {d.name} {{ {hook}comment {quote(d.comment)}; }}")
    for d in decls:
        if isinstance(d, Chain):
            lines += [_rule_text(d.name, r) for r in d.rules]
    declared = {d.name for d in decls if isinstance(d, SetDecl)}
    for name, elements in sorted(members.items()):
        if name in declared and elements:
            lines.append(_elements("add", name, elements))
    return lines


def _rule_text(chain: str, rule: Rule) -> str:
    """A log rule goes to this table's NFLOG group, not NetworkPolicy's."""
    if not rule.log:
        return render_rule(chain, rule, T)
    return (render_rule(chain, Rule(rule.matches), T)
            + f" limit {LOG_LIMIT} log prefix {quote(rule.log)} group {NFLOG_GROUP}")


def parse_counts(items: Iterable[dict]) -> dict[str, tuple[int, int]]:
    """Counter name -> (packets, bytes) from the JSON items of a listing of the table. Pure."""
    return {c["name"]: (c.get("packets", 0), c.get("bytes", 0))
            for c in (item.get("counter") for item in items) if c}


def _elements(verb: str, name: str, elements: Iterable[str]) -> str:
    return f"{verb} element {T} {name} {{ {', '.join(sorted(elements))} }}"


def plan_element_changes(old: Mapping[str, frozenset[str]], new: Mapping[str, frozenset[str]]) -> list[str]:
    """From one node's set elements to another's with the structure unchanged: deletions first
    (an address that moves from one pod to another is never in a set twice)."""
    names = sorted(set(old) | set(new))
    empty: frozenset[str] = frozenset()
    lines = [_elements("delete", n, old.get(n, empty) - new.get(n, empty)) for n in names
             if old.get(n, empty) - new.get(n, empty)]
    return lines + [_elements("add", n, new.get(n, empty) - old.get(n, empty)) for n in names
                    if new.get(n, empty) - old.get(n, empty)]


def delete_table() -> list[str]:
    return [f"add table {T}", f"delete table {T}"]
