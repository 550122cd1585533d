"""DNS over UDP and TCP on asyncio: each datagram or length-prefixed TCP message is parsed with
dnspython, answered from the `Cluster` by `records.answer`, rendered and counted.

UDP answers fit the client's size: 512 bytes without EDNS, else the smaller of its advertised
payload and ours (1232, the DNS flag day's size that avoids IP fragmentation). What does not fit
is left out; TC is set when an answer or authority RRset had to go (RFC 2181 9: an additional
section that does not fit is dropped without TC), and the client asks again over TCP. A TCP
connection may carry many queries and is closed after 10 s idle, as CoreDNS's read timeout.

The event loop thread is the only one that reads or writes the Cluster: the watch threads hand
their updates over with `call_soon_threadsafe`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass

from . import records
from .index import Cluster
from .metrics import Metrics

log = logging.getLogger(__name__)

OUR_PAYLOAD = 1232
TCP_IDLE = 10.0
HEADER = struct.Struct("!HH")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def server_label(self) -> str:
        """CoreDNS's `server` label: dns://:53 for the wildcard address."""
        host = "" if self.host in ("0.0.0.0", "::") else self.host
        return f"dns://{f'[{host}]' if ':' in host else host}:{self.port}"


def parse_listen(text: str, default_port: int = 53) -> Listen:
    """ADDR, ADDR:PORT, [V6ADDR]:PORT, :PORT."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return Listen(host, int(rest[1:]) if rest.startswith(":") else default_port)
    if text.count(":") > 1:
        return Listen(text, default_port)
    host, sep, port = text.partition(":")
    return Listen(host or "0.0.0.0", int(port) if sep else default_port)


def _error_reply(wire: bytes, rcode: int) -> bytes | None:
    """A bare reply to a message dnspython cannot parse: its id and opcode, QR and the rcode."""
    if len(wire) < 12:
        return None
    qid, flags = HEADER.unpack_from(wire)
    if flags & dns.flags.QR:
        return None
    return HEADER.pack(qid, dns.flags.QR | (flags & 0x7800) | (flags & dns.flags.RD) | rcode) + bytes(8)


class DnsServer:
    def __init__(self, cluster: Cluster, config: records.Config, listens: list[Listen],
                 metrics: Metrics | None = None, zone_label: str = "."):
        self.cluster = cluster
        self.config = config
        self.listens = listens
        self.metrics = metrics or Metrics()
        self.zone_label = zone_label
        self._transports: list[asyncio.BaseTransport] = []
        self._tcp: list[asyncio.Server] = []

    # --- answering ---------------------------------------------------------------------------
    def reply(self, wire: bytes, proto: str, listen: Listen) -> bytes | None:
        try:
            return self.respond(wire, proto, listen)
        except Exception:      # one bad question must not stop the server
            log.exception("answering a %s query", proto)
            return _error_reply(wire, dns.rcode.SERVFAIL)

    def respond(self, wire: bytes, proto: str, listen: Listen) -> bytes | None:
        start = time.perf_counter()
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _error_reply(wire, dns.rcode.FORMERR)
        if query.flags & dns.flags.QR:
            return None
        response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        qtype, plugin = 0, ""
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        elif query.question[0].rdclass != dns.rdataclass.IN:
            qtype = query.question[0].rdtype
            response.set_rcode(dns.rcode.REFUSED)
        else:
            q = query.question[0]
            qtype = q.rdtype
            ans = records.answer(self.cluster, self.config, q.name, q.rdtype)
            response.set_rcode(ans.rcode)
            if ans.authoritative:
                response.flags |= dns.flags.AA
                plugin = "kubernetes"
            response.answer, response.authority, response.additional = \
                ans.answer, ans.authority, ans.additional
        if proto == "tcp":
            max_size = 65535
        elif query.edns < 0:
            max_size = 512
        else:
            max_size = max(512, min(query.payload, OUR_PAYLOAD))
        out = response.to_wire(max_size=max_size, prefer_truncation=True)
        self.metrics.observe(server=listen.server_label, zone=self.zone_label, proto=proto,
                             family=2 if listen.family == socket.AF_INET6 else 1, qtype=qtype,
                             rcode=response.rcode(), plugin=plugin, seconds=time.perf_counter() - start,
                             request_bytes=len(wire), response_bytes=len(out))
        return out

    # --- sockets -----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for listen in self.listens:
                udp = self._socket(listen, socket.SOCK_DGRAM)
                transport, _ = await loop.create_datagram_endpoint(lambda lis=listen: _Udp(self, lis), sock=udp)
                self._transports.append(transport)
                tcp = self._socket(listen, socket.SOCK_STREAM)
                self._tcp.append(await asyncio.start_server(
                    lambda r, w, lis=listen: self._serve_tcp(r, w, lis), sock=tcp))
        except BaseException:
            await self.close()
            raise
        log.info("serving DNS on %s", ", ".join(f"{lis.host}:{lis.port}" for lis in self.listens))

    @staticmethod
    def _socket(listen: Listen, kind: int) -> socket.socket:
        sock = socket.socket(listen.family, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if listen.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((listen.host, listen.port))
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         listen: Listen) -> None:
        try:
            while True:
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE), "big")
                wire = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
                reply = self.reply(wire, "tcp", listen)
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        for transport in self._transports:
            transport.close()
        for server in self._tcp:
            server.close()
        for server in self._tcp:
            await server.wait_closed()
        self._transports, self._tcp = [], []


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, listen: Listen):
        self.server, self.listen = server, listen
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        reply = self.server.reply(data, "udp", self.listen)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)
