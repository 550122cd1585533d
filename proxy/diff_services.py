"""Desired vs applied service state -> the nft commands of ONE transaction. Pure.

Only what changed is sent: new and changed elements, removed elements, new and changed
on-demand chains, and chains and dynamic sets nobody references any more. The order inside the
transaction matters to nft (a chain must exist before an element jumps to it, and nothing may
still jump to a chain when it is deleted):

    1. add new dynamic sets and chains, refill new/changed chains
    2. delete removed and changed elements, then add new and changed ones
    3. flush, then delete chains that are gone; then delete dynamic sets that are gone

`parse_elements` turns nft's JSON listing of one of our sets or maps back into the text form
the render uses, so a restarted agent diffs against what the kernel holds without flushing.
"""
from __future__ import annotations

from .render_services import T, Chain, Desired


def _batches(verb: str, kind_name: str, items: list[str], size: int = 4000) -> list[str]:
    return [f"{verb} element {T} {kind_name} {{ {', '.join(items[i:i + size])} }}"
            for i in range(0, len(items), size)]


def diff_state(applied: Desired, want: Desired, *, unknown_chains: bool = False) -> list[str]:
    """Commands turning `applied` into `want`. With unknown_chains (after a restart) every wanted
    chain is (re)written, since only the maps were read back."""
    cmds: list[str] = []
    # 1. dynamic sets and chains that must exist before elements point at them
    for name, decl in want.dynsets.items():
        if name not in applied.dynsets:
            cmds.append(f"add set {T} {name} {{ {decl}; }}")
    for name, chain in want.chains.items():
        old = applied.chains.get(name)
        if old is None:
            cmds.append(f'add chain {T} {name} {{ comment "{chain.comment}"; }}')
        if old != chain or unknown_chains:
            if old is not None or unknown_chains:
                cmds.append(f"flush chain {T} {name}")
            cmds += [f"add rule {T} {name} {r}" for r in chain.rules]
    # 2. elements
    deletes, adds = [], []
    for name in sorted(set(want.sets) | set(applied.sets)):
        old, new = applied.sets.get(name, frozenset()), want.sets.get(name, frozenset())
        deletes += _batches("delete", name, sorted(old - new))
        adds += _batches("add", name, sorted(new - old))
    for name in sorted(set(want.maps) | set(applied.maps)):
        old, new = applied.maps.get(name, {}), want.maps.get(name, {})
        gone = [k for k in old if old[k] != new.get(k)]
        fresh = [f"{k} : {v}" for k, v in new.items() if old.get(k) != v]
        deletes += _batches("delete", name, sorted(gone))
        adds += _batches("add", name, sorted(fresh))
    cmds += deletes + adds
    # 3. what nothing references any more
    gone_chains = [n for n in applied.chains if n not in want.chains]
    cmds += [f"flush chain {T} {n}" for n in gone_chains]
    cmds += [f"delete chain {T} {n}" for n in gone_chains]
    cmds += [f"delete set {T} {n}" for n in applied.dynsets if n not in want.dynsets]
    return cmds


# ---- reading back (after a restart) ----------------------------------------------------------

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


def referenced_chains(maps: dict[str, dict[str, str]]) -> set[str]:
    """Chains that map values jump to (after a restart they exist in the kernel)."""
    return {v.split(" ", 1)[1] for m in maps.values() for v in m.values() if v.startswith(("goto ", "jump "))}


def known_chains(names: set[str]) -> dict[str, Chain]:
    """Placeholders for chains known to exist but with unknown rules (rewritten on next sync)."""
    return {n: Chain("", ("?",)) for n in names}
