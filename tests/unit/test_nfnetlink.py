"""proxy/nfnetlink.py framing, and the nflog parser built on it (proxy/nflog.py)."""
from __future__ import annotations

import socket
import struct

import pytest
from kubeweft.proxy import nfnetlink as nl
from kubeweft.proxy.nflog import (
    NFNL_SUBSYS_ULOG,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    NFULNL_MSG_PACKET,
    parse_nflog,
    parse_packet,
)


def test_attributes_are_padded_and_read_back():
    raw = nl.attr(3, b"abcde") + nl.attr(7 | nl.NLA_F_NESTED, nl.attr(1, b"xy"))
    assert len(raw) == 12 + 12
    assert list(nl.attrs(raw)) == [(3, b"abcde"), (7, nl.attr(1, b"xy"))]
    assert list(nl.attrs(struct.pack("=HH", 2, 1) + b"junk")) == []       # malformed: stop


def test_messages_carry_type_flags_seq_and_a_big_endian_res_id():
    m = nl.message(0x0A0C, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 77, 2, 10, nl.attr(1, b"t\0"))
    [(mtype, flags, seq, payload)] = list(nl.iter_messages(m + m[:8]))   # a torn tail is ignored
    assert (mtype, flags, seq) == (0x0A0C, 5, 77)
    assert payload[:4] == bytes([2, 0, 0, 10])
    with pytest.raises(ValueError):
        list(nl.iter_messages(struct.pack("=IHHII", 8, 0, 0, 0, 0)))


def packet_message(prefix: str, packet: bytes) -> bytes:
    return nl.message((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET, 0, 0, socket.AF_INET, 7,
                      nl.attr(NFULA_PREFIX, prefix.encode() + b"\0") + nl.attr(NFULA_PAYLOAD, packet))


def test_nflog_packets_are_read_with_their_prefix():
    ip = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]) + socket.inet_aton("10.244.1.2") \
        + socket.inet_aton("10.244.2.3") + struct.pack(">HHHH", 40000, 53, 8, 0)
    data = packet_message("kw-ingress ns/deny", ip) + packet_message("kw-egress ns/x", b"")
    got = parse_nflog(data + struct.pack("=IHHII", 4, 0, 0, 0, 0))        # malformed tail: kept what came before
    assert got == [("kw-ingress ns/deny", ip), ("kw-egress ns/x", b"")]
    assert parse_packet(got[0][1]) == "udp 10.244.1.2:40000 -> 10.244.2.3:53"


def test_the_drop_log_names_the_direction_and_the_policy(caplog):
    from kubeweft.proxy import render_policy as rp
    from kubeweft.proxy.nflog import DropLog

    ip = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]) + socket.inet_aton("10.244.1.2") \
        + socket.inet_aton("10.244.0.3") + struct.pack(">HH", 40001, 81)
    drops = DropLog(rp.NFLOG_GROUP, {"p0a1b2c3d4e5": "x/deny-c"}.get)
    assert drops.log_packet(rp.log_prefix("in", "p0a1b2c3d4e5"), ip)
    assert drops.log_packet(rp.log_prefix("eg", "p0a1b2c3d4e5"), b"\x60")
    assert not drops.log_packet("someone else's prefix", ip)
    assert drops.denials_logged == 2
    assert "denied ingress by x/deny-c: tcp 10.244.1.2:40001 -> 10.244.0.3:81" in caplog.text
    assert "denied egress by x/deny-c: (not IP)" in caplog.text


def ipv6_packet(src: str, dst: str, next_header: int, transport: bytes) -> bytes:
    return struct.pack(">IHBB", 6 << 28, len(transport), next_header, 64) \
        + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + transport


def test_ipv6_packets_are_named_with_bracketed_addresses():
    tcp = ipv6_packet("fd00:10:244:1::2", "fd00:10:244::3", 6, struct.pack(">HH", 40002, 80))
    assert parse_packet(tcp) == "tcp [fd00:10:244:1::2]:40002 -> [fd00:10:244::3]:80"
    ping = ipv6_packet("fd00::2", "2001:db8::1", 58, bytes([128, 0, 0, 0]))
    assert parse_packet(ping) == "icmpv6 fd00::2 -> 2001:db8::1"
    assert parse_packet(tcp[:39]) is None                 # shorter than the fixed header
