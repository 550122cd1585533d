"""The CNI executable (`kubeweft-cni`, installed as "kubeweft"): a thin shim over gRPC.

It checks the environment and the configuration itself (so errors carry the spec's codes even
when the agent is down), answers VERSION itself and forwards ADD, DEL, CHECK, STATUS and GC to
the node agent's gRPC service (proto/kubeweft.proto) on its unix socket. It imports only the
standard library: the unary gRPC call is made by `call_unary` below, since `import grpc` and the
protobuf stubs cost 100-150 ms here. pyroute2 costs 120-150 ms more (docs/architecture.md,
decision 1), so the datapath is imported only on the one path that needs it, DEL with the agent
down. stdout carries the result or the error JSON and nothing else; logs go to stderr, or to the
configuration's logFile.
"""
from __future__ import annotations

import json
import os
import sys
import time

from . import protowire, spec
from .errors import PLUGIN_NOT_AVAILABLE, TRY_AGAIN_LATER, CniError

DEADLINES = {"ADD": 20.0, "DEL": 10.0, "CHECK": 10.0, "STATUS": 10.0, "GC": 10.0}
AGENT_STATE = "agent.json"     # written by the agent into its data dir: podCIDRs, bridge (for DEL)

_log_file: str = ""


def log(msg: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} kubeweft-cni[{os.getpid()}] {msg}\n"
    try:
        if _log_file:
            with open(_log_file, "a") as f:
                f.write(line)
        else:
            sys.stderr.write(line)
    except OSError:
        pass


def main() -> int:
    stdin = b"" if sys.stdin is None or sys.stdin.closed else sys.stdin.buffer.read()
    version = spec.peek_version(stdin) or spec.LATEST
    if version not in spec.SUPPORTED_VERSIONS:
        version = spec.LATEST
    try:
        if os.environ.get("CNI_COMMAND") == "VERSION":
            _emit(spec.render_version_info(spec.peek_version(stdin)))
            return 0
        inv = spec.parse_env(os.environ)
        conf = spec.parse_config(stdin, inv.command)
        global _log_file
        _log_file = conf.log_file
        result = forward(inv, conf, stdin)
        if result:
            sys.stdout.buffer.write(result)
            sys.stdout.flush()
        return 0
    except CniError as e:
        log(f"{os.environ.get('CNI_COMMAND', '?')} {os.environ.get('CNI_CONTAINERID', '')}: "
            f"error {e.code}: {e}")
        _emit(e.to_dict(version))
        return 1
    except Exception as e:  # noqa: BLE001 - never a traceback on stdout: the runtime parses it
        log(f"internal error: {e!r}")
        _emit(CniError(100, "internal error", repr(e)).to_dict(version))
        return 1


def _emit(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc))
    sys.stdout.flush()


def forward(inv: spec.Invocation, conf: spec.NetConf, stdin: bytes) -> bytes:
    """Send the call to the agent; return the result bytes (empty for all but ADD)."""
    method = METHODS[inv.command]
    fields = (inv.command, inv.container_id, inv.netns, inv.ifname, inv.raw_args, ":".join(inv.path), stdin)
    deadline = DEADLINES[inv.command]
    try:
        message = encode_request(*fields)
        code, msg, details, result = decode_response(
            call_unary(conf.socket, f"/kubeweft.v1.Cni/{method}", message, deadline))
    except AgentUnreachable as e:
        return agent_down(inv, conf, str(e))
    if code is not None:
        raise CniError(code, msg, details)
    return result


# --- a unary gRPC call with the standard library only ------------------------------------------
# `import grpc` alone costs ~90 ms here, most of a pod's ADD budget (docs/architecture.md, decision 1). A
# unary call over h2c on a unix socket needs little: the connection preface, one HEADERS frame
# (HPACK literals, no Huffman, no dynamic table), DATA frames within the peer's flow-control
# windows (configs past 64 KiB wait for WINDOW_UPDATEs; the standalone zipapp has no grpc
# library to hand them to); and on the way back only the DATA frames of stream 1. The response headers and trailers are skipped, not decoded: the agent
# always answers with a CniResponse (errors travel inside it), so "no message" means a failure
# of the transport or the agent, whatever grpc-status says.

METHODS = {"ADD": "Add", "DEL": "Del", "CHECK": "Check", "STATUS": "Status", "GC": "GC"}
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
_END_STREAM, _ACK, _PADDED = 0x1, 0x1, 0x8
_SETTINGS_INITIAL_WINDOW_SIZE = 0x4
_MAX_FRAME = 16384
_DEFAULT_WINDOW = 65535
# The windows this client grants the agent for its answer: it sends no WINDOW_UPDATE for what it
# reads, so with the default 64 KiB an answer past that stalled until the deadline (an ADD result
# that carries a large prevResult). 16 MiB holds any answer: the agent refuses configs past 4 MiB.
_RECV_WINDOW = 1 << 24


class AgentUnreachable(Exception):
    """No answer from the agent: socket missing or refused, deadline, or a broken exchange."""


def encode_request(command: str, container_id: str, netns: str, ifname: str, args: str, path: str,
                   config: bytes) -> bytes:
    """kubeweft.v1.CniRequest in protobuf wire format (fields 1-7, all length-delimited)."""
    out = bytearray()
    for number, value in enumerate((command, container_id, netns, ifname, args, path, config), 1):
        data = value.encode() if isinstance(value, str) else bytes(value)
        if data:
            out += protowire.encode_bytes_field(number, data)
    return bytes(out)


def decode_response(buf: bytes) -> tuple[int | None, str, str, bytes]:
    """kubeweft.v1.CniResponse -> (error code or None, msg, details, result)."""
    result, error = b"", None
    for number, _, value in protowire.fields(buf):
        if number == 1:
            result = value
        elif number == 2:
            error = {n: v for n, _, v in protowire.fields(value)}
    if error is None:
        return None, "", "", result
    return (int(error.get(1, 0)), bytes(error.get(2, b"")).decode(errors="replace"),
            bytes(error.get(3, b"")).decode(errors="replace"), result)


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out, value = bytearray((first | limit,)), value - limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes((value,)))


def _hpack_str(s: str) -> bytes:
    data = s.encode()
    return _hpack_int(len(data), 7) + data


def _request_headers(path: str, timeout: float) -> bytes:
    """HPACK: :method POST and :scheme http from the static table, the rest as literals
    without indexing (name from the static table where it is there)."""
    return (b"\x83\x86"
            + _hpack_int(4, 4) + _hpack_str(path)                        # :path
            + _hpack_int(1, 4) + _hpack_str("localhost")                 # :authority
            + _hpack_int(31, 4) + _hpack_str("application/grpc")         # content-type
            + b"\x00" + _hpack_str("te") + _hpack_str("trailers")
            + b"\x00" + _hpack_str("grpc-timeout") + _hpack_str(f"{max(1, int(timeout * 1000))}m"))


def call_unary(sock_path: str, path: str, message: bytes, timeout: float) -> bytes:
    """One unary gRPC call on a unix socket; the response message's bytes. The request body is
    sent in DATA frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE) within the
    peer's flow-control windows: beyond the initial 64 KiB it waits for WINDOW_UPDATEs."""
    import socket
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(sock_path)
        except OSError as e:
            raise AgentUnreachable(f"connect {sock_path}: {e.strerror or e}") from None
        s.sendall(_PREFACE
                  + _frame(_SETTINGS, 0, 0, _SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big")
                           + _RECV_WINDOW.to_bytes(4, "big"))
                  + _frame(_WINDOW_UPDATE, 0, 0, (_RECV_WINDOW - _DEFAULT_WINDOW).to_bytes(4, "big"))
                  + _frame(_HEADERS, 0x4, 1, _request_headers(path, timeout)))      # END_HEADERS
        frames = _Frames(s, deadline, timeout)
        body = b"\x00" + len(message).to_bytes(4, "big") + message
        sent, data = 0, bytearray()
        done = False                  # the response stream ended (possibly before we finished)
        while sent < len(body) and not done:
            room = min(frames.conn_window, frames.stream_window, _MAX_FRAME, len(body) - sent)
            if room > 0:
                last = sent + room == len(body)
                s.sendall(_frame(_DATA, _END_STREAM if last else 0, 1, body[sent:sent + room]))
                sent += room
                frames.conn_window -= room
                frames.stream_window -= room
            else:
                done = frames.read_one(data)
        while not done:
            done = frames.read_one(data)
        if len(data) < 5 or data[0] != 0 or len(data) < 5 + int.from_bytes(data[1:5], "big"):
            raise AgentUnreachable("the agent answered without a response message")
        return bytes(data[5:5 + int.from_bytes(data[1:5], "big")])
    except TimeoutError:
        raise AgentUnreachable(f"deadline of {timeout:.0f}s exceeded") from None
    except OSError as e:
        raise AgentUnreachable(f"{sock_path}: {e}") from None
    finally:
        s.close()


class _Frames:
    """The receiving side of the connection: frames read one at a time; SETTINGS and PING
    answered, WINDOW_UPDATE and SETTINGS_INITIAL_WINDOW_SIZE tracked for the sender."""

    def __init__(self, s, deadline: float, timeout: float) -> None:
        self.s, self.deadline, self.timeout = s, deadline, timeout
        self.buf = b""
        self.conn_window = self.stream_window = self.initial_window = _DEFAULT_WINDOW

    def read_one(self, data: bytearray) -> bool:
        """Read and handle one frame; DATA of stream 1 goes to data. True once stream 1 ends."""
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise AgentUnreachable(f"deadline of {self.timeout:.0f}s exceeded")
            self.s.settimeout(left)
            chunk = self.s.recv(65536)
            if not chunk:
                raise AgentUnreachable("the agent closed the connection without an answer")
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        kind, flags, stream = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        if kind == _SETTINGS and not flags & _ACK:
            for i in range(0, len(payload) - 5, 6):
                if int.from_bytes(payload[i:i + 2], "big") == _SETTINGS_INITIAL_WINDOW_SIZE:
                    new = int.from_bytes(payload[i + 2:i + 6], "big")
                    self.stream_window += new - self.initial_window
                    self.initial_window = new
            self.s.sendall(_frame(_SETTINGS, _ACK, 0))
        elif kind == _PING and not flags & _ACK:
            self.s.sendall(_frame(_PING, _ACK, 0, payload))
        elif kind == _WINDOW_UPDATE and len(payload) >= 4:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self.conn_window += increment
            elif stream == 1:
                self.stream_window += increment
        elif kind == _GOAWAY or (kind == _RST_STREAM and stream == 1):
            raise AgentUnreachable("the agent reset the call")
        elif kind == _DATA and stream == 1:
            if flags & _PADDED:
                payload = payload[1:len(payload) - payload[0]]
            data += payload
        return stream == 1 and kind in (_DATA, _HEADERS) and bool(flags & _END_STREAM)


def agent_down(inv: spec.Invocation, conf: spec.NetConf, why: str) -> bytes:
    """The agent is unreachable: ADD, CHECK, GC ask to try again, STATUS says unavailable, and DEL
    cleans up in this process (DEL must always succeed)."""
    log(f"{inv.command} {inv.container_id}: agent at {conf.socket} unreachable ({why})")
    if inv.command == "DEL":
        delete_in_process(inv, conf)
        return b""
    if inv.command == "STATUS":
        raise CniError(PLUGIN_NOT_AVAILABLE, "Plugin not available",
                       f"kubeweft agent at {conf.socket} is not answering: {why}")
    raise CniError(TRY_AGAIN_LATER, "Try again later",
                   f"kubeweft agent at {conf.socket} is not answering: {why}")


def delete_in_process(inv: spec.Invocation, conf: spec.NetConf) -> None:
    """DEL without the agent: the same datapath and IPAM code, imported only here. Best-effort:
    every step runs even if an earlier one failed."""
    from pathlib import Path

    from . import datapath

    steps = []
    host_veth = datapath.host_veth_name(inv.container_id, inv.ifname)
    data_dir = Path(conf.data_dir) if conf.data_dir else None
    state = _agent_state(data_dir)
    alloc = None
    ranges = state.get("podCIDRs") or ([state["podCIDR"]] if state.get("podCIDR") else [])
    if ranges:
        try:
            from . import ipam
            alloc = ipam.Pool(data_dir, ranges)
        except Exception as e:  # noqa: BLE001 - best-effort: still remove the veth
            log(f"DEL {inv.container_id}: IPAM store unusable: {e!r}")
    # the sandbox's ifname is ours only if we hold a reservation for it (see plugin.delete)
    netns = inv.netns or None
    if netns and alloc is not None and not alloc.lookup(inv.container_id, inv.ifname):
        netns = None
    steps.append(("unwire", lambda: datapath.unwire_pod(netns, inv.ifname, host_veth)))
    if alloc is not None:
        steps.append(("release", lambda: alloc.release(inv.container_id, inv.ifname)))

    def hostports() -> None:
        from . import nft
        nft.clear_hostports(inv.container_id)
    steps.append(("hostports", hostports))

    def source_checks() -> None:
        from . import antispoof
        antispoof.forget_pod(host_veth)
    steps.append(("source checks", source_checks))
    for name, step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - best-effort: log and go on
            log(f"DEL {inv.container_id} in-process {name} failed: {e!r}")
    log(f"DEL {inv.container_id}/{inv.ifname} done in-process")


def _agent_state(data_dir) -> dict:
    if data_dir is None:
        return {}
    try:
        return json.loads((data_dir / AGENT_STATE).read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
