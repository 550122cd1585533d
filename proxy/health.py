"""The agent's health endpoints on one port (kube-proxy's 10256), and one server per
healthCheckNodePort of an externalTrafficPolicy Local LoadBalancer, answering 200 while this
node has local endpoints for the Service and 503 otherwise (the cloud load balancer's probe).

    /livez    200 from the agent's first second (its wait for the Node's podCIDR included, so a
              slow start is never taken for a hung one); 503 only when the service proxy left a
              change unsynced longer than its timeout
    /readyz   200 once every readiness check passes (the CNI server answers, the first service
              and policy syncs are in the kernel) and /livez does; the body names each check
    /healthz  kube-proxy's, for load balancers: the service proxy's health, 503 until it runs,
              and 503 while the Node is being deleted or carries ToBeDeletedByClusterAutoscaler
              (nodeEligible false: the load balancer drains the node; /livez ignores it)

Every answer of /healthz and /livez is counted by status code (kube-proxy's
proxy_healthz_total / proxy_livez_total, exported by metrics.register_health).

The service proxy is healthy unless a change has been waiting for a sync longer than `timeout`
(kube-proxy's rule: lastQueued after lastUpdated and older than the timeout is unhealthy)."""
from __future__ import annotations

import collections
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else ""


class ProxyHealth:
    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.last_updated = 0.0
        self.last_queued = 0.0
        self.node_eligible = True      # the Node is neither being deleted nor marked for it
        self._lock = threading.Lock()

    def queued(self) -> None:
        with self._lock:
            if self.last_queued <= self.last_updated:
                self.last_queued = time.time()

    def updated(self) -> None:
        with self._lock:
            self.last_updated = time.time()

    def status(self) -> tuple[bool, dict]:
        """Whether the proxy keeps up with its changes (/livez), and the body of both."""
        now = time.time()
        with self._lock:
            stale = self.last_queued > self.last_updated and now - self.last_queued > self.timeout
            body = {"lastUpdated": _iso(self.last_updated), "currentTime": _iso(now),
                    "nodeEligible": self.node_eligible}
        return not stale, body

    def healthz(self) -> tuple[bool, dict]:
        live, body = self.status()
        return live and body["nodeEligible"], body


class _HTTPServer6(ThreadingHTTPServer):
    """An IPv6 server that takes IPv6 alone (IPV6_V6ONLY), so the IPv4 one binds the same port
    beside it: each family's proxier serves its healthCheckNodePorts, as kube-proxy's do."""
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class _HTTPServerAny(ThreadingHTTPServer):
    """A server on every address of both families: one IPv6 socket that takes IPv4 too
    (IPV6_V6ONLY off), as Go's net.Listen("tcp", "0.0.0.0:port") gives kube-proxy, whose default
    healthz address therefore answers over IPv6 on an IPv6 or dual-stack node."""
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


ANY = "*"          # host of _Server: every address of both families


class _Server:
    """A ThreadingHTTPServer on its own daemon thread (IPv6 when host is an IPv6 address; both
    families when host is ANY and the kernel has IPv6, else IPv4's 0.0.0.0)."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler]):
        if host == ANY:
            server, host = (_HTTPServerAny, "::") if socket.has_ipv6 and _ipv6_enabled() else \
                (ThreadingHTTPServer, "0.0.0.0")
        else:
            server = _HTTPServer6 if ":" in host else ThreadingHTTPServer
        self.httpd = server((host.strip("[]"), port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                       name=f"health:{port}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _ipv6_enabled() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
        return True
    except OSError:
        return False


def _reply(handler: BaseHTTPRequestHandler, code: int, body: dict) -> None:
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("X-Content-Type-Options", "nosniff")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


Check = Callable[[], bool]


def render_readiness(results: dict[str, bool | str], live: bool) -> tuple[bool, dict]:
    """/readyz's answer from each check's result (True, False, or the error it raised) and
    /livez's: ready when every check is True and the agent is live."""
    checks = {name: "ok" if r is True else ("waiting" if r is False else f"error: {r}")
              for name, r in results.items()}
    ok = live and all(r is True for r in results.values())
    return ok, {"ready": ok, "live": live, "checks": checks}


class AgentHealth:
    """What /livez, /readyz and /healthz answer. The agent names its readiness checks at start
    (`expect`), before the components they watch exist, and hands each its check once that
    component runs (`ready_when`): until then the check reads as waiting."""

    def __init__(self) -> None:
        self.proxy: ProxyHealth | None = None
        self._checks: dict[str, Check | None] = {}
        self._lock = threading.Lock()
        self.answers: collections.Counter[tuple[str, int]] = collections.Counter()   # (path, code)

    def expect(self, *names: str) -> None:
        with self._lock:
            for name in names:
                self._checks.setdefault(name, None)

    def ready_when(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def livez(self) -> tuple[bool, dict]:
        if self.proxy is None:
            return True, {"status": "ok"}
        return self.proxy.status()

    def readyz(self) -> tuple[bool, dict]:
        with self._lock:
            checks = dict(self._checks)
        results: dict[str, bool | str] = {}
        for name, check in checks.items():
            try:
                results[name] = bool(check()) if check is not None else False
            except Exception as e:  # noqa: BLE001 - a failing check means not ready, with the reason
                results[name] = f"{type(e).__name__}: {e}"
        return render_readiness(results, self.livez()[0])

    def healthz(self) -> tuple[bool, dict]:
        if self.proxy is None:
            return False, {"lastUpdated": "", "currentTime": _iso(time.time()), "nodeEligible": True}
        return self.proxy.healthz()

    def count(self, path: str, code: int) -> None:
        with self._lock:
            self.answers[(path, code)] += 1

    def counts(self) -> dict[tuple[str, int], int]:
        with self._lock:
            return dict(self.answers)


def serve_agent_health(bind: str, health: AgentHealth) -> _Server | None:
    """/livez, /readyz and /healthz on bind ("host:port"; empty: off). An empty host or 0.0.0.0
    (kube-proxy's default, 0.0.0.0:10256) is every address of both families."""
    if not bind:
        return None
    host, _, port = bind.rpartition(":")
    answers = {"/livez": health.livez, "/readyz": health.readyz, "/healthz": health.healthz}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            answer = answers.get(self.path.split("?", 1)[0])
            if answer is None:
                _reply(self, 404, {"error": "not found"})
                return
            ok, body = answer()
            code = 200 if ok else 503
            health.count(self.path.split("?", 1)[0], code)
            _reply(self, code, body)

        def log_message(self, *args):
            pass

    return _Server(ANY if host in ("", "0.0.0.0") else host, int(port), Handler)


class ServiceHealthServers:
    """One HTTP server per healthCheckNodePort, following the render's health table."""

    def __init__(self, host: str = "0.0.0.0"):
        self.host = host
        self.servers: dict[int, _Server] = {}
        self.state: dict[int, tuple[tuple[str, str], int]] = {}   # port -> (service key, local eps)
        self._lock = threading.Lock()

    def update(self, health: dict[tuple[str, str], tuple[int, int]]) -> None:
        want = {port: (key, n) for key, (port, n) in health.items()}
        with self._lock:
            self.state = want
            for port in [p for p in self.servers if p not in want]:
                self.servers.pop(port).close()
            for port in want:
                if port not in self.servers:
                    try:
                        self.servers[port] = _Server(self.host, port, self._handler(port))
                    except OSError as e:
                        log.error("healthCheckNodePort %d: %s", port, e)

    def _handler(self, port: int) -> type[BaseHTTPRequestHandler]:
        servers = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                entry = servers.state.get(port)
                if entry is None:
                    _reply(self, 503, {"error": "no service"})
                    return
                (ns, name), n = entry
                _reply(self, 200 if n > 0 else 503,
                       {"service": {"namespace": ns, "name": name}, "localEndpoints": n,
                        "serviceProxyHealthy": True})

            def log_message(self, *args):
                pass

        return Handler

    def close(self) -> None:
        with self._lock:
            for s in self.servers.values():
                s.close()
            self.servers.clear()
