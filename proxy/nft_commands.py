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

from .nft_text import quote


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


def _comment(text: str) -> str:
    return f"comment {quote(text)}" if text else ""


def _body(*parts: str) -> str:
    """The braces of an add command ('{ a; b; }'), empty when there is nothing to declare."""
    kept = [p for p in parts if p]
    return f" {{ {'; '.join(kept)}; }}" if kept else ""


@dataclass(frozen=True, slots=True)
class AddTable:
    comment: str = ""

    def text(self, table: str) -> str:
        return f"add table {table}" + _body(_comment(self.comment))


@dataclass(frozen=True, slots=True)
class _Declaration:
    """'add set|map': decl is 'type ...' (a map: 'type K : V' or 'typeof EXPR : EXPR') with any
    options ('flags dynamic,timeout; timeout 30s; comment "..."')."""
    name: str
    decl: str
    comment: str = ""
    kind: ClassVar[str] = ""

    def text(self, table: str) -> str:
        return f"add {self.kind} {table} {self.name}" + _body(self.decl, _comment(self.comment))


class AddSet(_Declaration):
    """Declare a named set."""
    __slots__ = ()
    kind = "set"


class AddMap(_Declaration):
    """Declare a named map (a verdict map too)."""
    __slots__ = ()
    kind = "map"


@dataclass(frozen=True, slots=True)
class AddChain:
    """hook: a base chain's 'type nat hook prerouting priority dstnat'; '' for a regular chain."""
    name: str
    comment: str = ""
    hook: str = ""

    def text(self, table: str) -> str:
        return f"add chain {table} {self.name}" + _body(self.hook, _comment(self.comment))


@dataclass(frozen=True, slots=True)
class AddRule:
    chain: str
    rule: str

    def text(self, table: str) -> str:
        return f"add rule {table} {self.chain} {self.rule}"


@dataclass(frozen=True, slots=True)
class _Named:
    """'<verb> <kind> <table> <name>': flush or delete one object."""
    name: str
    verb: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    def text(self, table: str) -> str:
        return f"{self.verb} {self.kind} {table} {self.name}"


class FlushChain(_Named):
    """Remove every rule of one chain."""
    __slots__ = ()
    verb, kind = "flush", "chain"


class DeleteChain(_Named):
    """Delete one chain (the kernel refuses while anything jumps to it)."""
    __slots__ = ()
    verb, kind = "delete", "chain"


class DeleteSet(_Named):
    """Delete one set (the kernel refuses while a rule names it)."""
    __slots__ = ()
    verb, kind = "delete", "set"


class DeleteMap(_Named):
    """Delete one map (the kernel refuses while a rule names it)."""
    __slots__ = ()
    verb, kind = "delete", "map"


@dataclass(frozen=True, slots=True)
class ElementCommand:
    """Elements of one set or map: 'key' for a set, 'key : value' for a map (to delete from a
    map, the key alone)."""
    name: str
    elements: tuple[str, ...]
    verb: ClassVar[str] = ""

    def text(self, table: str) -> str:
        return f"{self.verb} element {table} {self.name} {{ {', '.join(self.elements)} }}"


class AddElements(ElementCommand):
    """Add elements (a map key that holds another value is refused)."""
    __slots__ = ()
    verb = "add"


class DeleteElements(ElementCommand):
    """Delete elements (one that is not there is refused)."""
    __slots__ = ()
    verb = "delete"


Command = (AddTable | AddSet | AddMap | AddChain | FlushChain | AddRule | DeleteChain | DeleteSet | DeleteMap
           | AddElements | DeleteElements)


def nft_lines(commands: Iterable[Command], table: Table) -> list[str]:
    """The nft text of each command, as `nft -f` reads it."""
    ref = table.ref
    return [c.text(ref) for c in commands]
