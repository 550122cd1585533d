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

# Table sizes, primes (every skip in 1..M-1 then walks all slots), by endpoint count: at most
# SIZES[i][0] endpoints take SIZES[i][1] slots, at least ~32 per endpoint, so that each holds
# its share within ~3% (M/N slots give or take one). Each slot is one map element per frontend:
# a 3-endpoint Service costs 251 elements, where one fixed size of 4093 cost 4093 whatever the
# count (200 such Services: ~820,000 elements, 3.3 s of CPU to load). The size changes only when
# the count crosses 8, 32, 128 or 512: there the slots are hashed anew and most clients move,
# as they do when IPVS's or Cilium's fixed Maglev table is resized; within a step, adding or
# removing an endpoint moves only about 1/N of them. 251 is IPVS's default mh table size.
SIZES = ((7, 251), (31, 1021), (127, 4093), (511, 16381))
MAX_SIZE = 65521                # beyond 511 endpoints
TABLE_SIZE = 4093               # the size plan_table uses when none is given


def table_size(endpoints: int) -> int:
    """Maglev's table size for a frontend of that many endpoints."""
    for most, size in SIZES:
        if endpoints <= most:
            return size
    return MAX_SIZE


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
