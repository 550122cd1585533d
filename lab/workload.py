"""The program every lab pod runs:
`python -m kubeweft.lab.workload --lab NAME --pod NS/NAME --ports 80/TCP,...`.

Started by the lab kubelet inside the pod's netns. It listens on every declared port, TCP AND
UDP for each (8080 if none), on 0.0.0.0 and on :: (an IPv6-only socket beside the IPv4 one, so
IPv4 clients are seen as IPv4, not as ::ffff: addresses; no IPv6 socket where the netns has no
IPv6), and prints one line "ready" once all are bound. A UDP answer leaves from the address the
datagram was sent to (IP_PKTINFO / IPV6_PKTINFO), so a hostNetwork pod answers on every
address of its node as that address. A client is "IP:PORT", or "[IP]:PORT" for IPv6.

- HTTP over TCP (keep-alive): GET /hostname -> pod name, /clientip -> "IP:PORT" it saw,
  /whoami -> {"pod": "NS/NAME", "client": "IP:PORT"}, /headers and /headers/... -> the same with
  "headers" (the request's, names lower-cased: what a proxy in front set), /ready -> 200 "ok" or 503 (flipped by
  /ready/off and /ready/on), /healthz -> 200, anything else 404.
- A plain TCP line "hostname", "clientip" or "whoami" gets the answer as one line.
- UDP: a datagram "hostname", "clientip" or "whoami" gets the answer back.
- SIGTERM: exit at once, or keep serving --term-delay seconds first (env KUBEWEFT_TERM_DELAY).

Standard library only and one selector loop in one thread: many of these run at once and the
kubelet waits for "ready", so start-up must stay far below 100 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

DEFAULT_PORT = 8080
MAX_REQUEST = 64 * 1024
COMMANDS = ("hostname", "clientip", "whoami")
STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)          # linux/in.h; Python names only the IPv6 ones
IN_PKTINFO = struct.Struct("=i4s4s")                   # ipi_ifindex, ipi_spec_dst, ipi_addr
IN6_PKTINFO = struct.Struct("=16si")                   # ipi6_addr, ipi6_ifindex
CMSG_SPACE = socket.CMSG_SPACE(IN6_PKTINFO.size)


def render_peer(host: str, port: int) -> str:
    """A socket address as a client is reported: "IP:PORT", "[IP]:PORT" for IPv6."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def plan_reply_pktinfo(family: int, ancdata: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    """The ancillary data that makes a reply leave from the address a datagram was sent to,
    from that datagram's ancillary data (empty when it carries no pktinfo)."""
    for level, kind, data in ancdata:
        if family == socket.AF_INET and level == socket.IPPROTO_IP and kind == IP_PKTINFO \
                and len(data) >= IN_PKTINFO.size:
            _, _, dst = IN_PKTINFO.unpack_from(data)
            return [(socket.IPPROTO_IP, IP_PKTINFO, IN_PKTINFO.pack(0, dst, bytes(4)))]
        if family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO \
                and len(data) >= IN6_PKTINFO.size:
            dst, ifindex = IN6_PKTINFO.unpack_from(data)
            # the interface index matters for a link-local destination only; keep it for those
            return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                     IN6_PKTINFO.pack(dst, ifindex if dst[:2] == b"\xfe\x80" else 0))]
    return []


def log(msg: str) -> None:
    print(f"workload: {msg}", file=sys.stderr, flush=True)


def parse_ports(spec: str) -> tuple[list[int], list[str]]:
    """'80/TCP,81/UDP,9/SCTP' -> ([80, 81], skipped entries). Each port serves TCP and UDP."""
    ports: list[int] = []
    skipped: list[str] = []
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        number, _, proto = item.partition("/")
        if proto.upper() == "SCTP":      # no SCTP sockets on this kernel (docs/architecture.md, decision 7)
            skipped.append(item)
            continue
        port = int(number)
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {item}")
        if port not in ports:
            ports.append(port)
    return (ports or ([DEFAULT_PORT] if not skipped else [])), skipped


class Workload:
    def __init__(self, pod: str, ports: list[int]) -> None:
        self.pod = pod                               # NS/NAME
        self.hostname = pod.rpartition("/")[2]
        self.ready = True
        self.sel = selectors.DefaultSelector()
        self.conns: dict[socket.socket, dict] = {}
        self.term_deadline: float | None = None
        for port in ports:
            self._listen(port)

    # --- sockets -------------------------------------------------------------------------
    def _listen(self, port: int) -> None:
        for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            try:
                tcp, udp = self._sockets(family, host, port)
            except OSError:
                if family == socket.AF_INET:
                    raise
                continue                                 # no IPv6 in this netns: IPv4 alone
            self.sel.register(tcp, selectors.EVENT_READ, self._accept)
            self.sel.register(udp, selectors.EVENT_READ, self._datagram)

    @staticmethod
    def _sockets(family: int, host: str, port: int) -> tuple[socket.socket, socket.socket]:
        made = []
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                sock = socket.socket(family, kind)
                made.append(sock)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                elif family == socket.AF_INET:
                    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                sock.bind((host, port))
                if kind == socket.SOCK_STREAM:
                    sock.listen(128)
                sock.setblocking(False)
        except OSError:
            for sock in made:
                sock.close()
            raise
        return made[0], made[1]

    def _accept(self, lsock: socket.socket) -> None:
        try:
            conn, peer = lsock.accept()
        except OSError:
            return
        conn.setblocking(False)
        self.conns[conn] = {"peer": render_peer(peer[0], peer[1]), "in": bytearray(), "out": bytearray(),
                            "close": False}
        self.sel.register(conn, selectors.EVENT_READ, self._stream)

    def _datagram(self, sock: socket.socket) -> None:
        for _ in range(64):                # drain a burst, but let the others run too
            try:
                data, ancdata, _, peer = sock.recvmsg(2048, CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue                   # e.g. an ICMP error queued on the socket
            answer = self.answer(data.decode("utf-8", "replace").strip(), render_peer(peer[0], peer[1]))
            try:
                sock.sendmsg([answer.encode()], plan_reply_pktinfo(sock.family, ancdata), 0, peer)
            except OSError:
                pass

    def _stream(self, conn: socket.socket, mask: int = selectors.EVENT_READ) -> None:
        st = self.conns.get(conn)
        if st is None:
            return
        if mask & selectors.EVENT_READ:
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                return self._drop(conn)
            if data == b"":
                st["close"] = True
            elif data:
                st["in"] += data
                if len(st["in"]) > MAX_REQUEST:
                    return self._drop(conn)
                self._serve(st)
        if st["out"]:
            try:
                sent = conn.send(st["out"])
                del st["out"][:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return self._drop(conn)
        if st["close"] and not st["out"]:
            return self._drop(conn)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if st["out"] else 0)
        self.sel.modify(conn, events, self._stream)

    def _drop(self, conn: socket.socket) -> None:
        self.conns.pop(conn, None)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    # --- protocols -------------------------------------------------------------------------
    def _serve(self, st: dict) -> None:
        """Answer every complete request in the buffer: HTTP requests or bare command lines."""
        buf = st["in"]
        while not st["close"]:
            eol = buf.find(b"\n")
            if eol < 0:
                return
            first = bytes(buf[:eol]).strip()
            parts = first.split()
            if len(parts) == 3 and parts[2].startswith(b"HTTP/"):
                end = buf.find(b"\r\n\r\n")
                sep = 4
                if end < 0:
                    end, sep = buf.find(b"\n\n"), 2
                if end < 0:
                    return                            # headers not complete yet
                head = bytes(buf[:end]).decode("latin-1").split("\n")
                headers = {}
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                body_len = int(headers.get("content-length", "0") or 0)
                if len(buf) < end + sep + body_len:
                    return
                del buf[:end + sep + body_len]
                method, target, version = (p.decode("latin-1") for p in parts)
                conn_hdr = headers.get("connection", "").lower()
                close = conn_hdr == "close" or (version == "HTTP/1.0" and conn_hdr != "keep-alive")
                code, ctype, body = self.route(method, target.split("?", 1)[0], st["peer"], headers)
                st["out"] += self.http_response(code, ctype, body, close, head_only=method == "HEAD")
                st["close"] = close
            else:
                del buf[:eol + 1]
                if first:
                    st["out"] += (self.answer(first.decode("utf-8", "replace"), st["peer"]) + "\n").encode()

    def answer(self, command: str, client: str) -> str:
        """The line protocol shared by UDP and plain TCP."""
        if command == "hostname":
            return self.hostname
        if command == "clientip":
            return client
        if command == "whoami":
            return json.dumps({"pod": self.pod, "client": client})
        return f"error: unknown command {command[:40]!r}; try {', '.join(COMMANDS)}"

    def route(self, method: str, path: str, client: str, headers: dict | None = None) -> tuple[int, str, str]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 404, text, "not found\n"
        if path == "/hostname":
            return 200, text, self.hostname
        if path == "/clientip":
            return 200, text, client
        if path == "/whoami":
            return 200, "application/json", json.dumps({"pod": self.pod, "client": client})
        if path == "/headers" or path.startswith("/headers/"):
            return 200, "application/json", json.dumps({"pod": self.pod, "client": client, "headers": headers or {}})
        if path == "/healthz":
            return 200, text, "ok"
        if path == "/ready":
            return (200, text, "ok") if self.ready else (503, text, "not ready")
        if path in ("/ready/on", "/ready/off"):
            self.ready = path.endswith("/on")
            log(f"readiness set {'on' if self.ready else 'off'}")
            return 200, text, "ok"
        return 404, text, "not found\n"

    @staticmethod
    def http_response(code: int, ctype: str, body: str, close: bool, head_only: bool = False) -> bytes:
        data = body.encode()
        head = (f"HTTP/1.1 {code} {STATUS_TEXT.get(code, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
        return head.encode() + (b"" if head_only else data)

    # --- main loop -------------------------------------------------------------------------
    def handle_signals(self, term_delay: float) -> None:
        """SIGTERM/SIGINT: exit now, or after term_delay seconds of serving. Installed before
        "ready" is printed, so a kubelet that signals right after "ready" gets this behaviour."""
        # A signal writes a byte to this pair, so select() wakes at once (PEP 475 would
        # otherwise resume it with its old timeout).
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)

        def on_term(signum, _frame):
            if term_delay <= 0:
                os._exit(0)
            if self.term_deadline is None:
                log(f"signal {signum}: serving {term_delay:g} s more before exiting")
                self.term_deadline = time.monotonic() + term_delay

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)

    def serve(self) -> int:
        while True:
            timeout = None
            if self.term_deadline is not None:
                timeout = self.term_deadline - time.monotonic()
                if timeout <= 0:
                    log("term delay over: exiting")
                    return 0
            for key, mask in self.sel.select(timeout):
                if key.data is None:
                    try:
                        self.wake_r.recv(512)
                    except OSError:
                        pass
                elif key.data == self._stream:
                    self._stream(key.fileobj, mask)
                else:
                    key.data(key.fileobj)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kubeweft.lab.workload")
    p.add_argument("--lab", default="", help="the lab's name (for logs only)")
    p.add_argument("--pod", required=True, metavar="NS/NAME")
    p.add_argument("--ports", default="", help="80/TCP,81/UDP,...; empty means 8080")
    p.add_argument("--term-delay", type=float,
                   default=float(os.environ.get("KUBEWEFT_TERM_DELAY", "0") or 0),
                   help="seconds to keep serving after SIGTERM")
    args = p.parse_args(argv)
    try:
        ports, skipped = parse_ports(args.ports)
    except ValueError as e:
        log(f"bad --ports {args.ports!r}: {e}")
        return 2
    for item in skipped:
        log(f"skipping {item}: SCTP sockets are not available on this kernel")
    try:
        wl = Workload(args.pod, ports)
    except OSError as e:
        log(f"cannot listen: {e}")
        return 1
    wl.handle_signals(args.term_delay)
    log(f"{args.lab} {args.pod}: listening on {', '.join(map(str, ports)) or 'nothing'} (TCP and UDP)")
    try:
        print("ready", flush=True)
    except OSError:
        pass                              # the kubelet stopped reading: keep serving anyway
    return wl.serve()


if __name__ == "__main__":
    sys.exit(main())
