"""What a node's service table does with each frontend, from the sets and maps read back out of
the kernel: the `kubeweft services` listing (what `cilium service list` is for Cilium). Pure.

The answer comes from the kernel, not from the agent's memory, so it shows what packets meet:
a frontend (service address . protocol . port, or a nodePort on every node address) and where
it sends new connections: spread over its endpoints, to sticky endpoints (sessionAffinity),
refused (no endpoints), or dropped (a traffic policy Local with no endpoint on this node).
External clients of externalTrafficPolicy Local Services have a view of their own.
"""
from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass

from .render_services import lb_chain_of
from .scheduler import DEFAULT, scheduled_chain

# verdict map -> (who the row is for, the nodePort form)
VIEWS = {"service-ips": ("all", False), "service-ips-external": ("external", False),
         "nodeports": ("all", True), "nodeports-external": ("external", True)}


@dataclass(frozen=True)
class Frontend:
    address: str                 # "10.96.0.10:53/udp"; "*:30080/tcp" for a nodePort
    clients: str                 # "all", or "external" (externalTrafficPolicy Local's own view)
    action: str                  # spread | affinity | reject | drop | unknown
    backends: tuple[str, ...]    # "ip:port" of the endpoints it spreads over
    notes: tuple[str, ...] = ()
    scheduler: str = "-"         # random | rr | sh | maglev (as `ipvsadm -L -n` shows it); "-": none


def _address(key: str, nodeport: bool) -> tuple[str, str]:
    """('10.96.0.10:53/udp', backends-map key prefix '10.96.0.10 . 53') of a verdict map key."""
    parts = key.split(" . ")
    if nodeport:
        proto, port = parts
        return f"*:{port}/{proto}", port
    addr, proto, port = parts
    return f"{_host(addr)}:{port}/{proto}", f"{addr} . {port}"


def _endpoint(slot: str) -> str:
    """'ip . port' of a backends map value as ip:port ([ip]:port for IPv6); '?' as is."""
    ip, sep, port = slot.partition(" . ")
    return f"{_host(ip)}:{port}" if sep else slot


def _host(addr: str) -> str:
    """An address as it stands before :PORT ([ADDR] for IPv6)."""
    return f"[{addr}]" if ":" in addr else addr


def _notes(key: str, nodeport: bool, sets: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    out = []
    if key in sets.get("nodeport-masq" if nodeport else "external-masq", ()):
        out.append("external clients masqueraded")
    if key in sets.get("nodeport-local" if nodeport else "external-local", ()):
        out.append("externalTrafficPolicy Local")
    if not nodeport and key in sets.get("firewall-keys", ()):
        ranges = sorted(e.rsplit(" . ", 1)[1] for e in sets.get("firewall-allow", ())
                        if e.rsplit(" . ", 1)[0] == key)
        out.append("loadBalancerSourceRanges " + ",".join(ranges))
    return tuple(out)


def _backends(slots: list[str], scheduler: str) -> tuple[str, ...]:
    """'ip:port' of each slot; Maglev's thousands of slots as each endpoint with its share."""
    names = [_endpoint(s) for s in slots]
    if scheduler != "maglev":
        return tuple(names)
    return tuple(f"{ep}({n})" for ep, n in sorted(collections.Counter(names).items()))


def describe_frontends(sets: Mapping[str, frozenset[str]], maps: Mapping[str, Mapping[str, str]]) -> list[Frontend]:
    """Every frontend of the table, sorted by address then view."""
    out: list[Frontend] = []
    for vmap, (clients, nodeport) in VIEWS.items():
        for key, verdict in maps.get(vmap, {}).items():
            address, bkey = _address(key, nodeport)
            backends: tuple[str, ...] = ()
            target = verdict.split(" ", 1)[1] if verdict.startswith(("goto ", "jump ")) else ""
            chain = lb_chain_of(target) if target else None
            scheduler = "-"
            if chain is not None:
                action = "spread"
                sched = scheduled_chain(target)
                scheduler = sched[0] if sched else DEFAULT
                bmap = maps.get(chain.map, {})
                n = int(chain.map.rsplit("-", 1)[1])
                backends = _backends([bmap.get(f"{bkey} . {i}", "?") for i in range(n)], scheduler)
            elif target.startswith("aff-"):
                action = "affinity"
                scheduler = DEFAULT
            elif verdict in ("drop", "reject"):
                action = verdict
            else:
                action = "unknown"
            out.append(Frontend(address, clients, action, backends, _notes(key, nodeport, sets), scheduler))
    for name, nodeport in (("no-endpoint-services", False), ("no-endpoint-nodeports", True)):
        for key in sets.get(name, ()):
            out.append(Frontend(_address(key, nodeport)[0], "all", "reject", (),
                                ("no endpoints: connection refused",)))
    return sorted(out, key=lambda f: (f.address.startswith("*"), f.address, f.clients))


def format_frontends(frontends: list[Frontend]) -> list[str]:
    """Aligned columns, as kubectl prints them."""
    rows = [("FRONTEND", "CLIENTS", "SCHEDULER", "ACTION", "BACKENDS", "NOTES")]
    for f in frontends:
        rows.append((f.address, f.clients, f.scheduler, f.action, ",".join(f.backends) or "-", "; ".join(f.notes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["   ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
