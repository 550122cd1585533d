"""Denied connections as the kernel reports them: the policy table's log rules send the first
bytes of each denied packet (rate limited per policy and direction) to an NFLOG group; this
module binds a netlink socket to that group, parses its messages, and logs each denial with its
source, destination, port, direction and policy, on a thread of its own. No library here speaks
nflog; the framing is proxy/nfnetlink.py's."""
from __future__ import annotations

import errno
import logging
import socket
import struct
import threading
from collections.abc import Callable

from . import nfnetlink as nl
from . import render_policy as rp

log = logging.getLogger("kubeweft.policy")

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE = 1, 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD, NFULA_PREFIX = 9, 10


def open_nflog(group: int) -> socket.socket:
    """A netlink socket bound to nflog `group` in this thread's netns, copying 128 bytes."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.settimeout(2.0)
        for seq, attrs in enumerate((nl.attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND)),
                                     nl.attr(NFULA_CFG_MODE, struct.pack(">IBB", 128, NFULNL_COPY_PACKET, 0))),
                                    start=1):
            sock.send(nl.message((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, nl.NLM_F_REQUEST | nl.NLM_F_ACK,
                                 seq, socket.AF_UNSPEC, group, attrs))
            for mtype, _, _, payload in nl.iter_messages(sock.recv(4096)):
                if mtype == nl.NLMSG_ERROR:
                    err, _ = nl.decode_error(payload)
                    if err:
                        raise OSError(err, f"nflog config: {errno.errorcode.get(err, err)}")
        sock.settimeout(1.0)
        return sock
    except BaseException:
        sock.close()
        raise


def parse_nflog(data: bytes) -> list[tuple[str, bytes]]:
    """Netlink datagram -> [(prefix, packet bytes)] of its nflog packet messages. Pure."""
    out = []
    try:
        for mtype, _, _, payload in nl.iter_messages(data):
            if mtype != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                continue
            prefix, packet = "", b""
            for kind, value in nl.attrs(payload[4:]):          # after the nfgenmsg
                if kind == NFULA_PREFIX:
                    prefix = value.rstrip(b"\0").decode("ascii", "replace")
                elif kind == NFULA_PAYLOAD:
                    packet = value
            out.append((prefix, packet))
    except ValueError:              # a malformed message: keep what came before it
        pass
    return out


_PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}


def parse_packet(pkt: bytes) -> str | None:
    """'tcp 10.244.1.2:40000 -> 10.244.2.3:80' or 'tcp [fd00::2]:40000 -> [fd00::3]:80' from
    an IPv4 or IPv6 packet's first bytes (IPv6: the transport right after the fixed header; a
    packet with extension headers is named by its first next-header value). Pure."""
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        hlen, proto = (pkt[0] & 0x0F) * 4, pkt[9]
        src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
    elif len(pkt) >= 40 and pkt[0] >> 4 == 6:
        hlen, proto = 40, pkt[6]
        src = "[" + socket.inet_ntop(socket.AF_INET6, pkt[8:24]) + "]"
        dst = "[" + socket.inet_ntop(socket.AF_INET6, pkt[24:40]) + "]"
    else:
        return None
    name = _PROTO_NAMES.get(proto, f"proto {proto}")
    if proto in (6, 17, 132) and len(pkt) >= hlen + 4:
        sport, dport = struct.unpack_from(">HH", pkt, hlen)
        return f"{name} {src}:{sport} -> {dst}:{dport}"
    return f"{name} {src.strip('[]')} -> {dst.strip('[]')}"


class DropLog:
    """Reads nflog `group` and logs each packet that one of the policy table's log rules sent
    (its prefix names the direction and the policy; `policy_of` turns the policy id into
    namespace/name). `parse_prefix` reads another table's prefixes into (direction, key), the
    key `policy_of` is given."""

    def __init__(self, group: int, policy_of: Callable[[str], str],
                 parse_prefix: Callable[[str], tuple[str, str] | None] = rp.parse_log_prefix,
                 thread_name: str = "policy nflog"):
        self.group = group
        self.policy_of = policy_of
        self.parse_prefix = parse_prefix
        self.thread_name = thread_name
        self.denials_logged = 0
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DropLog:
        """Bind in the calling thread's netns and read on a thread; without the group (no
        permission, no nfnetlink_log) denials are still counted by the table, only not logged."""
        try:
            self._sock = open_nflog(self.group)
        except OSError as e:
            log.warning("no nflog group %d (%s): denied connections are counted, not logged", self.group, e)
            return self
        self._thread = threading.Thread(target=self._read, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(3)

    def _read(self) -> None:
        sock = self._sock
        while not self._stopping.is_set() and sock is not None:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for prefix, payload in parse_nflog(data):
                self.log_packet(prefix, payload)

    def log_packet(self, prefix: str, payload: bytes) -> bool:
        """Log one packet of the policy table's log rules; False for any other prefix."""
        which = self.parse_prefix(prefix)
        if which is None:
            return False
        direction, pid = which
        pkt = parse_packet(payload)
        self.denials_logged += 1
        log.warning("denied %s by %s: %s", "ingress" if direction == "in" else "egress",
                    self.policy_of(pid), pkt or "(not IP)")
        return True
