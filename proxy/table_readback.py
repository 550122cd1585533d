"""What a restarted agent reads back of its service table (`table ip kubeweft`), and what it
makes of it.

The ruleset is never listed, nor nft's cache filled (at 30k Services "list tables" alone costs
~7 s and ~240 MB): the agent reads over netlink the names and comments of its chains and the
names and flags of its sets and maps (ElementLink.chains/.sets), then the elements of the fixed
sets and maps and of the backends map of every lb chain (ElementLink.dump; interval sets, which
the codec does not read, through one `nft list set`). recovered_objects makes of the listing
the on-demand chains and dynamic sets the next full sync diffs against, never flushing
anything that is right. Works on Nft and on the Fake (proxy/nft_fake.py) alike.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from .element_codec import NFT_SET_EVAL, NFT_SET_MAP
from .nft_commands import AddChain, Command, Table
from .nft_transaction import element_type_of
from .render_services import (
    MAPS,
    SERVICE_TABLE,
    SERVICE_TABLES,
    SETS,
    Chain,
    Desired,
    NodeContext,
    family_chain,
    render_base,
)


def read_table(nft, ctx: NodeContext) -> Desired:
    """What the kernel holds of our table: every on-demand chain and dynamic set (so the next
    full sync deletes those nobody wants), and the elements of the fixed sets and maps and of
    the backends map of every lb chain (none of them when the table does not exist)."""
    table = SERVICE_TABLES[ctx.family]
    listed_chains = nft.elements.chains(table.family, table.name) or []
    listed_sets = nft.elements.sets(table.family, table.name) or []
    chains, dynsets = recovered_objects(listed_chains, listed_sets, fixed_chains(render_base(ctx)), table.family)
    sets, maps = read_elements(nft, chains.values(), table)
    return Desired(sets=sets, maps=maps, chains=chains, dynsets=dynsets)


def read_set(nft, name: str, table: Table = SERVICE_TABLE) -> frozenset[str]:
    """The elements of one of our sets ({} when it does not exist): over netlink when the codec
    reads its type (no nft cache fill), else through nft."""
    et = element_type_of(table, name)
    if et is not None:
        got = nft.elements.dump(table.family, table.name, name, et)
        return frozenset(k for k, _ in got or ())
    kind, elems = parse_elements(nft.list(f"set {table.ref} {name}"))
    return elems if kind == "set" else frozenset()


def read_map(nft, name: str, table: Table = SERVICE_TABLE) -> dict[str, str]:
    et = element_type_of(table, name)
    if et is not None:
        return {k: v for k, v in nft.elements.dump(table.family, table.name, name, et) or () if v is not None}
    kind, elems = parse_elements(nft.list(f"map {table.ref} {name}"))
    return elems if kind == "map" else {}


def read_elements(nft, chains: Iterable[Chain], table: Table = SERVICE_TABLE
                  ) -> tuple[dict[str, frozenset[str]], dict[str, dict[str, str]]]:
    """(sets, maps) of the table in the kernel: the fixed sets and maps, and the backends map of
    each of `chains` that has one."""
    sets = {name: read_set(nft, name, table) for name in SETS}
    maps = {name: read_map(nft, name, table) for name in MAPS}
    for chain in chains:
        if chain.map:
            maps[chain.map] = read_map(nft, chain.map, table)
    return sets, maps


# ---- what the listing means (pure) ---------------------------------------------------------------

def _text(value) -> str:
    if isinstance(value, dict):
        if "concat" in value:
            return " . ".join(_text(v) for v in value["concat"])
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "range" in value:
            lo, hi = value["range"]
            return f"{_text(lo)}-{_text(hi)}"
        if "elem" in value:
            return _text(value["elem"]["val"])
        for verdict in ("goto", "jump"):
            if verdict in value:
                return f"{verdict} {value[verdict]['target']}"
        if len(value) == 1:            # {"drop": null}, {"accept": null}
            return next(iter(value))
    return str(value)


def parse_elements(listing: list[dict]) -> tuple[str, frozenset[str] | dict[str, str]]:
    """('set'|'map', elements) of `nft -j list set|map` output for one of our sets or maps."""
    for item in listing:
        for kind in ("set", "map"):
            if kind in item:
                elems = item[kind].get("elem") or []
                if kind == "set":
                    return kind, frozenset(_text(e) for e in elems)
                return kind, {_text(k): _text(v) for k, v in elems}
    return "set", frozenset()


def fixed_chains(base: list[Command]) -> set[str]:
    """The names of the fixed chains among render_base's commands."""
    return {c.name for c in base if isinstance(c, AddChain)}


# 'endpoint 10.244.1.5:8080 of ...' or 'endpoint [fd00:10:244:1::5]:8080 of ...'
_ENDPOINT_COMMENT = re.compile(r"endpoint (\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\]):(\d+) of ")
_UNKNOWN = "?"          # a rule the agent did not read back: never equal to a rendered one


def recovered_objects(chains: Iterable[tuple[str, str]], sets: Iterable[tuple[str, int]],
                      fixed: set[str], ip: str = "ip") -> tuple[dict[str, Chain], dict[str, str]]:
    """(on-demand chains, dynamic sets) of the table as a restarted agent knows them from a
    listing of its chains (name, comment) and sets (name, NFT_SET_* flags), read over netlink
    (ElementLink.chains/.sets): EVERY chain but the fixed ones, so that the next full sync
    deletes what nobody wants any more (a leak otherwise) and plans for what went away.

    - lb-family chains exactly (their rule depends on protocol and N only), with their backends
      map when the table holds it (made and deleted with the chain, in one transaction each);
    - an affinity chain aff-<sid> as a placeholder whose rules name its endpoint chains (the
      listed aff-<sid>-<eid>), and each endpoint chain as a placeholder whose last rule names the
      endpoint its comment gives ('endpoint IP:PORT of ...'): what diff_services.
      _affinity_endpoints reads to plan the UDP conntrack cleanup of endpoints that left while
      the agent was down;
    - any other chain as a placeholder with unknown rules (rewritten when wanted, else deleted);
    - dynamic sets (flags dynamic, not maps, not fixed) by name, their declaration unknown: one
      still wanted is left alone, one not wanted is deleted.
    Not recovered: an lb chain listed without its map, or a backends map without its chain;
    the agent never leaves either (both are made in one transaction and deleted in one)."""
    listed = {name: comment for name, comment in chains if name not in fixed}
    set_names = {name for name, _ in sets}
    endpoints_of: dict[str, list[str]] = {}
    for name in listed:
        parts = name.split("-")
        if parts[0] == "aff" and len(parts) == 3:
            endpoints_of.setdefault(f"aff-{parts[1]}", []).append(name)
    out: dict[str, Chain] = {}
    for name, comment in listed.items():
        lb = family_chain(name, ip)
        if lb is not None:
            if lb.map in set_names:
                out[name] = lb
            # else: an lb chain without its map was never made by us (one transaction makes both)
            continue
        parts = name.split("-")
        if parts[0] == "aff" and len(parts) == 2:
            eps = sorted(endpoints_of.get(name, ()))
            out[name] = Chain(comment, (*(f"{ip} saddr @{e} goto {e}" for e in eps), _UNKNOWN))
        elif parts[0] == "aff" and len(parts) == 3 and (m := _ENDPOINT_COMMENT.match(comment)):
            out[name] = Chain(comment, (_UNKNOWN, f"{_UNKNOWN} dnat {ip} to {m[1]}:{m[2]}"))
        else:
            out[name] = Chain(comment, (_UNKNOWN,))
    dynsets = {name: _UNKNOWN for name, flags in sets
               if flags & NFT_SET_EVAL and not flags & NFT_SET_MAP and name not in SETS and name not in MAPS}
    return out, dynsets
