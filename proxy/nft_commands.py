"""Typed nftables commands for one table, and their nft text. Pure.

A diff says what to change as these values rather than as text: the real backend
(proxy/nft_transaction.py over proxy/nftables.py) renders the structure (tables, chains, rules,
set and map declarations) to nft text for libnftables and encodes element lists as netlink
messages without nft's parser in between; the Fake (proxy/nft_fake.py) applies them to its
model as they are. Commands name objects relative to their table: a Transaction
(proxy/nft_transaction.py) says which table.

Elements stay in the render's text form ('key' or 'key : value', fields joined by ' . '), a
tuple of them per command: at 30k Services a full sync carries ~180k elements, and an object
per element would cost more than the element itself.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar


def quote(text: str) -> str:
    """An nft comment (at most 128 bytes in the kernel; longer ones are cut, not refused)."""
    return '"' + text.replace('"', "'")[:120] + '"'


def _no_declarations(name: str) -> str | None:
    return None


@dataclass(frozen=True)
class Table:
    """What the nftables layer needs to know of one table to write it.

    declaration: the declaration of a set or map by name ('type ...' or 'typeof ...'), which
    says how its elements are encoded for netlink; None: that set's elements go as nft text.
    load_last: sets whose elements an empty table's first load adds after all others (a load
    cut into several transactions is visible between them)."""
    family: str
    name: str
    declaration: Callable[[str], str | None] = _no_declarations
    load_last: frozenset[str] = frozenset()

    @property
    def ref(self) -> str:
        """'ip kubeweft': how nft commands name the table."""
        return f"{self.family} {self.name}"


def _body(*parts: str) -> str:
    """The braces of an add command ('{ a; b; }'), empty when there is nothing to declare."""
    kept = [p for p in parts if p]
    return f" {{ {'; '.join(kept)}; }}" if kept else ""


@dataclass(frozen=True, slots=True)
class AddTable:
    comment: str = ""

    def text(self, table: str) -> str:
        return f"add table {table}" + _body(f"comment {quote(self.comment)}" if self.comment else "")


@dataclass(frozen=True, slots=True)
class AddSet:
    """decl: 'type ...' with any options ('flags dynamic,timeout; timeout 30s; comment "..."')."""
    name: str
    decl: str
    comment: str = ""

    def text(self, table: str) -> str:
        return f"add set {table} {self.name}" + _body(self.decl, f"comment {quote(self.comment)}" if self.comment else "")


@dataclass(frozen=True, slots=True)
class AddMap:
    """decl: 'type K : V' or 'typeof EXPR : EXPR', with any options."""
    name: str
    decl: str
    comment: str = ""

    def text(self, table: str) -> str:
        return f"add map {table} {self.name}" + _body(self.decl, f"comment {quote(self.comment)}" if self.comment else "")


@dataclass(frozen=True, slots=True)
class AddChain:
    """hook: a base chain's 'type nat hook prerouting priority dstnat'; '' for a regular chain."""
    name: str
    comment: str = ""
    hook: str = ""

    def text(self, table: str) -> str:
        return f"add chain {table} {self.name}" + _body(self.hook, f"comment {quote(self.comment)}" if self.comment else "")


@dataclass(frozen=True, slots=True)
class FlushChain:
    name: str

    def text(self, table: str) -> str:
        return f"flush chain {table} {self.name}"


@dataclass(frozen=True, slots=True)
class AddRule:
    chain: str
    rule: str

    def text(self, table: str) -> str:
        return f"add rule {table} {self.chain} {self.rule}"


@dataclass(frozen=True, slots=True)
class DeleteChain:
    name: str

    def text(self, table: str) -> str:
        return f"delete chain {table} {self.name}"


@dataclass(frozen=True, slots=True)
class DeleteSet:
    name: str

    def text(self, table: str) -> str:
        return f"delete set {table} {self.name}"


@dataclass(frozen=True, slots=True)
class DeleteMap:
    name: str

    def text(self, table: str) -> str:
        return f"delete map {table} {self.name}"


@dataclass(frozen=True, slots=True)
class AddElements:
    """Elements of one set or map: 'key' for a set, 'key : value' for a map."""
    name: str
    elements: tuple[str, ...]
    verb: ClassVar[str] = "add"

    def text(self, table: str) -> str:
        return f"add element {table} {self.name} {{ {', '.join(self.elements)} }}"


@dataclass(frozen=True, slots=True)
class DeleteElements:
    """Elements of one set, or keys of one map, to delete."""
    name: str
    elements: tuple[str, ...]
    verb: ClassVar[str] = "delete"

    def text(self, table: str) -> str:
        return f"delete element {table} {self.name} {{ {', '.join(self.elements)} }}"


ElementCommand = AddElements | DeleteElements
Command = (AddTable | AddSet | AddMap | AddChain | FlushChain | AddRule | DeleteChain | DeleteSet | DeleteMap
           | AddElements | DeleteElements)


def nft_lines(commands: Iterable[Command], table: Table) -> list[str]:
    """The nft text of each command, as `nft -f` reads it."""
    ref = table.ref
    return [c.text(ref) for c in commands]
