"""Desired vs applied service state -> the typed commands (proxy/nft_commands.py) of ONE
transaction. Pure.

Only what changed is sent: new and changed elements, removed elements, new and changed
on-demand chains, and chains and dynamic sets nobody references any more. The order inside the
transaction matters to nft (a chain must exist before an element jumps to it, and nothing may
still jump to a chain when it is deleted):

    1. add new dynamic sets and chains, refill new/changed chains
    2. delete removed and changed elements, then add new and changed ones
    3. flush, then delete chains that are gone; then delete dynamic sets that are gone

How those commands reach the kernel (one transaction or three, text or netlink):
proxy/nft_transaction.py. What a restarted agent diffs against: proxy/table_readback.py.
"""
from __future__ import annotations

from .nft_commands import (
    AddChain,
    AddElements,
    AddMap,
    AddRule,
    AddSet,
    Command,
    DeleteChain,
    DeleteElements,
    DeleteMap,
    DeleteSet,
    FlushChain,
)
from .render_services import (
    MAPS,
    SETS,
    VMAP_OF,
    Aggregate,
    Desired,
    Touched,
    lb_chain_of,
    map_family,
)

BATCH = 4000         # elements per command: what one line of nft text carries at most


def _batches(verb: str, name: str, items: list[str], size: int = BATCH) -> list[Command]:
    kind = AddElements if verb == "add" else DeleteElements
    return [kind(name, tuple(items[i:i + size])) for i in range(0, len(items), size)]


def empty_applied() -> Desired:
    return Desired(sets={n: frozenset() for n in SETS}, maps={n: {} for n in MAPS})


def _objects(applied: Desired, want: Aggregate, chains: set[str], dynsets: set[str],
             unknown_chains: bool) -> tuple[list[Command], list[Command]]:
    """(commands before the elements, commands after them) for chains, their maps and dynamic sets."""
    pre: list[Command] = []
    for name in sorted(dynsets):
        decl = want.dynset(name)
        if decl is not None and name not in applied.dynsets:
            pre.append(AddSet(name, decl))
    gone_chains: list[str] = []
    rules: list[Command] = []
    for name in sorted(chains):
        chain, old = want.chain(name), applied.chains.get(name)
        if chain is None:
            if old is not None:
                gone_chains.append(name)
            continue
        # lb chains are never rewritten (their rule depends on protocol and N only, and nft 1.0.6
        # cannot re-add it once its map exists); other chains are, when unknown after a restart
        unknown = unknown_chains and not chain.map
        if old is None:       # every chain declared before any rule jumps to one
            if chain.map:
                pre.append(AddMap(chain.map, chain.map_decl))
            pre.append(AddChain(name, chain.comment))
        if old != chain or unknown:
            if old is not None or unknown:
                rules.append(FlushChain(name))
            rules += [AddRule(name, r) for r in chain.rules]
    pre += rules
    post: list[Command] = [FlushChain(n) for n in gone_chains]
    post += [DeleteChain(n) for n in gone_chains]
    post += [DeleteMap(applied.chains[n].map) for n in gone_chains if applied.chains[n].map]
    post += [DeleteSet(n) for n in sorted(dynsets) if want.dynset(n) is None and n in applied.dynsets]
    return pre, post


SORT_MAX = 4000      # longer element lists keep their order: sorting 180k strings costs ~70 ms


def _elements(dels: dict[str, list[str]], adds: dict[str, list[str]]) -> list[Command]:
    """Deletes first (a changed map value is a delete and an add); by name, so that backends
    maps come before the verdict maps that point at them; elements sorted for stable output
    unless there are many."""
    cmds = []
    for verb, lists in (("delete", dels), ("add", adds)):
        for name in sorted(lists):
            items = lists[name]
            if items:
                cmds += _batches(verb, name, sorted(items) if len(items) <= SORT_MAX else items)
    return cmds


def diff_touched(applied: Desired, want: Aggregate, touched: Touched, *,
                 unknown_chains: bool = False) -> list[Command]:
    """Commands turning the touched part of `applied` (the mirror of the kernel) into `want`.
    With unknown_chains (right after a restart) every wanted chain but the lb ones is flushed and
    rewritten, since only the sets and maps were read back."""
    pre, post = _objects(applied, want, touched.chains, touched.dynsets, unknown_chains)
    dels: dict[str, list[str]] = {}
    adds: dict[str, list[str]] = {}
    for name, e in touched.elements:
        have, need = e in applied.sets.get(name, ()), want.has(name, e)
        if have and not need:
            dels.setdefault(name, []).append(e)
        elif need and not have:
            adds.setdefault(name, []).append(e)
    for name, k in touched.keys:
        old, new = applied.maps.get(name, {}).get(k), want.value(name, k)
        if old == new:
            continue
        if old is not None:
            dels.setdefault(name, []).append(k)
        if new is not None:
            adds.setdefault(name, []).append(f"{k} : {new}")
    return pre + _elements(dels, adds) + post


def diff_full(applied: Desired, want: Aggregate, *,
              unknown_chains: bool = False) -> tuple[list[Command], Desired]:
    """Commands turning all of `applied` into `want`, with set operations (a full sync at 30k
    Services compares ~200k elements), and the mirror once they landed."""
    desired = want.materialize()
    pre, post = _objects(applied, want, set(want.chain_refs) | set(applied.chains),
                         set(want.dynset_refs) | set(applied.dynsets), unknown_chains)
    dels, adds = {}, {}
    for name in set(desired.sets) | set(applied.sets):
        old, new = applied.sets.get(name, frozenset()), desired.sets.get(name, frozenset())
        dels[name], adds[name] = list(old - new), list(new - old)
    for name in set(desired.maps) | set(applied.maps):
        old, new = applied.maps.get(name, {}), desired.maps.get(name, {})
        get_new, get_old = new.get, old.get        # lookups: cheaper than sets of (key, value)
        dels[name] = [k for k, v in old.items() if get_new(k) != v]
        adds[name] = [f"{k} : {v}" for k, v in new.items() if get_old(k) != v]
    return pre + _elements(dels, adds) + post, desired     # materialize made it: ours to keep


def commit_touched(applied: Desired, want: Aggregate, touched: Touched) -> None:
    """Bring the mirror `applied` up to date once the transaction of diff_touched landed. It is
    updated in place: copying 100k elements per sync would cost more than the sync."""
    for name, e in touched.elements:
        elems = applied.sets.get(name)
        if not isinstance(elems, set):
            elems = applied.sets[name] = set(elems or ())
        (elems.add if want.has(name, e) else elems.discard)(e)
    for name, k in touched.keys:
        v = want.value(name, k)
        m = applied.maps.setdefault(name, {})
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    for n in touched.chains:
        c = want.chain(n)
        if c is None:
            applied.chains.pop(n, None)
        else:
            applied.chains[n] = c
    for n in touched.dynsets:
        d = want.dynset(n)
        if d is None:
            applied.dynsets.pop(n, None)
        else:
            applied.dynsets[n] = d
    applied.health = want.health()


def touched_udp(applied: Desired) -> Touched:
    """The UDP keys the mirror holds (what plan_udp_cleanup needs after a full sync): every key of
    the backends-udp-N maps, and the UDP service keys that go to a sessionAffinity chain."""
    keys = {(n, k) for n, m in applied.maps.items() if "-udp-" in n for k in m}
    for vmap in _FAMILY_OF_VMAP:
        keys.update((vmap, k) for k, v in applied.maps.get(vmap, {}).items()
                    if v.startswith(_GOTO_AFF) and _udp_key(vmap, k))
    return Touched(keys=keys)


def touched_all(applied: Desired, want: Aggregate) -> Touched:
    """Everything either side holds: a full sync."""
    t = want.everything()
    t.elements |= {(n, e) for n, v in applied.sets.items() for e in v}
    t.keys |= {(n, k) for n, v in applied.maps.items() for k in v}
    t.chains |= set(applied.chains)
    t.dynsets |= set(applied.dynsets)
    return t


def plan_udp_cleanup(applied: Desired, want: Aggregate, touched: Touched) -> set[tuple[str | None, int, str]]:
    """(service address or None for a nodePort, port, endpoint ip) of UDP endpoints that leave a
    service port with this change: their conntrack entries must go (kube-proxy's stale UDP flows).
    Endpoints show in two places: the backends-udp-N maps (one key per service key and index),
    and, for sessionAffinity ClientIP, the aff-<sid> chain a service key goes to (its endpoints
    are the aff-<sid>-<eid> chains it names). Only touched keys are looked at."""
    gone = set()
    now_of: dict[tuple[str, str, str], set[str]] = {}
    for name, k in touched.keys:
        if name in _FAMILY_OF_VMAP:
            _plan_affinity(applied, want, name, k, gone)
            continue
        fam = map_family(name)
        if fam is None or fam[1] != "udp":
            continue
        old = applied.maps.get(name, {}).get(k)
        if old is None:
            continue
        family = fam[0]
        parts = k.split(" . ")
        if family.startswith("np"):
            addr, port, vkey = None, parts[0], f"udp . {parts[0]}"
        else:
            addr, port, vkey = parts[0], parts[1], f"{parts[0]} . udp . {parts[1]}"
        now_key = (VMAP_OF[family], vkey, " . ".join(parts[:-1]))
        now = now_of.get(now_key)
        if now is None:          # once per service key: a Maglev table has thousands of slots
            now = now_of[now_key] = _values_now(want, *now_key)
        if old not in now:
            gone.add((addr, int(port), old.split(" . ")[0]))
    return gone


_FAMILY_OF_VMAP = {vmap: family for family, vmap in VMAP_OF.items()}
_GOTO_AFF = "goto aff-"


def _udp_key(vmap: str, key: str) -> bool:
    """Whether a service-ips* key (addr . proto . port) or nodeports* key (proto . port) is UDP."""
    return key.startswith("udp . ") if _FAMILY_OF_VMAP[vmap].startswith("np") else " . udp . " in key


def _plan_affinity(applied: Desired, want: Aggregate, vmap: str, key: str,
                   gone: set[tuple[str | None, int, str]]) -> None:
    """The endpoints of the affinity chain a UDP service key went to that it no longer reaches
    (the chain lost them, or the key now goes elsewhere or nowhere). After a restart the old
    chains are the kernel's (table_readback.recovered_objects: the endpoints from the endpoint
    chains' comments); a chain whose endpoints are unknown plans nothing."""
    old = applied.maps.get(vmap, {}).get(key)
    if old is None or not old.startswith(_GOTO_AFF) or not _udp_key(vmap, key):
        return
    before = _affinity_endpoints(applied.chains.get, old[5:])
    if not before:
        return
    parts = key.split(" . ")
    if _FAMILY_OF_VMAP[vmap].startswith("np"):
        addr, port, bkey = None, parts[1], parts[1]
    else:
        addr, port, bkey = parts[0], parts[2], f"{parts[0]} . {parts[2]}"
    now = _values_now(want, vmap, key, bkey)
    for ep in before - now:
        gone.add((addr, int(port), ep.split(" . ")[0]))


def _affinity_endpoints(chain_of, name: str) -> set[str]:
    """'ip . port' of every endpoint of the affinity chain `name`: its rules 'ip saddr @E goto E'
    name the endpoint chains E, whose last rule is '... dnat ip to IP:PORT'."""
    chain = chain_of(name)
    out: set[str] = set()
    if chain is None:
        return out
    for rule in chain.rules:
        if not rule.startswith(("ip saddr @", "ip6 saddr @")):
            continue
        ep_chain = chain_of(rule.rpartition(" goto ")[2])
        if ep_chain is None or not ep_chain.rules:
            continue
        dest = ep_chain.rules[-1].rpartition(" to ")[2]       # 'dnat ip to A:P' or 'dnat ip6 to [A]:P'
        ip, _, port = dest.rpartition(":")
        if ip:
            out.add(f"{ip.strip('[]')} . {port}")
    return out


def _values_now(want: Aggregate, vmap: str, vkey: str, bkey: str) -> set[str]:
    """The endpoints ('ip . port') the service key now spreads over, whatever its endpoint count
    or scheduler, through an lb chain's backends map or a sessionAffinity chain."""
    target = want.value(vmap, vkey) or ""
    if not target.startswith("goto "):
        return set()
    name = target[5:]
    chain = lb_chain_of(name)
    if chain is None:
        return _affinity_endpoints(want.chain, name) if name.startswith("aff-") else set()
    out, i = set(), 0
    while (v := want.value(chain.map, f"{bkey} . {i}")) is not None:
        out.add(v)
        i += 1
    return out
