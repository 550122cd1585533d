"""Maglev's lookup table (Eisenbud et al., NSDI 2016, section 3.4): M slots, each naming one
endpoint, computed from the endpoint set alone. Pure.

Every endpoint walks its own permutation of the slots (offset and skip from two hashes of its
name) and, in turn, takes the next slot of its permutation still free, until every slot is
taken: each endpoint ends with M/N slots give or take one. Since the table depends on the set
only, every node computes the same one, and a client hashed to a slot reaches the same endpoint
through any node. When one of N endpoints is added it takes ~1/(N+1) of the slots, nearly all
from the others' share; when one is removed its slots go to the others and only a small
fraction of the rest moves (Maglev trades exact minimal disruption for an even spread;
tests/unit/test_maglev.py measures both).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

# A prime, so that every skip in 1..M-1 walks all slots. 4093 slots hold 136 or 137 per endpoint
# at 30 endpoints (an even spread within 1%); each slot is one map element per frontend, so a
# maglev Service costs 4093 elements whatever its endpoint count (200 such Services: ~820,000
# elements, 3.3 s of CPU to load; random costs one element per endpoint).
TABLE_SIZE = 4093


def _hashes(name: str, size: int) -> tuple[int, int]:
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    offset = int.from_bytes(digest[:8], "big") % size
    skip = int.from_bytes(digest[8:], "big") % (size - 1) + 1
    return offset, skip


def plan_table(endpoints: Sequence[str], size: int = TABLE_SIZE) -> list[str]:
    """The table: slot -> endpoint name, for endpoints in any order (sorted here, so the order
    the caller found them in does not matter). Empty for no endpoints."""
    names = sorted(set(endpoints))
    if not names:
        return []
    perms = [_hashes(n, size) for n in names]
    nexts = [0] * len(names)
    table: list[int] = [-1] * size
    filled = 0
    while True:
        for i, (offset, skip) in enumerate(perms):
            j = nexts[i]
            slot = (offset + j * skip) % size
            while table[slot] >= 0:
                j += 1
                slot = (offset + j * skip) % size
            table[slot] = i
            nexts[i] = j + 1
            filled += 1
            if filled == size:
                return [names[i] for i in table]
