"""nfnetlink framing shared by the agent's netlink speakers (set elements, table listings,
nflog): message and attribute building and parsing. Pure: bytes in, bytes out."""
from __future__ import annotations

import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000

HDR = struct.Struct("=IHHII")         # nlmsghdr: len, type, flags, seq, pid
NFGEN = struct.Struct("!BBH")         # nfgenmsg: family, version, res_id (big endian)
NLA = struct.Struct("=HH")            # nlattr: len, type
_ERR = struct.Struct("=i")


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    n = 4 + len(payload)
    return NLA.pack(n, kind) + payload + b"\0" * (-n % 4)


def message(mtype: int, flags: int, seq: int, family: int, res_id: int, attrs: bytes) -> bytes:
    """One nfnetlink message: nlmsghdr, nfgenmsg (res_id: a subsystem or an nflog group), attrs."""
    return HDR.pack(20 + len(attrs), mtype, flags, seq, 0) + NFGEN.pack(family, 0, res_id) + attrs


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload after the nlmsghdr) of each netlink message in a datagram."""
    i = 0
    while i + 16 <= len(data):
        n, mtype, flags, seq, _ = HDR.unpack_from(data, i)
        if n < 16:
            raise ValueError(f"netlink message of length {n}")
        yield mtype, flags, seq, data[i + 16:i + n]
        i += (n + 3) & ~3


def decode_error(payload: bytes) -> tuple[int, int]:
    """(errno, seq of the message it answers) of an NLMSG_ERROR (errno 0: an ack)."""
    err = _ERR.unpack_from(payload)[0]
    seq = HDR.unpack_from(payload, 4)[3] if len(payload) >= 20 else 0
    return -err, seq


def attrs(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(type without its flag bits, value) of each attribute in buf; stops at a malformed one."""
    i = 0
    while i + 4 <= len(buf):
        n, kind = NLA.unpack_from(buf, i)
        if n < 4:
            break
        yield kind & 0x3FFF, buf[i + 4:i + n]
        i += (n + 3) & ~3
