"""Services and EndpointSlices -> the desired nftables state of `table ip kubeweft`. Pure.

The table has a FIXED set of chains and rules (render_base) and keeps every per-Service fact in
sets and maps (render_service, one fragment per Service). The common path is one verdict-map
lookup and one DNAT map lookup:

    nat prerouting/output (dstnat) -> services:
        ip daddr . l4proto . dport vmap @service-ips      -> goto lb-<proto>-N  (N endpoints)
        lb-tcp-N: dnat ip to ip daddr . tcp dport . numgen random mod N map @backends-tcp-N
        node address (never 127/8): l4proto . dport vmap @nodeports -> goto np-<proto>-N
    externalTrafficPolicy Local, external sources: @service-ips-external / @nodeports-external
        -> lbx-/npx- chains over the local endpoints, or drop when there are none here
    filter (priority -110, output -90: before NetworkPolicy at 0, after DNAT): no endpoints ->
        reject; unused port on a ClusterIP -> reject; unallocated address in the service range ->
        drop; loadBalancerSourceRanges -> drop before DNAT (filter prerouting, dstnat - 10).
    nat postrouting (srcnat): masquerade what was marked 0x4000 (off-cluster sources to a
        ClusterIP, node-sourced traffic, externalTrafficPolicy Cluster external addresses and
        nodePorts), and hairpin pairs (this node's endpoint reaching itself).

lb chains are shared by every Service with the same protocol and endpoint count, made on
demand with their backends map. The rr, sh and maglev schedulers (proxy/scheduler.py) read the
same backends maps through chains of their own beside the lb chain (Builder.scheduled). Only Services with sessionAffinity ClientIP get chains of
their own (kube-proxy's shape: one chain per service port and scope, one chain and one dynamic
timeout set per endpoint): the remembered client must map to one endpoint with a per-Service
timeout, and nft 1.0.6 cannot update a map with data from the packet path after DNAT.
"""
from __future__ import annotations

import base64
import collections
import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kubeweft.cni.protocols import NFT_PROTOCOLS

from .ip_family import FAMILIES as IP_FAMILIES
from .ip_family import IpFamily
from .model import Endpoint, EndpointSlice, Service, ServicePort, for_family
from .nft_commands import AddChain, AddMap, AddRule, AddSet, AddTable, Command, FlushChain, Table
from .nft_text import quote
from .scheduler import DEFAULT as DEFAULT_SCHEDULER
from .scheduler import chain_name, scheduled_chain, scheduler_rule, slots, table_of

TABLE = "kubeweft"          # `table ip kubeweft` and `table ip6 kubeweft`: one per IP family
MASQ_MARK = 0x4000          # kube-proxy's bit; cni/nft.py owns 0x2000

K_ADDR = "{addr} . inet_proto . inet_service"
K_PORT = "inet_proto . inet_service"

# name -> (declaration body with {addr} the family's address type, comment). Declarations never
# change: a restart re-adds them as is.
_SETS: dict[str, tuple[str, str]] = {
    "cluster-ips": ("type {addr}", "every ClusterIP: a port not in service-ips is rejected"),
    "no-endpoint-services": (f"type {K_ADDR}", "service address . proto . port without endpoints: reject"),
    "no-endpoint-nodeports": (f"type {K_PORT}", "nodePorts without endpoints: reject"),
    "external-masq": (f"type {K_ADDR}", "external addresses of externalTrafficPolicy Cluster: masquerade"),
    "external-local": (f"type {K_ADDR}", "external addresses of externalTrafficPolicy Local"),
    "nodeport-masq": (f"type {K_PORT}", "nodePorts of externalTrafficPolicy Cluster: masquerade"),
    "nodeport-local": (f"type {K_PORT}", "nodePorts of externalTrafficPolicy Local"),
    "hairpin": ("type {addr} . {addr}", "endpoint . endpoint: a pod reaching itself via a Service"),
    "firewall-keys": (f"type {K_ADDR}", "LoadBalancer address . proto . port with loadBalancerSourceRanges"),
    "firewall-allow": (f"type {K_ADDR} . {{addr}}; flags interval",
                       "LoadBalancer address . proto . port . allowed source range"),
}
_MAPS: dict[str, tuple[str, str]] = {
    "service-ips": (f"type {K_ADDR} : verdict", "service address . proto . port -> lb chain"),
    "service-ips-external": (f"type {K_ADDR} : verdict",
                             "externalTrafficPolicy Local, external sources -> local endpoints or drop"),
    "nodeports": (f"type {K_PORT} : verdict", "nodePort -> np chain"),
    "nodeports-external": (f"type {K_PORT} : verdict",
                           "externalTrafficPolicy Local nodePorts, external sources -> local endpoints"),
}
# The endpoints behind lb-<proto>-N live in their own map backends-<proto>-N, made in the same
# transaction as the chain and deleted with it; the chain's one rule depends on proto and N only,
# so it is never rewritten. Keys name the protocol's port (tcp dport) rather than th dport: nft
# 1.0.6 cannot add a rule against an existing typeof map holding th dport ("conflicting
# protocols"), and the protocol in the map name instead of the key saves a field per element
# (nft parses ~20 us per element; fields cost).
# lb chain family -> (map prefix, key expression before the index with {p} the protocol, what)
FAMILIES = {
    "lb": ("backends", "{ip} daddr . {p} dport", "service address . port . index"),
    "lbx": ("backends-external", "{ip} daddr . {p} dport", "eTP Local external: address . port . index"),
    "np": ("nodeport-backends", "{p} dport", "nodePort . index"),
    "npx": ("nodeport-backends-external", "{p} dport", "eTP Local external: nodePort . index"),
}
VMAP_OF = {"lb": "service-ips", "lbx": "service-ips-external", "np": "nodeports", "npx": "nodeports-external"}


def _declared(decls: dict[str, tuple[str, str]], fam: IpFamily) -> dict[str, tuple[str, str]]:
    return {name: (decl.format(addr=fam.addr), comment) for name, (decl, comment) in decls.items()}


# the fixed sets and maps of each family's table (the names are the same in both)
SETS_OF = {v: _declared(_SETS, fam) for v, fam in IP_FAMILIES.items()}
MAPS_OF = {v: _declared(_MAPS, fam) for v, fam in IP_FAMILIES.items()}
SETS, MAPS = SETS_OF[4], MAPS_OF[4]


@dataclass(frozen=True)
class NodeContext:
    """What the render needs to know about this node and cluster."""
    node_name: str
    zone: str = ""
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    nodeport_cidrs: tuple[str, ...] = ()     # empty: every local address but 127.0.0.0/8
    scheduler: str = DEFAULT_SCHEDULER       # for Services without the scheduler annotation
    maglev_slots: int | None = None          # a prime: Maglev's table size; None: by endpoint count
    service_cidrs: tuple[str, ...] = ()      # the ServiceCIDR objects' ranges; empty: service_cidr
    family: int = 4                          # the IP family of this proxier's table: 4 | 6

    @property
    def ip(self) -> IpFamily:
        return IP_FAMILIES[self.family]

    def service_ranges(self) -> list[str]:
        """The cluster's Service ranges, overlaps merged (an nft interval set refuses them);
        none when neither the ServiceCIDRs nor the flag name one of this family."""
        nets = [ipaddress.ip_network(c, strict=False) for c in self.service_cidrs or (self.service_cidr,) if c]
        return [str(n) for n in ipaddress.collapse_addresses(nets)]


@dataclass(frozen=True)
class Chain:
    comment: str
    rules: tuple[str, ...]
    map: str = ""            # a map made and deleted with the chain (lb-N: backends-N)
    map_decl: str = ""


@functools.lru_cache(maxsize=4096)
def family_chain(name: str, ip: str = "ip") -> Chain | None:
    """The lb-tcp-3 / lbx-udp-1 / np-sctp-2 / npx-tcp-1 ... chain of that name in the table of
    family ip (ip | ip6); None for other names."""
    parts = name.split("-")
    if len(parts) != 3 or parts[0] not in FAMILIES or parts[1] not in NFT_PROTOCOLS or not parts[2].isdigit() \
            or int(parts[2]) < 1:
        return None
    family, proto, n = parts
    prefix, key, what = FAMILIES[family]
    key = key.format(p=proto, ip=ip)
    m = f"{prefix}-{proto}-{n}"
    return Chain(f"spread over {n} endpoints in {m}",
                 (f"dnat {ip} to {key} . numgen random mod {n} map @{m}",), map=m,
                 map_decl=f"typeof {key} . numgen random mod {n} : {ip} daddr . {proto} dport; "
                          f"comment {quote(f'{what} -> endpoint . port ({proto})')}")


def lb_chain_of(name: str, ip: str = "ip") -> Chain | None:
    """The lb chain whose backends map a verdict's chain reads: itself, or the lb chain of a
    scheduler's chain (lb-tcp-3-sh -> lb-tcp-3); None for other chains."""
    chain = family_chain(name, ip)
    if chain is None and (sched := scheduled_chain(name)) is not None:
        chain = family_chain(sched[1], ip)
    return chain


def map_family(name: str) -> tuple[str, str] | None:
    """('lb', 'udp') for backends-udp-3, ('npx', 'tcp') for nodeport-backends-external-tcp-2, ..."""
    rest, _, n = name.rpartition("-")
    base, _, proto = rest.rpartition("-")
    if not n.isdigit() or proto not in NFT_PROTOCOLS:
        return None
    family = next((f for f, (prefix, _, _) in FAMILIES.items() if prefix == base), None)
    return (family, proto) if family else None


def declaration(name: str, version: int = 4) -> str | None:
    """The declaration of one of our sets or maps ('type ...' or 'typeof ...; comment ...') in
    the table of that IP family: the fixed ones, and the backends map of any lb chain; None for
    anything else."""
    if name in SETS_OF[version]:
        return SETS_OF[version][name][0]
    if name in MAPS_OF[version]:
        return MAPS_OF[version][name][0]
    fam = map_family(name)
    if fam is None:
        return None
    chain = family_chain(f"{fam[0]}-{fam[1]}-{name.rpartition('-')[2]}", IP_FAMILIES[version].nft)
    return chain.map_decl if chain is not None and chain.map == name else None


@dataclass(slots=True)
class Desired:
    """Sets, maps, on-demand chains and dynamic sets of the table (or of one Service: a fragment,
    render_service, whose sets hold tuples and whose empty parts are one shared empty mapping)."""
    sets: dict[str, frozenset[str]] = field(default_factory=dict)
    maps: dict[str, dict[str, str]] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)        # on-demand chains
    dynsets: dict[str, str] = field(default_factory=dict)         # on-demand dynamic sets: name -> decl
    health: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # hc port, local eps

    def counts(self) -> dict[str, int]:
        return {"elements": sum(map(len, self.sets.values())) + sum(map(len, self.maps.values())),
                "chains": len(self.chains), "dynsets": len(self.dynsets)}


# Sets whose elements make traffic to an address refused unless a verdict map already has its
# key (service-check: a ClusterIP without the port in service-ips is rejected): an empty table's
# first load, cut into several transactions, adds them last, so that while it runs a Service's
# address is refused only once the Service is complete (before, the service range rule drops
# it, and a client's retry finds it).
LOAD_LAST = frozenset({"cluster-ips"})
SERVICE_TABLES = {v: Table(fam.nft, TABLE, declaration=functools.partial(declaration, version=v),
                           load_last=LOAD_LAST) for v, fam in IP_FAMILIES.items()}
SERVICE_TABLE = SERVICE_TABLES[4]          # an IPv4 node's one table, as before IPv6 came
FAMILY, T = SERVICE_TABLE.family, SERVICE_TABLE.ref


# ---- the fixed part ------------------------------------------------------------------------------

def render_base(ctx: NodeContext) -> list[Command]:
    """Table, sets, maps, fixed chains and their rules: idempotent commands (add, then flush
    and refill the fixed chains; sets and maps keep their elements)."""
    fam = ctx.ip
    ip, lo = fam.nft, fam.loopback
    cluster = str(ipaddress.ip_network(ctx.cluster_cidr, strict=False))
    ranges = ctx.service_ranges()
    svc_cidr = ranges[0] if len(ranges) == 1 else "{ " + ", ".join(ranges) + " }"
    unallocated = [f"{ip} daddr {svc_cidr} drop"] if ranges else []
    # never 127.0.0.0/8, whatever --nodeport-addresses says (kube-proxy's nftables mode neither):
    # a DNAT in prerouting happens before the routing decision that drops a loopback destination
    # arriving from outside, so a neighbour on the LAN could reach the Service (CVE-2020-8558);
    # IPv6 has no route_localnet, but ::1 stays out the same way
    if ctx.nodeport_cidrs:
        nodeport_dst = f"{ip} daddr {{ " + ", ".join(
            str(ipaddress.ip_network(c, strict=False)) for c in ctx.nodeport_cidrs) + \
            f" }} fib daddr type local {ip} daddr != {lo}"
    else:
        nodeport_dst = f"fib daddr type local {ip} daddr != {lo}"
    external_src = f"{ip} saddr != {cluster} fib saddr type != local"
    mark = f"meta mark set meta mark or {MASQ_MARK:#x}"
    fixed: dict[str, tuple[str, str, list[str]]] = {
        # name: (hook declaration or "", comment, rules)
        "nat-prerouting": ("type nat hook prerouting priority dstnat", "service DNAT of arriving packets",
                           ["jump services"]),
        "nat-output": ("type nat hook output priority -100", "service DNAT of the node's own packets",
                       ["jump services"]),
        "nat-postrouting": ("type nat hook postrouting priority srcnat", "service masquerade",
                            ["jump masquerading"]),
        "mark-for-masquerade": ("", "set the masquerade mark", [mark]),
        "masquerading": ("", "masquerade marked and hairpin connections", [
            f"ct status dnat {ip} saddr . {ip} daddr @hairpin masquerade",
            f"meta mark & {MASQ_MARK:#x} == 0 return",
            f"meta mark set meta mark xor {MASQ_MARK:#x}",
            "masquerade fully-random"]),
        "services": ("", "service addresses and nodePorts", [
            f"{ip} daddr @cluster-ips {ip} saddr != {cluster} jump mark-for-masquerade",
            f"{ip} daddr . meta l4proto . th dport @external-masq jump mark-for-masquerade",
            f"{external_src} {ip} daddr . meta l4proto . th dport vmap @service-ips-external",
            f"fib saddr type local {ip} daddr . meta l4proto . th dport @external-local jump mark-for-masquerade",
            f"{ip} daddr . meta l4proto . th dport vmap @service-ips",
            f"{nodeport_dst} jump nodeports"]),
        "nodeports": ("", f"nodePorts on node addresses (never {lo})", [
            "meta l4proto . th dport @nodeport-masq jump mark-for-masquerade",
            f"{external_src} meta l4proto . th dport vmap @nodeports-external",
            "fib saddr type local meta l4proto . th dport @nodeport-local jump mark-for-masquerade",
            "meta l4proto . th dport vmap @nodeports"]),
        "filter-prerouting": ("type filter hook prerouting priority dstnat - 10",
                              "loopback destinations from outside, and loadBalancerSourceRanges, before DNAT", [
            # kube-proxy's "block incoming localnet connections": a loopback destination comes
            # only over lo; the kernel drops it from elsewhere unless route_localnet is set
            # (by kube-proxy's iptables mode, say), so this holds whatever the sysctls are
            f'iif != "lo" {ip} daddr {lo} counter drop',
            (f"{ip} daddr . meta l4proto . th dport @firewall-keys "
             f"{ip} daddr . meta l4proto . th dport . {ip} saddr != @firewall-allow drop")]),
        "filter-input": ("type filter hook input priority -110", "nodePorts and services without endpoints",
                         ["ct state new jump service-check",
                          (f"ct state new {nodeport_dst} meta l4proto . th dport @no-endpoint-nodeports "
                           "goto reject-chain")]),
        "filter-forward": ("type filter hook forward priority -110", "services without endpoints",
                           ["ct state new jump service-check"]),
        "filter-output": ("type filter hook output priority -90", "services without endpoints (after nat output's DNAT at -100)",
                          ["ct state new jump service-check"]),
        "service-check": ("", "no endpoints or unused port: reject; unallocated service address: drop", [
            f"{ip} daddr . meta l4proto . th dport @no-endpoint-services goto reject-chain",
            f"{ip} daddr @cluster-ips goto reject-chain",
            *unallocated]),
        "reject-chain": ("", "connection refused at once", [
            "meta l4proto tcp reject with tcp reset", "reject"]),
    }
    out: list[Command] = [AddTable("kubeweft service proxy: per-Service state in maps")]
    out += [AddSet(name, decl, comment) for name, (decl, comment) in SETS_OF[fam.version].items()]
    out += [AddMap(name, decl, comment) for name, (decl, comment) in MAPS_OF[fam.version].items()]
    out += [AddChain(name, comment, hook) for name, (hook, comment, _) in fixed.items()]
    for name, (_, _, rules) in fixed.items():
        out.append(FlushChain(name))
        out += [AddRule(name, r) for r in rules]
    return out


# ---- endpoint selection (kube-proxy's CategorizeEndpoints) -------------------------------------

def select_endpoints(eps: list[Endpoint], ctx: NodeContext) -> tuple[list[Endpoint], list[Endpoint]]:
    """(cluster endpoints, local endpoints): ready ones (cluster ones narrowed by topology hints
    when they apply), else serving-and-terminating ones."""
    ready = [e for e in eps if e.ready]
    cluster = _topology(ready, ctx) or [e for e in eps if not e.ready and e.serving and e.terminating]
    me = ctx.node_name
    local_all = [e for e in eps if e.node_name == me]
    if not local_all:
        return cluster, local_all
    local = [e for e in local_all if e.ready] or \
        [e for e in local_all if not e.ready and e.serving and e.terminating]
    return cluster, local


def _topology(ready: list[Endpoint], ctx: NodeContext) -> list[Endpoint]:
    """kube-proxy 1.35's topologyModeFromHints: the endpoints hinted for this node when every
    ready endpoint has a node hint and one names this node (PreferSameNode); else those hinted
    for this node's zone when every ready endpoint has a zone hint and one names the zone
    (PreferSameZone, PreferClose, topology-mode Auto); else all. An empty hint list is no hint."""
    # the first endpoint decides most cases: hints apply only when every endpoint has them
    if not ready:
        return ready
    if ready[0].hint_nodes and all(e.hint_nodes for e in ready):
        mine = [e for e in ready if ctx.node_name in e.hint_nodes]
        if mine:
            return mine
    if ctx.zone and ready[0].hint_zones and all(e.hint_zones for e in ready):
        mine = [e for e in ready if ctx.zone in e.hint_zones]
        if mine:
            return mine
    return ready


def _slice_name(sl: EndpointSlice) -> str:
    return sl.name


def endpoints_for_port(sp: ServicePort, slices: Iterable[EndpointSlice]) -> list[tuple[Endpoint, int]]:
    """The endpoints of one service port with their target port, deduplicated by address."""
    seen: dict[str, tuple[Endpoint, int]] = {}
    if not isinstance(slices, (list, tuple)) or len(slices) > 1:
        slices = sorted(slices, key=_slice_name)
    name, proto = sp.name, sp.protocol
    for sl in slices:
        for p in sl.ports:
            if p.name == name and p.protocol == proto:
                port = p.port
                break
        else:
            continue
        for ep in sl.endpoints:
            old = seen.get(ep.ip)
            if old is None or (ep.ready and not old[0].ready):
                seen[ep.ip] = (ep, port)
    return [seen[ip] for ip in sorted(seen)]          # any stable order; strings sort fastest


# ---- the per-Service part ------------------------------------------------------------------------

def _id(*parts: object) -> str:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return base64.b32encode(digest[:10]).decode().lower()


@functools.lru_cache(maxsize=4096)
def _lb_chain(family: str, proto: str, n: int, ip: str = "ip") -> tuple[str, Chain]:
    name = f"{family}-{proto}-{n}"
    return name, family_chain(name, ip)


class _Goto(dict):
    """'lb-tcp-3' -> 'goto lb-tcp-3', one string shared by every map value that names it."""

    def __missing__(self, name: str) -> str:
        value = self[name] = f"goto {name}"
        return value


_GOTO = _Goto()


class _Builder:
    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self.ip = ctx.ip
        self.sets: dict[str, set[str]] = collections.defaultdict(set)
        self.maps: dict[str, dict[str, str]] = collections.defaultdict(dict)
        self.chains: dict[str, Chain] = {}
        self.dynsets: dict[str, str] = {}

    def target(self, family: str, bkey: str, eps: list[tuple[str, int]], svc: Service,
               sp: ServicePort, scope: str) -> str:
        """The verdict for a service key whose endpoints are eps (non-empty), filling the backends
        map under bkey (the key without the protocol, which the map's name holds)."""
        if svc.affinity_timeout is not None:
            return f"goto {self.affinity(svc, sp, scope, eps)}"
        scheduler = svc.scheduler or self.ctx.scheduler
        if scheduler != DEFAULT_SCHEDULER:
            return self.scheduled(scheduler, family, bkey, eps, sp.protocol)
        name, chain = _lb_chain(family, sp.protocol, len(eps), self.ip.nft)
        self.chains[name] = chain
        m = self.maps[chain.map]
        for i, (ip, port) in enumerate(eps):
            m[f"{bkey} . {i}"] = f"{ip} . {port}"
        return _GOTO[name]

    def scheduled(self, scheduler: str, family: str, bkey: str, eps: list[tuple[str, int]], proto: str) -> str:
        """The verdict of a frontend of another scheduler than random (proxy/scheduler.py): its
        slots in the backends map of the lb chain with as many, and a chain reading them."""
        n = slots(scheduler, len(eps), self.ctx.maglev_slots)
        lb_name, lb = _lb_chain(family, proto, n, self.ip.nft)
        self.chains[lb_name] = lb                 # owns the backends map
        m = self.maps[lb.map]
        for i, endpoint in enumerate(table_of(scheduler, tuple(f"{ip} . {port}" for ip, port in eps),
                                              self.ctx.maglev_slots)):
            m[f"{bkey} . {i}"] = endpoint
        name = chain_name(scheduler, lb_name, _id(family, proto, bkey) if scheduler == "rr" else "")
        if name not in self.chains:
            key = FAMILIES[family][1].format(p=proto, ip=self.ip.nft)
            what = f" of {bkey.replace(' . ', ':')}/{proto}" if scheduler == "rr" else ""
            self.chains[name] = Chain(f"{scheduler} over {n} slots of {lb.map}{what}",
                                      (scheduler_rule(scheduler, key, n, lb.map, self.ip.nft),))
        return _GOTO[name]

    def affinity(self, svc: Service, sp: ServicePort, scope: str, eps: list[tuple[str, int]]) -> str:
        sid = _id(svc.namespace, svc.name, sp.protocol, sp.port, scope)
        name = f"aff-{sid}"
        if name in self.chains:
            return name
        what = f"{svc.namespace}/{svc.name}:{sp.name or sp.port}/{sp.protocol} {scope}"
        rules, gotos = [], []
        fam = self.ip
        for i, (ip, port) in enumerate(eps):
            eid = f"{name}-{_id(ip, port)}"
            dest = fam.host_port(ip, port)
            self.dynsets[eid] = (f"type {fam.addr}; flags dynamic,timeout; timeout {svc.affinity_timeout}s; "
                                 f"comment {quote(f'clients of {dest} for {what}')}")
            self.chains[eid] = Chain(f"endpoint {dest} of {what}",
                                     (f"update @{eid} {{ {fam.nft} saddr }}",
                                      f"meta l4proto {sp.protocol} dnat {fam.nft} to {dest}"))
            rules.append(f"{fam.nft} saddr @{eid} goto {eid}")
            gotos.append(f"{i} : goto {eid}")
        rules.append(f"numgen random mod {len(eps)} vmap {{ {', '.join(gotos)} }}")
        self.chains[name] = Chain(f"sessionAffinity ClientIP {svc.affinity_timeout}s of {what}", tuple(rules))
        return name

    def add_service(self, svc: Service, slices: list[EndpointSlice]) -> None:
        local_total: set[str] = set()
        me = self.ctx.node_name
        host = f"/{self.ip.host_len}"
        for sp in svc.ports:
            found = endpoints_for_port(sp, slices)
            if all(e.ready and not e.hint_nodes and not e.hint_zones for e, _ in found):
                # every endpoint ready and no hints (the common case): select_endpoints keeps
                # them all, and this node's as the local ones; one pass instead of six
                all_eps, local_eps, hairpin = [], [], []
                for e, port in found:
                    ip, node = e.ip, e.node_name
                    all_eps.append((ip, port))
                    if node == me:
                        local_eps.append((ip, port))
                        hairpin.append(f"{ip} . {ip}")
                    elif not node:
                        hairpin.append(f"{ip} . {ip}")
                if local_eps:
                    local_total.update(ip for ip, _ in local_eps)
            else:
                by_ip = {e.ip: port for e, port in found}
                cluster, local = select_endpoints([e for e, _ in found], self.ctx)
                all_eps = [(e.ip, by_ip[e.ip]) for e in cluster]
                local_eps = [(e.ip, by_ip[e.ip]) for e in local]
                if local:
                    local_total.update(e.ip for e in local)
                hairpin = [f"{e.ip} . {e.ip}" for e in cluster if e.node_name == me or not e.node_name]
                if local:            # only a pod on this node can reach itself through it
                    hairpin += [f"{e.ip} . {e.ip}" for e in local if e.node_name == me or not e.node_name]
            if hairpin:
                self.sets["hairpin"].update(hairpin)
            internal = local_eps if svc.internal_local else all_eps
            proto, port = sp.protocol, sp.port
            for vip in svc.cluster_ips:
                self.sets["cluster-ips"].add(vip)
                key = f"{vip} . {proto} . {port}"
                if not all_eps:
                    self.sets["no-endpoint-services"].add(key)
                elif not internal:
                    self.maps["service-ips"][key] = "drop"     # internalTrafficPolicy Local, none here
                else:
                    self.maps["service-ips"][key] = self.target("lb", f"{vip} . {port}", internal, svc, sp,
                                                                 "internal")
            for addr in dict.fromkeys(svc.external_ips + svc.lb_ips):
                key = f"{addr} . {proto} . {port}"
                if addr in svc.lb_ips and svc.lb_source_ranges:
                    self.sets["firewall-keys"].add(key)
                    for cidr in svc.lb_source_ranges:
                        self.sets["firewall-allow"].add(f"{key} . {cidr.removesuffix(host)}")
                self._external(svc, sp, key, f"{addr} . {port}", "service-ips", "lb", all_eps, local_eps,
                               "no-endpoint-services", "external-masq", "external-local")
            if sp.node_port:
                key = f"{proto} . {sp.node_port}"
                self._external(svc, sp, key, str(sp.node_port), "nodeports", "np", all_eps, local_eps,
                               "no-endpoint-nodeports", "nodeport-masq", "nodeport-local")
        if svc.health_check_node_port:
            self.health_entry = (svc.health_check_node_port, len(local_total))
        else:
            self.health_entry = None

    def _external(self, svc, sp, key, bkey, vmap, family, all_eps, local_eps, reject_set, masq_set, local_set):
        if not all_eps:
            self.sets[reject_set].add(key)
            return
        # pods and the node itself: every endpoint (short-circuit), whatever the policy
        self.maps[vmap][key] = self.target(family, bkey, all_eps, svc, sp, "cluster")
        if not svc.external_local:
            self.sets[masq_set].add(key)
            return
        self.sets[local_set].add(key)
        self.maps[f"{vmap}-external"][key] = \
            self.target(f"{family}x", bkey, local_eps, svc, sp, "local") if local_eps else "drop"


def render_service(svc: Service, slices: Iterable[EndpointSlice], ctx: NodeContext) -> Desired | None:
    """The elements, on-demand chains and dynamic sets of ONE Service (a fragment) in the table
    of ctx's IP family: that family's addresses of the Service and its slices of that family;
    None (no fragment) for a Service without a ClusterIP of the family."""
    share = for_family(svc, ctx.family)
    if share is None:
        return None
    b = _Builder(ctx)
    family = ctx.family
    b.add_service(share, [sl for sl in slices if sl.family == family])
    chains = b.chains
    if len(chains) == 1:
        chains = _only_chain(chains)
    # 100k fragments stay alive between syncs: tuples (48 bytes for one element, a frozenset
    # 216) and shared empty and one-chain mappings took a fragment of 3 endpoints from ~2.4 kB
    # to ~1.5 kB
    # the builder never leaves a set or map empty; dict(zip()) and dict() copy in C
    return Desired(sets=dict(zip(b.sets, map(tuple, b.sets.values()))),
                   maps=dict(b.maps), chains=chains or _NOTHING,
                   dynsets=b.dynsets or _NOTHING,
                   health={svc.key: b.health_entry} if b.health_entry else _NOTHING)


_NOTHING: Mapping = MappingProxyType({})


_ONLY_CHAIN: dict[str, tuple[Chain, Mapping[str, Chain]]] = {}


def _only_chain(chains: dict[str, Chain]) -> Mapping[str, Chain]:
    """The chains of a fragment with one (an lb chain, most often): one mapping shared by every
    fragment with that same chain object (the lb chains come from a cache)."""
    ((name, chain),) = chains.items()
    got = _ONLY_CHAIN.get(name)
    if got is None or got[0] is not chain:
        if len(_ONLY_CHAIN) > 4096:
            _ONLY_CHAIN.clear()
        got = _ONLY_CHAIN[name] = (chain, MappingProxyType({name: chain}))
    return got[1]


@dataclass
class Touched:
    """What an update of fragments may have changed: only these are diffed."""
    elements: set[tuple[str, str]] = field(default_factory=set)     # (set name, element)
    keys: set[tuple[str, str]] = field(default_factory=set)         # (map name, key)
    chains: set[str] = field(default_factory=set)
    dynsets: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.elements or self.keys or self.chains or self.dynsets)

    def merge(self, other: Touched) -> None:
        self.elements |= other.elements
        self.keys |= other.keys
        self.chains |= other.chains
        self.dynsets |= other.dynsets


class Aggregate:
    """The desired state as the sum of per-Service fragments, reference-counted, so that one
    Service's change touches only its own elements (and shared ones are kept while any Service
    needs them). A map key claimed by two Services (one externalIP:port, say) goes to the
    Service whose namespace/name sorts first, as a full render would decide.
    Per-name dicts, map values updated in bulk (C loops): 30k Services hold ~200k elements,
    and Python work per element costs seconds."""

    def __init__(self) -> None:
        self.fragments: dict[tuple[str, str], Desired] = {}
        self.set_refs: dict[str, dict[str, int]] = {}                 # name -> element -> count
        self.map_vals: dict[str, dict[str, str]] = {}                  # name -> key -> value
        self.map_svc: dict[str, dict[str, tuple[str, str]]] = {}       # name -> key -> owner
        self.map_claims: dict[tuple[str, str], dict[tuple[str, str], str]] = {}   # contested keys only
        self.chain_refs: dict[str, list] = {}          # name -> [count, Chain]
        self.dynset_refs: dict[str, list] = {}         # name -> [count, decl]
        self.health_of: dict[tuple[str, str], tuple[int, int]] = {}

    def put(self, key: tuple[str, str], frag: Desired | None, track: bool = True) -> Touched | None:
        """Replace the fragment of one Service (None: remove it). With track, what may have
        changed is returned; without, None (a full sync diffs everything and skips that)."""
        touched = Touched() if track else None
        old = self.fragments.pop(key, None)
        if old is not None:
            self._remove(key, old, touched)
            self.health_of.pop(key, None)
        if frag is not None:
            self.fragments[key] = frag
            self._add(key, frag, touched)
            if frag.health:
                self.health_of.update(frag.health)
        return touched

    def _add(self, svc: tuple[str, str], frag: Desired, touched: Touched | None) -> None:
        set_refs = self.set_refs
        for name, elems in frag.sets.items():
            refs = set_refs.get(name)
            if refs is None:
                refs = set_refs[name] = {}
            for e in elems:                  # a fragment's sets are small: a loop beats Counter
                refs[e] = refs.get(e, 0) + 1
            if touched is not None:
                touched.elements.update((name, e) for e in elems)
        map_vals, map_svc = self.map_vals, self.map_svc
        for name, m in frag.maps.items():
            vals = map_vals.get(name)
            if vals is None:
                vals = map_vals[name] = {}
                map_svc[name] = {}
            svcs = map_svc[name]
            for k, v in m.items():           # a fragment's maps are small: a loop beats set views
                owner = svcs.get(k)
                if owner is None or owner == svc:
                    vals[k] = v
                    svcs[k] = svc
                    continue
                claims = self.map_claims.setdefault((name, k), {owner: vals[k]})
                claims[svc] = v
                first = min(claims)
                svcs[k], vals[k] = first, claims[first]
            if touched is not None:
                touched.keys.update((name, k) for k in m)
        self._objects(frag, +1, touched)

    def _remove(self, svc: tuple[str, str], frag: Desired, touched: Touched | None) -> None:
        for name, elems in frag.sets.items():
            refs = self.set_refs[name]
            for e in elems:
                n = refs[e] - 1
                if n:
                    refs[e] = n
                else:
                    del refs[e]
            if touched is not None:
                touched.elements.update((name, e) for e in elems)
        for name, m in frag.maps.items():
            vals, svcs = self.map_vals[name], self.map_svc[name]
            for k in m:
                claims = self.map_claims.get((name, k))
                if claims is None:
                    del vals[k], svcs[k]
                    continue
                claims.pop(svc, None)
                first = min(claims)
                svcs[k], vals[k] = first, claims[first]
                if len(claims) == 1:
                    del self.map_claims[(name, k)]
            if touched is not None:
                touched.keys.update((name, k) for k in m)
        self._objects(frag, -1, touched)

    def _objects(self, frag: Desired, d: int, touched: Touched | None) -> None:
        if frag.chains:
            _count(self.chain_refs, frag.chains, d, touched.chains if touched is not None else None)
        if frag.dynsets:
            _count(self.dynset_refs, frag.dynsets, d, touched.dynsets if touched is not None else None)

    def has(self, name: str, elem: str) -> bool:
        return elem in self.set_refs.get(name, ())

    def value(self, name: str, key: str) -> str | None:
        return self.map_vals.get(name, {}).get(key)

    def chain(self, name: str) -> Chain | None:
        entry = self.chain_refs.get(name)
        return entry[1] if entry else None

    def dynset(self, name: str) -> str | None:
        entry = self.dynset_refs.get(name)
        return entry[1] if entry else None

    def health(self) -> dict[tuple[str, str], tuple[int, int]]:
        return dict(self.health_of)

    def everything(self) -> Touched:
        return Touched(elements={(n, e) for n, refs in self.set_refs.items() for e in refs},
                       keys={(n, k) for n, vals in self.map_vals.items() for k in vals},
                       chains=set(self.chain_refs), dynsets=set(self.dynset_refs))

    def materialize(self) -> Desired:
        sets = {n: frozenset() for n in _SETS}
        sets.update((n, frozenset(refs)) for n, refs in self.set_refs.items())
        maps: dict[str, dict[str, str]] = {n: {} for n in _MAPS}
        maps.update((n, dict(vals)) for n, vals in self.map_vals.items())
        return Desired(sets=sets, maps=maps,
                       chains={n: e[1] for n, e in self.chain_refs.items()},
                       dynsets={n: e[1] for n, e in self.dynset_refs.items()}, health=self.health())


def _count(refs: dict[str, list], items: dict, d: int, seen: set[str] | None) -> None:
    """Reference counts of chains or dynamic sets: name -> [count, latest value]."""
    for name, value in items.items():
        entry = refs.get(name)
        if entry is None:
            entry = refs[name] = [0, value]
        entry[0] += d
        if d > 0:
            entry[1] = value
        if entry[0] <= 0:
            del refs[name]
        if seen is not None:
            seen.add(name)


def render_state(services: Mapping[tuple[str, str], Service],
                 slices: Mapping[tuple[str, str], Iterable[EndpointSlice]], ctx: NodeContext) -> Desired:
    """The whole desired state in one go (what any sequence of incremental updates must equal).
    `slices` maps a Service key to that Service's EndpointSlices."""
    agg = Aggregate()
    for key in sorted(services):
        agg.put(key, render_service(services[key], slices.get(key, ()), ctx))
    return agg.materialize()
