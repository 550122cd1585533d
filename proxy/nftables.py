"""The agent's nftables backend: one libnftables context, whole transactions, targeted reads.

Nft.run sends nft commands (text, or a Transaction of typed commands rendered to text), many
per call, as ONE transaction: either all of it lands or none does. Text rather than JSON
because nft 1.0.6's JSON input drops table and chain comments, and every chain, set and map of
ours carries one (docs/architecture.md, Style). Nft.elements (ElementLink) writes and reads set
and map elements over netlink. Reads name one map, set or chain: the whole ruleset is never
listed (docs/architecture.md, decisions).

How a Transaction is cut into these transactions: proxy/nft_transaction.py. The same interface
over an in-memory model, for tests: proxy/nft_fake.py.

A libnftables context talks to the netns of the thread that created it, so an Nft made on a
thread inside the node's netns stays bound there even if used from other threads.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import nftables
from kubeweft.cni import netns as _netns

from . import element_codec as codec
from . import nfnetlink as nl

SOL_NETLINK = 270
NETLINK_EXT_ACK, NETLINK_CAP_ACK = 11, 10
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
IO_TIMEOUT = 30.0


class NftError(RuntimeError):
    def __init__(self, message: str, commands: str = ""):
        super().__init__(message)
        self.commands = commands


class Nft:
    def __init__(self, netns: str | None = None):
        self._lock = threading.Lock()
        if netns is None:
            self._ctx = self._new_context()
            self.elements = ElementLink()
        else:
            self._ctx, self.elements = _netns.call_in(
                netns, lambda: (self._new_context(), ElementLink()), thread_name=f"nft-{netns}")
        self.transactions = 0

    @staticmethod
    def _new_context() -> nftables.Nftables:
        ctx = nftables.Nftables()
        ctx.set_json_output(True)
        ctx.set_handle_output(True)
        # Opening the netlink socket now binds the context to this thread's netns. A table that
        # does not exist: "list tables" fills nft's whole cache, every element of every set
        # (at 30k Services ~7 s and ~240 MB).
        ctx.cmd("list table ip kubeweft-socket-probe")
        return ctx

    def run(self, commands) -> None:
        """Apply commands as one transaction: nft text, lines of it, or a Transaction
        (proxy/nft_transaction.py; its nft text). Raises NftError (with nft's message) on
        failure, in which case nothing of the batch was applied."""
        if isinstance(commands, str):
            text = commands
        elif hasattr(commands, "text"):
            text = commands.text()
        else:
            text = "\n".join(commands)
        if not text.strip():
            return
        with self._lock:
            rc, _, err = self._ctx.cmd(text)
            self.transactions += 1
        if rc != 0:
            raise NftError(f"nft transaction failed: {err.strip()[:2000]}", text)

    def list(self, what: str) -> list[dict]:
        """The JSON 'nftables' array for one object, e.g. 'map ip kubeweft backends';
        [] when it does not exist."""
        with self._lock:
            rc, out, err = self._ctx.cmd(f"list {what}")
        if rc != 0:
            if "No such file or directory" in err or "does not exist" in err:
                return []
            raise NftError(f"nft list {what}: {err.strip()[:500]}")
        return json.loads(out).get("nftables", []) if out else []

    def exists(self, what: str) -> bool:
        return bool(self.list(what))


@dataclass(frozen=True)
class PreparedBatch:
    """One encoded element transaction (ElementLink.prepare) waiting to be sent."""
    data: bytes
    seq: int              # the batch begin's; its messages follow, then the batch end
    messages: int
    elements: int


def prepare_batch(family: str, table: str, ops: list[tuple[str, str, codec.ElementType, Sequence[str]]],
                  take_seqs) -> PreparedBatch | None:
    """ops (verb 'add'|'delete', set or map name, its element type, element texts) encoded as
    ONE netlink transaction, numbered from take_seqs(n), the first of n free sequence numbers;
    None when there is nothing to send."""
    msgs: list[bytes] = []
    count = 0
    for verb, name, etype, items in ops:
        if items:
            msgs += codec.encode_elements(family, table, name, etype, items, delete=verb == "delete")
            count += len(items)
    if not msgs:
        return None
    # numbered now, when their count is known: seq, then seq+1 .. seq+n, then seq+n+1
    seq = take_seqs(len(msgs) + 2)
    return PreparedBatch(codec.encode_batch(msgs, seq), seq, len(msgs), count)


class ElementLink:
    """Set and map elements over a NETLINK_NETFILTER socket (proxy/element_codec.py says why).
    Like a libnftables context, the socket belongs to the netns of the thread that made it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()          # the socket: one request and its answers at a time
        self._seq_lock = threading.Lock()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._sock.settimeout(IO_TIMEOUT)
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):     # short error answers, with the reason
            try:
                self._sock.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:
                pass
        self._next_seq = int(time.time()) & 0xFFFFFF or 1
        self._sndbuf = self._rcvbuf = 0
        self.transactions = 0

    def close(self) -> None:
        self._sock.close()

    def _take_seqs(self, n: int) -> int:
        """The first of n consecutive sequence numbers nobody else on this socket uses."""
        with self._seq_lock:
            seq = self._next_seq
            if seq + n > 0x7FFFFFFF:
                seq = 1
            self._next_seq = seq + n
            return seq

    def run(self, family: str, table: str,
            ops: list[tuple[str, str, codec.ElementType, Sequence[str]]]) -> int:
        """ONE transaction of element changes: ops are (verb 'add'|'delete', set or map name,
        its element type, element texts), applied in order; all land or none does. Raises
        NftError with the kernel's reason. Returns the number of elements sent."""
        return self.send(self.prepare(family, table, ops))

    def prepare(self, family: str, table: str,
                ops: list[tuple[str, str, codec.ElementType, Sequence[str]]]) -> PreparedBatch | None:
        """The transaction of `run`, encoded and numbered but not sent (None: nothing to send).
        Encoding is Python work; `send` is mostly the kernel's, without the GIL: a caller may
        encode the next batch while another thread sends this one."""
        return prepare_batch(family, table, ops, self._take_seqs)

    def send(self, batch: PreparedBatch | None) -> int:
        """Send one prepared transaction and wait for the kernel's answer to each message."""
        if batch is None:
            return 0
        with self._lock:
            try:
                if len(batch.data) > self._sndbuf:
                    # the whole batch is one datagram (as libnftables does: mnl_set_sndbuffer);
                    # every message's ack arrives at once after it (nft: ~1 kB per command)
                    self._sndbuf = max(len(batch.data) * 2, 1 << 20)
                    self._sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, self._sndbuf)
                if batch.messages * 1024 > self._rcvbuf:
                    self._rcvbuf = max(batch.messages * 1024, 1 << 20)
                    self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._rcvbuf)
                self._sock.send(batch.data)
                self.transactions += 1
                self._wait_acks(batch.seq, {batch.seq + 1 + i for i in range(batch.messages)})
            except OSError as e:        # a timeout, ENOBUFS: whether it landed is unknown
                raise NftError(f"netlink element transaction: {e}") from e
        return batch.elements

    def _wait_acks(self, begin: int, pending: set[int]) -> None:
        """Every message asked for an ack; an error answering the batch begin (the kernel could
        not even queue its errors) ends the batch."""
        errors: list[str] = []
        while pending:
            data = self._sock.recv(1 << 20)
            for mtype, _, _, payload in nl.iter_messages(data):
                if mtype != nl.NLMSG_ERROR:
                    continue
                errno, seq = nl.decode_error(payload)
                if seq == begin and errno:
                    raise NftError(f"netlink element transaction failed: {os.strerror(errno)}")
                if seq in pending:
                    pending.discard(seq)
                    if errno:
                        errors.append(f"{os.strerror(errno)} (message {seq})")
        if errors:
            raise NftError("netlink element transaction failed: " + "; ".join(errors[:5]))

    def dump(self, family: str, table: str, name: str, etype: codec.ElementType) -> list[tuple[str, str | None]] | None:
        """Every element of one set or map as (key, value or None); None when it does not exist."""
        dec = codec.ElementDecoder(etype)
        got = self._dump_objects(lambda seq: codec.encode_dump_request(family, table, name, seq),
                                 codec.NFT_MSG_NEWSETELEM, dec.decode, f"elements of {name}")
        return None if got is None else [e for part in got for e in part]

    # ---- the table's structure (a restarted agent's read-back; never nft's whole cache) --------
    def chains(self, family: str, table: str) -> list[tuple[str, str]] | None:
        """(name, comment) of every chain of one table; None when the table does not exist."""
        got = self._dump_objects(lambda seq: codec.encode_chain_dump_request(family, table, seq), codec.NFT_MSG_NEWCHAIN,
                                 lambda p: codec.decode_chain(p, table), f"chains of {table}")
        if got is None or got or self._table_exists(family, table):
            return got
        return None

    def sets(self, family: str, table: str) -> list[tuple[str, int]] | None:
        """(name, NFT_SET_* flags) of every named set and map of one table; None when the table
        does not exist."""
        return self._dump_objects(lambda seq: codec.encode_set_dump_request(family, table, seq), codec.NFT_MSG_NEWSET,
                                  lambda p: codec.decode_set(p, table), f"sets of {table}")

    def counters(self, family: str, table: str) -> list[tuple[str, int, int]] | None:
        """(name, packets, bytes) of every named counter of one table; None when the table does
        not exist."""
        got = self._dump_objects(lambda seq: codec.encode_counter_dump_request(family, table, seq),
                                 codec.NFT_MSG_NEWOBJ, lambda p: codec.decode_counter(p, table),
                                 f"counters of {table}")
        if got is None or got or self._table_exists(family, table):
            return got
        return None

    def _table_exists(self, family: str, table: str) -> bool:
        return self._dump_objects(lambda seq: codec.encode_table_request(family, table, seq), None, lambda p: None,
                                  f"table {table}", done_on_ack=True) is not None

    def _dump_objects(self, request, answer: int | None, decode, what: str, *,
                      done_on_ack: bool = False, attempts: int = 3) -> list | None:
        """Send request(seq) (one netlink message), collect decode(payload) of the answers of type
        `answer` until NLMSG_DONE (or the ack, with done_on_ack). None on ENOENT; a dump the kernel
        marks interrupted (the ruleset changed meanwhile) is asked again. Bounded: IO_TIMEOUT for
        the whole of it."""
        mtype_wanted = None if answer is None else (codec.NFNL_SUBSYS_NFTABLES << 8) | answer
        deadline = time.monotonic() + IO_TIMEOUT
        for _ in range(attempts):
            out: list = []
            interrupted = False
            with self._lock:
                seq = self._take_seqs(1)
                self._sock.send(request(seq))
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise NftError(f"netlink read of {what}: no answer in {IO_TIMEOUT:.0f} s")
                    self._sock.settimeout(left)
                    try:
                        data = self._sock.recv(1 << 20)
                    except TimeoutError:
                        raise NftError(f"netlink read of {what}: no answer in {IO_TIMEOUT:.0f} s") from None
                    except OSError as e:
                        raise NftError(f"netlink read of {what}: {e}") from e
                    finally:
                        self._sock.settimeout(IO_TIMEOUT)
                    finished = False
                    for mtype, flags, mseq, payload in nl.iter_messages(data):
                        if mseq != seq:
                            continue
                        if flags & codec.NLM_F_DUMP_INTR:
                            interrupted = True
                        if mtype == nl.NLMSG_DONE:
                            finished = True
                        elif mtype == nl.NLMSG_ERROR:
                            errno, _ = nl.decode_error(payload)
                            if errno == 2:          # ENOENT: no such table
                                return None
                            if errno:
                                raise NftError(f"netlink read of {what}: {os.strerror(errno)}")
                            finished = finished or done_on_ack
                        elif mtype == mtype_wanted:
                            item = decode(payload)
                            if item is not None:
                                out.append(item)
                    if finished:
                        break
            if not interrupted:
                return out
        raise NftError(f"netlink read of {what}: interrupted {attempts} times (the ruleset kept changing)")
