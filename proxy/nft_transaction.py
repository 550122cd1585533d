"""A Transaction of typed commands for one table, and how it reaches the kernel.

`apply_transaction` decides how many kernel transactions a Transaction takes, on any backend
with the shape of Nft (proxy/nftables.py: `run` for one libnftables transaction, `elements`
for netlink element transactions) -- the real one or the Fake (proxy/nft_fake.py):

- element changes alone: ONE netlink transaction (nft parses ~10 us per element, the
  netlink codec in proxy/element_codec.py encodes ~3 us);
- structure (a new lb chain and its map, a chain to delete) with at most TEXT_MAX elements:
  ONE libnftables transaction of all of it;
- more elements with structure: three transactions, each leaving a working table: chains
  and maps exist before any element points at them and go only after nothing does; the
  element changes (a key moving to another chain included) land together;
- the first load of an empty table: elements in transactions of LOAD_CHUNK, sent on a
  second thread while this one encodes the next (the kernel's share, ~2 us per element, runs
  without the GIL). Nothing was reachable before, the diff lists backends maps before the
  verdict maps that point at them, and the table's load_last sets go last, so a Service is
  not reachable before its endpoints are in.

Elements of sets the codec cannot write (intervals: loadBalancerSourceRanges) stay text: added
before the others, deleted after them, so a firewall key never lacks its allowed ranges.
"""
from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence

from .element_codec import ElementType, element_type
from .nft_commands import Command, ElementCommand, Table, nft_lines
from .nftables import NftError

TEXT_MAX = 2000          # a transaction with structure and at most this many elements: one nft transaction
LOAD_CHUNK = 16384       # elements per transaction when filling an empty table
SEND_TIMEOUT = 120.0

# (verb 'add'|'delete', set or map name, its element type, element texts): ElementLink's unit
ElementOp = tuple[str, str, ElementType, Sequence[str]]


class Transaction:
    """Commands for one table, applied in one go (apply_transaction). Commands run in the
    order they were added, as nft runs the lines of one `nft -f`."""

    def __init__(self, table: Table, commands: Iterable[Command] = ()):
        self.table = table
        self.commands: list[Command] = list(commands)

    def add(self, *commands: Command) -> Transaction:
        self.commands.extend(commands)
        return self

    def part(self, commands: Iterable[Command]) -> Transaction:
        """Another transaction for the same table."""
        return Transaction(self.table, commands)

    def lines(self) -> list[str]:
        return nft_lines(self.commands, self.table)

    def text(self) -> str:
        """The whole transaction as nft text (what Nft.run sends to libnftables)."""
        return "\n".join(self.lines())

    def __len__(self) -> int:
        return len(self.commands)

    def __iter__(self) -> Iterator[Command]:
        return iter(self.commands)


@functools.lru_cache(maxsize=4096)
def _codec_type(decl: str) -> ElementType | None:
    return element_type(decl)


def element_type_of(table: Table, name: str) -> ElementType | None:
    """The netlink codec's element type of one set or map of the table; None: nft text."""
    decl = table.declaration(name)
    return _codec_type(decl) if decl is not None else None


def split(tx: Transaction) -> tuple[list[Command], list[ElementOp], list[Command]]:
    """(commands before, element changes for netlink, commands after) of a transaction whose
    structure that comes goes first and structure that goes last (as the diffs write them)."""
    pre: list[Command] = []
    ops: list[ElementOp] = []
    post: list[Command] = []
    for c in tx.commands:
        if isinstance(c, ElementCommand):
            et = element_type_of(tx.table, c.name)
            if et is not None:
                ops.append((c.verb, c.name, et, c.elements))
            else:
                (pre if c.verb == "add" else post).append(c)
        else:
            (post if ops else pre).append(c)
    return pre, ops, post


def apply_transaction(nft, tx: Transaction, *, empty: bool = False) -> None:
    """Apply tx in as few kernel transactions as is cheap (the module's docstring says when it
    takes one, three, or a pipelined load). empty: the table holds no elements yet (its first
    load). Raises NftError with the kernel's reason."""
    pre, ops, post = split(tx)
    count = sum(len(items) for *_, items in ops)
    if (pre or post) and count <= TEXT_MAX:
        nft.run(tx)
        return
    if pre:
        nft.run(tx.part(pre))
    if ops:
        table = tx.table
        if empty and count > LOAD_CHUNK:
            send_pipelined(nft.elements, table, chunk_ops(order_for_load(ops, table.load_last), LOAD_CHUNK))
        else:
            nft.elements.run(table.family, table.name, ops)
    if post:
        nft.run(tx.part(post))


def order_for_load(ops: list[ElementOp], last: Iterable[str]) -> list[ElementOp]:
    """The order of an empty table's element transactions: the diff's, with the `last` sets'
    after everything else."""
    last = frozenset(last)
    return sorted(ops, key=lambda op: op[1] in last)


def chunk_ops(ops: list[ElementOp], size: int) -> list[list[ElementOp]]:
    """ops cut into runs of at most `size` elements, in order."""
    chunks: list[list[ElementOp]] = [[]]
    room = size
    for verb, name, et, items in ops:
        i = 0
        while i < len(items):
            if room == 0:
                chunks.append([])
                room = size
            part = items[i:i + room]
            chunks[-1].append((verb, name, et, part))
            room -= len(part)
            i += len(part)
    return [c for c in chunks if c]


def send_pipelined(link, table: Table, chunks: list[list[ElementOp]]) -> None:
    """Encode chunk i+1 here while a sender thread has the kernel apply chunk i; the first
    failure stops the rest and is raised here."""
    jobs: queue.Queue = queue.Queue(maxsize=1)
    failed: list[BaseException] = []

    def sender() -> None:
        while (batch := jobs.get()) is not None:
            if not failed:
                try:
                    link.send(batch)
                except BaseException as e:  # noqa: BLE001 - raised on the caller's thread
                    failed.append(e)
    t = threading.Thread(target=sender, name="nft-load", daemon=True)
    t.start()
    try:
        for ops in chunks:
            if failed:
                break
            jobs.put(link.prepare(table.family, table.name, ops), timeout=SEND_TIMEOUT)
    finally:
        try:
            jobs.put(None, timeout=SEND_TIMEOUT)
        except queue.Full:
            failed.append(NftError("netlink load: the sender took no job in time"))
        t.join(SEND_TIMEOUT)
    if t.is_alive():
        raise NftError(f"netlink load: a transaction unanswered after {SEND_TIMEOUT:.0f} s")
    if failed:
        raise failed[0]
