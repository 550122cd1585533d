"""The DNS server's HTTP side, on CoreDNS's ports: /metrics (prometheus plugin, 9153), /health
(health plugin, 8080: 200 while the process serves) and /ready (ready plugin, 8181: 200 once the
API has been listed and the DNS sockets are open, 503 naming "kubernetes" before)."""
from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from .metrics import Metrics


def split_address(text: str) -> tuple[str | None, int]:
    """":9153" is every address of both families (None, as aiohttp takes it); "localhost:9153",
    "[::1]:9153" one. The kubelet probes /ready at the pod's primary address, IPv6 on an IPv6
    cluster."""
    host, _, port = text.rpartition(":")
    return host.strip("[]") or None, int(port)


async def _site(app: web.Application, address: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_address(address)
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve_status(metrics: Metrics, ready: Callable[[], bool], *, metrics_address: str = "",
                       health_address: str = "", ready_address: str = "") -> list[web.AppRunner]:
    """One HTTP server per non-empty address; the caller awaits runner.cleanup() on each."""
    async def get_metrics(_request):
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def get_health(_request):
        return web.Response(text="OK")

    async def get_ready(_request):
        return web.Response(text="OK") if ready() else web.Response(status=503, text="kubernetes")

    runners = []
    for address, path, handler in ((metrics_address, "/metrics", get_metrics),
                                   (health_address, "/health", get_health),
                                   (ready_address, "/ready", get_ready)):
        if address:
            app = web.Application()
            app.router.add_get(path, handler)
            runners.append(await _site(app, address))
    return runners
