"""The answer to one DNS question about the cluster, as the Kubernetes DNS-Based Service
Discovery specification (schema 1.1.0) and CoreDNS's kubernetes plugin give it.

`answer(cluster, config, qname, qtype)` is pure: it reads the `Cluster` index and returns the
rcode and the answer, authority and additional sections as dnspython RRsets. Names served, with
<zone> the cluster domain:

    <svc>.<ns>.svc.<zone>                 A/AAAA: the ClusterIPs; headless: the ready endpoint
                                          addresses (NXDOMAIN without any); ExternalName: CNAME
    <host>.<svc>.<ns>.svc.<zone>          A/AAAA of the ready endpoints whose hostname is <host>
                                          (an endpoint without one is named by its dashed address)
    _<port>._<proto>.<svc>.<ns>.svc.<zone> SRV per named port (headless: per ready endpoint too);
                                          SRV on <svc>.<ns>.svc.<zone> lists every port, as CoreDNS
    <a>-<b>-<c>-<d>.<ns>.pod.<zone>       A (AAAA for a dashed IPv6 address), per `Config.pods`
    dns-version.<zone>                    TXT "1.1.0"
    <zone>                                SOA, NS ns.dns.<zone>
    <reversed address>.in-addr.arpa / .ip6.arpa   PTR to every Service and ready endpoint name

A name in a served zone that does not exist is NXDOMAIN, a name that exists without the asked
type (also an empty non-terminal: svc.<zone>, <ns>.svc.<zone> of a namespace with Services) is
NOERROR with no answer; both carry the zone's SOA in the authority section, with the TTL as
negative-caching time. Every other name is REFUSED: this server has no upstream to forward to.
Lookups are case-insensitive; the answer's owner names keep the question's spelling.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from .index import Backend, Cluster

SCHEMA_VERSION = "1.1.0"
IN = dns.rdataclass.IN
T = dns.rdatatype
MAX_CNAME_CHAIN = 8
POD_MODES = ("disabled", "insecure", "verified")
CLUSTER_LOCAL = dns.name.from_text("cluster.local")
REVERSE_ZONES = (dns.name.from_text("in-addr.arpa"), dns.name.from_text("ip6.arpa"))


@dataclass(frozen=True)
class Config:
    zone: dns.name.Name = CLUSTER_LOCAL
    reverse_zones: tuple[dns.name.Name, ...] = REVERSE_ZONES
    ttl: int = 5                     # CoreDNS's kubernetes plugin's default
    pods: str = "insecure"           # kubeadm's Corefile: any a-b-c-d answers; verified: a Pod has it


@dataclass
class Answer:
    rcode: int = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    authoritative: bool = True


@dataclass
class _Found:
    """What a name holds for the asked type: no rdata is NODATA; a CNAME answers every type."""
    rdatas: list = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    cname: dns.name.Name | None = None


def _name(text: str, zone: dns.name.Name) -> dns.name.Name:
    return dns.name.from_text(text, origin=zone)


def _address_rdata(address: str):
    return AAAA(IN, T.AAAA, address) if ":" in address else A(IN, T.A, address)


def _address_type(address: str) -> int:
    return T.AAAA if ":" in address else T.A


def _rrset(owner: dns.name.Name, ttl: int, rdatas: Iterable) -> dns.rrset.RRset | None:
    rdatas = list(rdatas)
    if not rdatas:
        return None
    rrset = dns.rrset.RRset(owner, IN, rdatas[0].rdtype)
    for rd in rdatas:
        rrset.add(rd, ttl)
    return rrset


def _addresses(addresses: Iterable[str], qtype: int) -> list:
    return [_address_rdata(a) for a in dict.fromkeys(addresses) if _address_type(a) == qtype]


def soa(cluster: Cluster, config: Config, zone: dns.name.Name) -> dns.rrset.RRset:
    # CoreDNS's SOA: ns.dns.<zone>, hostmaster.<zone>, refresh 7200, retry 1800, expire 86400,
    # minimum the record TTL (so an NXDOMAIN is cached no longer than a record)
    rd = SOA(IN, T.SOA, _name("ns.dns", zone), _name("hostmaster", zone), cluster.serial,
             7200, 1800, 86400, config.ttl)
    return _rrset(zone, config.ttl, [rd])


def _srv(records: list[tuple[int, dns.name.Name]]) -> list:
    """SRV rdata with priority 0 and the weight spread over the targets, as CoreDNS does."""
    weight = max(1, 100 // max(1, len(records)))
    return [SRV(IN, T.SRV, 0, weight, port, target) for port, target in records]


def _glue(config: Config, targets: dict[dns.name.Name, list[str]]) -> list[dns.rrset.RRset]:
    """The A/AAAA records of SRV targets, for the additional section."""
    out = []
    for target, addresses in targets.items():
        for qtype in (T.A, T.AAAA):
            rrset = _rrset(target, config.ttl, _addresses(addresses, qtype))
            if rrset is not None:
                out.append(rrset)
    return out


# --- names under svc.<zone> ----------------------------------------------------------------------

def _service(cluster: Cluster, config: Config, ns: str, name: str, qtype: int) -> _Found | None:
    svc = cluster.services.get((ns, name))
    if svc is None:
        return None
    if svc.type == "ExternalName":
        target = dns.name.from_text(svc.external_name)
        if qtype == T.CNAME:
            return _Found([CNAME(IN, T.CNAME, target)])
        return _Found(cname=target)
    own = _name(f"{name}.{ns}.svc", config.zone)
    if not svc.headless:
        if qtype == T.SRV:
            return _Found(_srv([(p.port, own) for p in svc.ports]),
                          _glue(config, {own: list(svc.cluster_ips)}))
        return _Found(_addresses(svc.cluster_ips, qtype))
    backends = list(cluster.backends(ns, name))
    if not backends:
        return None                  # the spec: a headless Service without ready endpoints is NXDOMAIN
    if qtype == T.SRV:
        return _backend_srv(config, ns, name, [(b, p) for b in backends for p in b.ports])
    return _Found(_addresses((b.address for b in backends), qtype))


def _backend_srv(config: Config, ns: str, name: str, pairs: list[tuple[Backend, object]]) -> _Found:
    targets: dict[dns.name.Name, list[str]] = {}
    records = []
    for backend, port in pairs:
        target = _name(f"{backend.label}.{name}.{ns}.svc", config.zone)
        targets.setdefault(target, []).append(backend.address)
        records.append((port.port, target))
    return _Found(_srv(list(dict.fromkeys(records))), _glue(config, targets))


def _endpoint(cluster: Cluster, ns: str, name: str, label: str, qtype: int) -> _Found | None:
    svc = cluster.services.get((ns, name))
    if svc is None or svc.type == "ExternalName":
        return None
    addresses = [b.address for b in cluster.backends(ns, name) if b.label == label]
    return _Found(_addresses(addresses, qtype)) if addresses else None


def _port_srv(cluster: Cluster, config: Config, ns: str, name: str, port: str, proto: str,
              qtype: int) -> _Found | None:
    svc = cluster.services.get((ns, name))
    if svc is None or svc.type == "ExternalName" or not port or not proto:
        return None
    if not svc.headless:
        own = _name(f"{name}.{ns}.svc", config.zone)
        found = _Found(_srv([(p.port, own) for p in svc.ports if (p.name, p.protocol) == (port, proto)]),
                       _glue(config, {own: list(svc.cluster_ips)}))
    else:
        pairs = [(b, p) for b in cluster.backends(ns, name) for p in b.ports
                 if (p.name, p.protocol) == (port, proto)]
        found = _backend_srv(config, ns, name, pairs)
    if not found.rdatas:
        return None
    return found if qtype == T.SRV else _Found()


# --- names under pod.<zone> ----------------------------------------------------------------------

def pod_address(label: str) -> str | None:
    """The address a pod label spells: 10-244-1-5 is 10.244.1.5, fd00--5 is fd00::5."""
    for text in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
    return None


def _pod(cluster: Cluster, config: Config, ns: str, label: str, qtype: int) -> _Found | None:
    address = pod_address(label)
    if address is None or config.pods == "disabled":
        return None
    if config.pods == "verified" and not cluster.has_pod_address(ns, address):
        return None
    return _Found(_addresses([address], qtype))


# --- the zones -----------------------------------------------------------------------------------

def _cluster_lookup(cluster: Cluster, config: Config, labels: list[str], qtype: int) -> _Found | None:
    n = len(labels)
    if n == 0:
        if qtype == T.SOA:
            return _Found(list(soa(cluster, config, config.zone)))
        if qtype == T.NS:
            return _Found([NS(IN, T.NS, _name("ns.dns", config.zone))])
        return _Found()
    if labels == ["dns-version"]:
        return _Found([TXT(IN, T.TXT, [SCHEMA_VERSION.encode()])] if qtype == T.TXT else [])
    kind, rest = labels[-1], labels[:-1]
    if kind == "svc":
        if n == 1:
            return _Found()
        if n == 2:
            return _Found() if cluster.has_namespace(rest[0]) else None
        if n == 3:
            return _service(cluster, config, rest[1], rest[0], qtype)
        if n == 4:
            return _endpoint(cluster, rest[2], rest[1], rest[0], qtype)
        if n == 5 and rest[0].startswith("_") and rest[1].startswith("_"):
            return _port_srv(cluster, config, rest[3], rest[2], rest[0][1:], rest[1][1:], qtype)
        return None
    if kind == "pod" and config.pods != "disabled":
        if n <= 2:
            return _Found()
        if n == 3:
            return _pod(cluster, config, rest[1], rest[0], qtype)
    return None


def _reverse_lookup(cluster: Cluster, config: Config, qname: dns.name.Name, qtype: int) -> _Found | None:
    try:
        address = str(ipaddress.ip_address(dns.reversename.to_address(qname)))
    except (dns.exception.SyntaxError, ValueError):
        return None
    targets = cluster.ptr_targets(address)
    if not targets:
        return None
    if qtype != T.PTR:
        return _Found()
    return _Found([PTR(IN, T.PTR, _name(t, config.zone)) for t in targets])


def _labels(qname: dns.name.Name, zone: dns.name.Name) -> list[str]:
    return [label.decode("latin-1").lower() for label in qname.relativize(zone).labels]


def _zone_of(config: Config, qname: dns.name.Name) -> dns.name.Name | None:
    for zone in (config.zone, *config.reverse_zones):
        if qname.is_subdomain(zone):
            return zone
    return None


def answer(cluster: Cluster, config: Config, qname: dns.name.Name | str, qtype: int) -> Answer:
    if isinstance(qname, str):
        qname = dns.name.from_text(qname)      # relative text is taken as absolute: "a.b" is "a.b."
    result = Answer()
    seen: set[dns.name.Name] = set()
    owner = qname
    while True:
        zone = _zone_of(config, owner)
        if zone is None:
            if not result.answer:
                return Answer(dns.rcode.REFUSED, authoritative=False)
            return result                      # a CNAME out of the cluster: the client follows it
        if zone == config.zone:
            found = _cluster_lookup(cluster, config, _labels(owner, zone), qtype)
        else:
            found = _reverse_lookup(cluster, config, owner, qtype)
        if found is None:
            result.rcode = dns.rcode.NXDOMAIN
            result.authority.append(soa(cluster, config, zone))
            return result
        if found.cname is not None:
            result.answer.append(_rrset(owner, config.ttl, [CNAME(IN, T.CNAME, found.cname)]))
            seen.add(owner)
            owner = found.cname
            if owner in seen or len(seen) >= MAX_CNAME_CHAIN:
                return result
            continue
        rrset = _rrset(owner, config.ttl, found.rdatas)
        if rrset is None:
            result.authority.append(soa(cluster, config, zone))
        else:
            result.answer.append(rrset)
            result.additional.extend(found.additional)
        return result
