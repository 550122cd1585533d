"""An in-memory nftables with the interface of Nft (proxy/nftables.py), for unit and property
tests: Transactions (proxy/nft_transaction.py) go through the same apply_transaction as on the
kernel, and land in a model of tables, chains, sets and maps.

Each call of `run` or `elements.send` is one transaction: it lands whole or not at all, and is
refused with NftError (the kernel's reason) where the kernel refuses it:
- a command on a table, chain, set or map that does not exist (ENOENT);
- a rule that jumps to a missing chain or names a missing set, a map element whose verdict
  jumps to a missing chain (ENOENT);
- adding a map key that holds another value (EEXIST), deleting an element that is not there
  (ENOENT), an element that does not fit the set's type (EINVAL);
- deleting a chain that a rule of another chain or a map element points at, or a set or map
  that a rule names (EBUSY; a chain's own rules go with it);
- declaring an existing set or map again with another declaration (EEXIST).
Element changes sent through `elements` are encoded by the real codec (proxy/element_codec.py)
and decoded here with the set's declared type, as the kernel reads them. Reads (`elements.
chains`, `.sets`, `.dump`, `list`) answer in the kernel's shapes, so the read-back of a
restarted agent (proxy/table_readback.py) runs on the Fake too. `history` keeps every
transaction that landed: ("nft", commands) or ("netlink", [(verb, set, elements)]).
"""
from __future__ import annotations

import errno
import functools
import os
import re
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import element_codec as codec
from . import nfnetlink as nl
from .nft_commands import (
    AddChain,
    AddMap,
    AddRule,
    AddSet,
    AddTable,
    Command,
    DeleteChain,
    DeleteMap,
    DeleteSet,
    ElementCommand,
    FlushChain,
)
from .nftables import NftError, PreparedBatch, prepare_batch

_JUMPS = re.compile(r"\b(?:goto|jump) ([\w-]+)")
_SET_REFS = re.compile(r"@([\w-]+)")
_FAMILY_NAMES = {number: name for name, number in codec.NFPROTO.items()}


def _fail(code: int, what: str) -> NftError:
    return NftError(f"fake nft transaction failed: {os.strerror(code)}: {what}")


@functools.lru_cache(maxsize=256)
def _encoder(etype: codec.ElementType) -> codec.ElementEncoder:
    return codec.ElementEncoder(etype)


def _check_element(etype: codec.ElementType, text: str, delete: bool, name: str) -> None:
    """EINVAL unless text is an element of that type (a key alone to delete from a map): as
    many fields as the type has, each one the codec can encode."""
    key, _, value = text.partition(" : ")
    fields = len(key.split(" . "))
    if delete or etype.data is None:
        ok = fields == len(etype.key) and (not value or (delete and etype.data is not None))
    elif etype.data == ("verdict",):
        verb, _, target = value.partition(" ")
        ok = (fields == len(etype.key) and verb in codec.VERDICT_CODES
              and bool(target) == (verb in ("goto", "jump")))
    else:
        ok = fields == len(etype.key) and len(value.split(" . ")) == len(etype.data)
    try:
        if ok:
            _encoder(etype).encode(text, key_only=delete)
    except (ValueError, KeyError, OSError, struct.error):
        ok = False
    if not ok:
        raise _fail(errno.EINVAL, f"{text!r} is not an element of {name}")


@dataclass
class FakeTable:
    """One table of the model. Sets and maps share one namespace, as in the kernel."""
    comment: str = ""
    chains: dict[str, list[str]] = field(default_factory=dict)        # name -> rules
    chain_comments: dict[str, str] = field(default_factory=dict)
    hooks: dict[str, str] = field(default_factory=dict)                # base chains' hooks
    sets: dict[str, set[str]] = field(default_factory=dict)
    maps: dict[str, dict[str, str]] = field(default_factory=dict)
    decls: dict[str, str] = field(default_factory=dict)                # set or map -> declaration

    def copy(self) -> FakeTable:
        return FakeTable(self.comment, {n: list(r) for n, r in self.chains.items()},
                         dict(self.chain_comments),
                         dict(self.hooks), {n: set(e) for n, e in self.sets.items()},
                         {n: dict(m) for n, m in self.maps.items()}, dict(self.decls))

    def state(self) -> tuple[dict[str, frozenset[str]], dict[str, dict[str, str]],
                             dict[str, tuple[str, ...]]]:
        """(non-empty sets, non-empty maps, every chain with its rules): what two tables compare by."""
        return ({n: frozenset(v) for n, v in self.sets.items() if v},
                {n: dict(v) for n, v in self.maps.items() if v},
                {n: tuple(v) for n, v in self.chains.items()})

    def flags(self, name: str) -> int:
        """The NFT_SET_* flags the kernel reports for one set or map."""
        decl = self.decls[name]
        out = codec.NFT_SET_MAP if name in self.maps else 0
        options = [o.strip() for o in decl.split(";")[1:]]
        for o in options:
            if o.startswith("flags "):
                words = o[len("flags "):].replace(",", " ").split()
                out |= codec.NFT_SET_EVAL if "dynamic" in words else 0
                out |= codec.NFT_SET_INTERVAL if "interval" in words else 0
                out |= codec.NFT_SET_TIMEOUT if "timeout" in words else 0
            elif o.startswith("timeout "):
                out |= codec.NFT_SET_TIMEOUT
        return out

    # ---- references --------------------------------------------------------------------------
    def _chain_refs(self) -> set[str]:
        out = {m.group(1) for rules in self.chains.values() for r in rules for m in _JUMPS.finditer(r)}
        for m in self.maps.values():
            out.update(v.split(" ", 1)[1] for v in m.values() if v.startswith(("goto ", "jump ")))
        return out

    def _set_refs(self) -> set[str]:
        return {m.group(1) for rules in self.chains.values() for r in rules for m in _SET_REFS.finditer(r)}

    # ---- commands ----------------------------------------------------------------------------
    def apply(self, cmd: Command) -> None:
        if isinstance(cmd, ElementCommand):
            self.elements(cmd.verb, cmd.name, cmd.elements, validate=True)
        elif isinstance(cmd, (AddSet, AddMap)):
            self._declare(cmd.name, cmd.decl, isinstance(cmd, AddMap))
        elif isinstance(cmd, AddChain):
            if cmd.name not in self.chains:
                self.chains[cmd.name] = []
                self.chain_comments[cmd.name] = cmd.comment.replace('"', "'")[:120]
                if cmd.hook:
                    self.hooks[cmd.name] = cmd.hook
        elif isinstance(cmd, FlushChain):
            self._chain(cmd.name)[:] = []
        elif isinstance(cmd, AddRule):
            rules = self._chain(cmd.chain)
            for m in _JUMPS.finditer(cmd.rule):
                if m.group(1) not in self.chains:
                    raise _fail(errno.ENOENT, f"rule in {cmd.chain} jumps to missing chain {m.group(1)}")
            for m in _SET_REFS.finditer(cmd.rule):
                if m.group(1) not in self.decls:
                    raise _fail(errno.ENOENT, f"rule in {cmd.chain} names missing set {m.group(1)}")
            rules.append(cmd.rule)
        elif isinstance(cmd, DeleteChain):
            rules = self._chain(cmd.name)
            del self.chains[cmd.name]           # its rules go with it, and what they point at is free
            if cmd.name in self._chain_refs():
                self.chains[cmd.name] = rules
                raise _fail(errno.EBUSY, f"delete of chain {cmd.name}, which is jumped to")
            self.chain_comments.pop(cmd.name, None)
            self.hooks.pop(cmd.name, None)
        elif isinstance(cmd, (DeleteSet, DeleteMap)):       # the kernel does not tell the two apart
            if cmd.name not in self.decls:
                raise _fail(errno.ENOENT, f"delete of missing set or map {cmd.name}")
            if cmd.name in self._set_refs():
                raise _fail(errno.EBUSY, f"delete of {cmd.name}, which a rule names")
            self.sets.pop(cmd.name, None)
            self.maps.pop(cmd.name, None)
            del self.decls[cmd.name]
        elif isinstance(cmd, AddTable):
            pass                                # the table exists (Fake.run made it)
        else:
            raise TypeError(f"not an nft command: {cmd!r}")

    def _chain(self, name: str) -> list[str]:
        rules = self.chains.get(name)
        if rules is None:
            raise _fail(errno.ENOENT, f"no chain {name}")
        return rules

    def _declare(self, name: str, decl: str, is_map: bool) -> None:
        old = self.decls.get(name)
        if old is not None:
            if old != decl or (name in self.maps) != is_map:
                raise _fail(errno.EEXIST, f"{name} exists with another declaration")
            return
        self.decls[name] = decl
        if is_map:
            self.maps[name] = {}
        else:
            self.sets[name] = set()

    def elements(self, verb: str, name: str, items: Sequence[str], *, validate: bool) -> None:
        """Add or delete elements of one set or map. validate: check each against the set's
        type with the netlink codec, as nft's parser would (elements sent over netlink were
        decoded with it already)."""
        decl = self.decls.get(name)
        if decl is None:
            raise _fail(errno.ENOENT, f"no set or map {name}")
        if validate and (etype := codec.element_type(decl)) is not None:
            for e in items:
                _check_element(etype, e, verb == "delete", name)
        if name in self.sets:
            s = self.sets[name]
            if verb == "add":
                s.update(items)
                return
            for e in items:
                if e not in s:
                    raise _fail(errno.ENOENT, f"delete of missing element {e} of {name}")
                s.discard(e)
            return
        m = self.maps[name]
        for e in items:
            k, _, v = e.partition(" : ")
            if verb == "delete":
                if k not in m:
                    raise _fail(errno.ENOENT, f"delete of missing key {k} of {name}")
                del m[k]
                continue
            if not v:
                raise _fail(errno.EINVAL, f"map element without a value: {e} of {name}")
            if m.get(k, v) != v:
                raise _fail(errno.EEXIST, f"{name}: {k} holds {m[k]}, not {v}")
            if v.startswith(("goto ", "jump ")) and v.split(" ", 1)[1] not in self.chains:
                raise _fail(errno.ENOENT, f"{name}: {k} jumps to missing chain {v.split(' ', 1)[1]}")
            m[k] = v


class FakeNft:
    """The model behind the Nft interface: run(Transaction), elements, list. Thread-safe (the
    first load sends element transactions from a second thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tables: dict[tuple[str, str], FakeTable] = {}
        self.history: list[tuple[str, list]] = []
        self.transactions = 0
        self.elements = FakeElementLink(self)

    def table(self, family: str, name: str) -> FakeTable | None:
        return self.tables.get((family, name))

    def run(self, tx) -> None:
        """One transaction of typed commands (a Transaction of proxy/nft_transaction.py)."""
        commands = list(tx.commands)
        if not commands:
            return
        key = (tx.table.family, tx.table.name)
        with self.lock:
            table = self.tables.get(key)
            work = table.copy() if table is not None else None
            for cmd in commands:
                if isinstance(cmd, AddTable):
                    if work is None:
                        work = FakeTable(cmd.comment)
                    continue
                if work is None:
                    raise _fail(errno.ENOENT, f"no table {tx.table.ref}")
                work.apply(cmd)
            self.tables[key] = work
            self.transactions += 1
            self.history.append(("nft", commands))

    def list(self, what: str) -> list[dict]:
        """nft's JSON listing of one table, set or map ('map ip kubeweft service-ips'); [] when
        it does not exist. Elements are listed in the render's text form."""
        kind, family, table_name, *rest = what.split()
        with self.lock:
            table = self.tables.get((family, table_name))
            if table is None:
                return []
            meta = {"metainfo": {"json_schema_version": 1}}
            if kind == "table" and not rest:
                return [meta, {"table": {"family": family, "name": table_name}}]
            if kind in ("set", "map") and len(rest) == 1:
                name = rest[0]
                if kind == "set" and name in table.sets:
                    elem: list = sorted(table.sets[name])
                elif kind == "map" and name in table.maps:
                    elem = [[k, v] for k, v in sorted(table.maps[name].items())]
                else:
                    return []
                body = {"family": family, "name": name, "table": table_name}
                return [meta, {kind: {**body, "elem": elem} if elem else body}]
        raise NftError(f"fake nft lists tables, sets and maps only, not {what!r}")

    def exists(self, what: str) -> bool:
        return bool(self.list(what))


class FakeElementLink:
    """The netlink element path (ElementLink) of FakeNft."""

    def __init__(self, fake: FakeNft) -> None:
        self._fake = fake
        self._seq_lock = threading.Lock()
        self._next_seq = 1
        self.transactions = 0

    def close(self) -> None:
        pass

    def _take_seqs(self, n: int) -> int:
        with self._seq_lock:
            seq, self._next_seq = self._next_seq, self._next_seq + n
            return seq

    def prepare(self, family: str, table: str, ops) -> PreparedBatch | None:
        return prepare_batch(family, table, ops, self._take_seqs)

    def run(self, family: str, table: str, ops) -> int:
        return self.send(self.prepare(family, table, ops))

    def send(self, batch: PreparedBatch | None) -> int:
        """Decode the batch's messages with each set's declared type and apply them as one
        transaction."""
        if batch is None:
            return 0
        fake = self._fake
        with fake.lock:
            work: dict[tuple[str, str], FakeTable] = {}
            applied: list[tuple[str, str, tuple[str, ...]]] = []
            for mtype, _, _, payload in nl.iter_messages(batch.data):
                if mtype >> 8 != codec.NFNL_SUBSYS_NFTABLES:
                    continue                        # the batch begin and end
                msg = mtype & 0xFF
                delete = msg == codec.NFT_MSG_DELSETELEM
                family = _FAMILY_NAMES[payload[0]]
                attrs = dict(nl.attrs(payload[4:]))
                table_name = attrs[codec.NFTA_SET_ELEM_LIST_TABLE].rstrip(b"\0").decode()
                name = attrs[codec.NFTA_SET_ELEM_LIST_SET].rstrip(b"\0").decode()
                key = (family, table_name)
                if key not in work:
                    if key not in fake.tables:
                        raise _fail(errno.ENOENT, f"no table {family} {table_name}")
                    work[key] = fake.tables[key].copy()
                table = work[key]
                decl = table.decls.get(name)
                etype = codec.element_type(decl) if decl is not None else None
                if etype is None:
                    raise _fail(errno.ENOENT if decl is None else errno.EINVAL,
                                f"elements of {name} over netlink")
                try:
                    got = codec.ElementDecoder(etype).decode(payload)
                except (ValueError, KeyError, OSError, struct.error) as err:
                    raise _fail(errno.EINVAL, f"elements of {name}: {err}") from None
                items = tuple(k if v is None or delete else f"{k} : {v}" for k, v in got)
                table.elements("delete" if delete else "add", name, items, validate=False)
                applied.append(("delete" if delete else "add", name, items))
            fake.tables.update(work)
            self.transactions += 1
            fake.history.append(("netlink", applied))
        return batch.elements

    # ---- reads -----------------------------------------------------------------------------
    def dump(self, family: str, table: str, name: str, etype) -> list[tuple[str, str | None]] | None:
        with self._fake.lock:
            t = self._fake.tables.get((family, table))
            if t is None or name not in t.decls:
                return None
            if name in t.sets:
                return [(e, None) for e in t.sets[name]]
            return list(t.maps[name].items())

    def chains(self, family: str, table: str) -> list[tuple[str, str]] | None:
        with self._fake.lock:
            t = self._fake.tables.get((family, table))
            return None if t is None else [(n, t.chain_comments.get(n, "")) for n in t.chains]

    def sets(self, family: str, table: str) -> list[tuple[str, int]] | None:
        with self._fake.lock:
            t = self._fake.tables.get((family, table))
            return None if t is None else [(n, t.flags(n)) for n in t.decls]
