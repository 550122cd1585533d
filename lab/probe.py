"""`kubeweft lab probe`: one connection from inside a pod, a node or the external host.

`probe_once` makes its socket with the calling thread inside the source netns (lab.netns.entered)
and does the I/O after stepping back out: a socket stays in the netns it was made in, and no
subprocess is needed, so one probe costs about a millisecond plus the network. Call it from a
worker thread, never the main one (probe_command and lab.matrix do).

A target may name its host (`web:80`, `web.default.svc.cluster.local:80`) when the source is a
pod: the name is resolved as that pod resolves it, with the nameservers, search list and ndots
of its own /etc/resolv.conf (the cluster DNS, for a ClusterFirst pod), asked from its netns.

The pure part, classifying an error into an outcome and parsing the answer, is kept apart in
`classify_error` and `parse_answer` (unit-tested without root).
"""
from __future__ import annotations

import concurrent.futures
import errno
import json
import re
import socket
import sys
import time
from pathlib import Path

import dns.inet

from . import netns
from .config import LabConfig
from .kubelet.dns import parse_resolv_conf
from .workload import render_peer

CONNECTED, REFUSED, TIMEOUT, UNREACHABLE = "connected", "refused", "timeout", "unreachable"
OUTCOMES = (CONNECTED, REFUSED, TIMEOUT, UNREACHABLE)

# Errors that mean "nobody listens / somebody said no" versus "there is no way there".
_REFUSED = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE}
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
                errno.EADDRNOTAVAIL, errno.EACCES}
# A packet dropped by a netfilter rule on the sender's own OUTPUT hook makes send() fail with
# EPERM at once; the path is "dropped", which seen from afar is a timeout.
_TIMEOUT = {errno.ETIMEDOUT, errno.EPERM}


class ProbeError(Exception):
    """A probe that cannot even start: unknown source, bad target."""


# --- pure ------------------------------------------------------------------------------------
def classify_error(exc: BaseException) -> str:
    """An exception raised by connect/send/recv -> one of OUTCOMES (never CONNECTED)."""
    if isinstance(exc, TimeoutError) and getattr(exc, "errno", None) in (None, errno.ETIMEDOUT):
        return TIMEOUT                     # socket.timeout is TimeoutError with errno None
    code = getattr(exc, "errno", None)
    if code in _REFUSED:
        return REFUSED
    if code in _UNREACHABLE:
        return UNREACHABLE
    if code in _TIMEOUT:
        return TIMEOUT
    return UNREACHABLE


def parse_answer(data: bytes) -> tuple[str | None, str | None]:
    """A workload's whoami answer (an HTTP response or a bare JSON line) -> (pod, client)."""
    text = data.decode("utf-8", "replace")
    if text.startswith("HTTP/"):
        head, sep, body = text.partition("\r\n\r\n")
        if not sep:
            head, _, body = text.partition("\n\n")
        status = head.split(None, 2)
        if len(status) < 2 or status[1] != "200":
            return None, None
        text = body
    try:
        obj = json.loads(text.strip())
    except ValueError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    pod, client = obj.get("pod"), obj.get("client")
    return (pod if isinstance(pod, str) else None), (client if isinstance(client, str) else None)


_LABEL = re.compile(r"^[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?$", re.IGNORECASE)


def is_hostname(host: str) -> bool:
    """A DNS name of letters, digits, '-' and '_' (SRV-style labels), an optional final dot."""
    name = host.removesuffix(".")
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def parse_target(target: str) -> tuple[str, int]:
    """'10.244.1.2:80', '[fd00::1]:80' or 'web.default:80' -> (host, port). An IPv6 address
    takes brackets (and only it does): 'fd00::1:80' is ambiguous."""
    host, sep, port = target.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 \
            or not (dns.inet.is_address(host) or is_hostname(host)) or (":" in host) != bracketed:
        raise ProbeError(f"target must be HOST:PORT or [IPV6]:PORT (an address, or a name a pod "
                         f"resolves), got {target!r}")
    return host, int(port)


def plan_resolver(resolv_conf: str):
    """A dnspython resolver set up as a resolv.conf says (nameservers, search list, ndots)."""
    import dns.name
    import dns.resolver

    servers, searches, options = parse_resolv_conf(resolv_conf)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = servers
    resolver.search = [dns.name.from_text(d) for d in searches]
    resolver.use_search_by_default = True
    resolver.ndots = 1                         # glibc's default
    for opt in options:
        name, _, value = opt.partition(":")
        if name == "ndots" and value.isdigit():
            resolver.ndots = int(value)
    resolver.timeout, resolver.lifetime = 1.0, 3.0
    return resolver


def parse_source(source: str) -> tuple[str, str]:
    """'node:node1' -> ('node', 'node1'); 'external' -> ('external', ''); 'ns/pod' or 'pod'
    (namespace default) -> ('pod', 'ns/pod')."""
    if source == "external":
        return "external", ""
    if source.startswith("node:"):
        return "node", source[5:]
    if "/" not in source:
        source = f"default/{source}"
    return "pod", source


def render_line(result: dict) -> str:
    """A human line for one attempt."""
    where = f"{result.get('proto', 'tcp')} {result.get('target', '')}"
    if result["outcome"] == CONNECTED:
        return (f"connected    {where} -> {result.get('pod') or '?'} (it saw {result.get('client') or '?'})"
                f" {result.get('ms', 0):.1f} ms")
    detail = f" ({result['error']})" if result.get("error") else ""
    return f"{result['outcome']:<12} {where}{detail} {result.get('ms', 0):.1f} ms"


# --- I/O -------------------------------------------------------------------------------------
def read_pods(cfg: LabConfig) -> dict[str, dict]:
    """'ns/name' -> the kubelet's pods.json entry (netns, ip, ...) over every node of the lab."""
    out: dict[str, dict] = {}
    for path in sorted(Path(cfg.state_dir, "nodes").glob("*/pods.json")):
        try:
            entries = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            continue                       # being rewritten or gone: the others still count
        for uid, e in entries.items():
            if isinstance(e, dict) and e.get("namespace") and e.get("name"):
                out[f"{e['namespace']}/{e['name']}"] = dict(e, uid=uid, node=path.parent.name)
    return out


def resolve_source(cfg: LabConfig, source: str) -> str:
    """--from value -> the name of the netns to probe from."""
    kind, what = parse_source(source)
    if kind == "external":
        ns = cfg.external_netns
    elif kind == "node":
        ns = cfg.node_netns(what)
    else:
        entry = read_pods(cfg).get(what)
        if not entry or not entry.get("netns"):
            raise ProbeError(f"pod {what} is not running in lab {cfg.name} (no netns in pods.json)")
        ns = entry["netns"]
    if not netns.exists(ns):
        raise ProbeError(f"network namespace {ns} does not exist (is lab {cfg.name} up?)")
    return ns


def resolve_in_pod(cfg: LabConfig, source: str, host: str) -> str:
    """The address `host` has as pod `source` sees it: the first of its A (else AAAA) records,
    asked from the pod's netns as its /etc/resolv.conf says. Call it from a worker thread."""
    import dns.exception
    import dns.resolver

    kind, what = parse_source(source)
    if kind != "pod":
        raise ProbeError(f"{host!r}: names resolve from a pod (as its resolv.conf says); from {source} give an address")
    entry = read_pods(cfg).get(what) or {}
    try:
        resolv = Path(f"/proc/{entry.get('pid')}/root/etc/resolv.conf").read_text()
    except OSError as e:
        raise ProbeError(f"pod {what}: cannot read its /etc/resolv.conf ({e.strerror})") from None
    resolver = plan_resolver(resolv)
    errors = []
    with netns.entered(entry["netns"]):        # the resolver's sockets are made in the pod's netns
        for rdtype in ("A", "AAAA"):
            try:
                return resolver.resolve(host, rdtype)[0].to_text()
            except dns.exception.DNSException as e:
                errors.append(str(e))
    raise ProbeError(f"{host!r} does not resolve from pod {what}: {errors[0]}")


def probe_once(source_netns: str, host: str, port: int, *, udp: bool = False,
               timeout: float = 2.0) -> dict:
    """One attempt from `source_netns`; returns {"outcome", "pod", "client", "ms", ...}."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with netns.entered(source_netns):
        sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    result = {"outcome": None, "pod": None, "client": None,
              "target": render_peer(host, port), "proto": "udp" if udp else "tcp"}
    start = time.monotonic()
    deadline = start + timeout
    try:
        data = _udp_exchange(sock, host, port, deadline) if udp else _tcp_exchange(sock, host, port, deadline)
        if not data:
            result.update(outcome=REFUSED, error="closed without an answer")
        else:
            pod, client = parse_answer(data)
            result.update(outcome=CONNECTED, pod=pod, client=client)
    except OSError as e:
        result.update(outcome=classify_error(e), error=e.strerror or "timed out")
    finally:
        sock.close()
    result["ms"] = round((time.monotonic() - start) * 1000, 2)
    return result


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _tcp_exchange(sock: socket.socket, host: str, port: int, deadline: float) -> bytes:
    sock.settimeout(_left(deadline))
    sock.connect((host, port))
    sock.sendall(f"GET /whoami HTTP/1.1\r\nHost: {render_peer(host, port)}\r\nConnection: close\r\n\r\n".encode())
    chunks: list[bytes] = []
    while True:
        try:
            sock.settimeout(_left(deadline))
            chunk = sock.recv(65536)
        except TimeoutError:
            if chunks:                     # a server that answered but kept the connection open
                return b"".join(chunks)
            raise
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _udp_exchange(sock: socket.socket, host: str, port: int, deadline: float) -> bytes:
    # Connected, so an ICMP port unreachable comes back as ECONNREFUSED. The datagram is sent
    # up to three times within the timeout: one lost packet is not a broken path.
    sock.connect((host, port))
    step = max(_left(deadline) / 3, 0.05)
    while True:
        sock.send(b"whoami")
        sock.settimeout(min(step, _left(deadline)))
        try:
            return sock.recv(65536)
        except TimeoutError:
            _left(deadline)


def probe_command(name: str, source: str, target: str, *, udp: bool = False, count: int = 1,
                  timeout: float = 2.0, as_json: bool = False) -> int:
    cfg = LabConfig(name=name)
    # A worker thread enters the netns: the main thread never leaves the root one.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            host, port = parse_target(target)
            ns = resolve_source(cfg, source)
            asked = host
            if not dns.inet.is_address(host):
                host = pool.submit(resolve_in_pod, cfg, source, host).result()
                if not as_json:
                    print(f"{asked} is {host} (resolved from {source})", flush=True)
        except ProbeError as e:
            print(f"kubeweft lab probe: {e}", file=sys.stderr)
            return 2
        ok = True
        for _ in range(max(count, 1)):
            result = pool.submit(probe_once, ns, host, port, udp=udp, timeout=timeout).result()
            if asked != host:
                result["name"] = asked
            ok = ok and result["outcome"] == CONNECTED
            print(json.dumps(result) if as_json else render_line(result), flush=True)
    return 0 if ok else 1
