"""The lab's cluster DNS, in CoreDNS's place:

    python -m kubeweft.lab.dns [-conf COREFILE] [-dns.port 53] [--kubeconfig PATH]
                               [--listen ADDR[:PORT] ...] [--zone cluster.local] [--ttl N]
                               [--pods disabled|insecure|verified]
                               [--metrics :9153] [--health :8080] [--ready :8181] [--lameduck 5s]

Settings come from the Corefile (`-conf`, as the CoreDNS image's args give it; kubeadm's
Corefile when the file is absent), then the flags, which win. The API is reached through
--kubeconfig, else $KUBECONFIG, else the in-cluster service account. DNS is served once the
API has been listed, or after --sync-timeout anyway, unready, as CoreDNS does; SIGTERM or SIGINT
stop it, after the health plugin's lameduck when the Corefile sets one.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import dns.name

from . import corefile, records
from .index import Cluster
from .metrics import Metrics
from .server import DnsServer, parse_listen
from .status import serve_status
from .watcher import Watcher

log = logging.getLogger("kubeweft.lab.dns")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kubeweft.lab.dns", description="The lab's cluster DNS, in CoreDNS's place.")
    # CoreDNS's own flags (Go's flag package takes one dash or two)
    p.add_argument("-conf", "--conf", dest="conf", default="", help="Corefile to read")
    p.add_argument("-dns.port", "--dns.port", dest="port", type=int, default=None,
                   help="port of every listen address without one (default: the Corefile's, 53)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG, else in-cluster)")
    p.add_argument("--listen", action="append", default=None, metavar="ADDR[:PORT]",
                   help="address to serve DNS on, repeatable (default: the Corefile's bind, else 0.0.0.0)")
    p.add_argument("--zone", default=None, help="the cluster domain (default cluster.local)")
    p.add_argument("--ttl", type=int, default=None, help="TTL of every record")
    p.add_argument("--pods", choices=records.POD_MODES, default=None, help="pod records")
    p.add_argument("--metrics", default=None, help="Prometheus /metrics address ('' off)")
    p.add_argument("--health", default=None, help="/health address ('' off)")
    p.add_argument("--ready", default=None, help="/ready address ('' off)")
    p.add_argument("--lameduck", default=None, help="how long DNS is still served after SIGTERM, as a Go "
                   "duration (default: the Corefile's health lameduck)")
    p.add_argument("--sync-timeout", type=float, default=5.0,
                   help="seconds to wait for the first list before serving anyway (CoreDNS's 5)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def settings_from(args: argparse.Namespace) -> corefile.Settings:
    if args.conf and Path(args.conf).is_file():
        s = corefile.parse(Path(args.conf).read_text())
    else:
        if args.conf:
            log.warning("%s does not exist: serving kubeadm's default Corefile", args.conf)
        s = corefile.parse(corefile.KUBEADM_COREFILE)
    for name in ("zone", "ttl", "pods", "metrics", "health", "ready"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    if args.lameduck is not None:
        s.lameduck = corefile.parse_duration(args.lameduck)
    if args.listen:
        s.binds = args.listen
    if args.port is not None:
        s.port = args.port
    s.kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or s.kubeconfig
    return s


def default_binds() -> list[str]:
    """Without a bind, every address of both families, as CoreDNS: IPv4's wildcard, and IPv6's
    where the pod's namespace has IPv6 (an IPv6 or dual-stack cluster DNS Service is DNATed to
    the pod's IPv6 address)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::", 0))
    except OSError:
        return ["0.0.0.0"]
    return ["0.0.0.0", "::"]


def make_api(kubeconfig: str):
    from kubernetes import client, config
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()


async def run(s: corefile.Settings, sync_timeout: float) -> int:
    loop = asyncio.get_running_loop()
    cfg = records.Config(zone=dns.name.from_text(s.zone),
                         reverse_zones=tuple(dns.name.from_text(z) for z in s.reverse_zones),
                         ttl=s.ttl, pods=s.pods)
    cluster, metrics = Cluster(), Metrics()
    watcher = Watcher(make_api(s.kubeconfig), cluster, loop, pods=s.pods == "verified").start()
    server = DnsServer(cluster, cfg, [parse_listen(b, s.port) for b in (s.binds or default_binds())], metrics)
    serving = False
    runners = await serve_status(metrics, lambda: serving and watcher.synced, metrics_address=s.metrics,
                                 health_address=s.health, ready_address=s.ready)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not await loop.run_in_executor(None, watcher.wait_synced, sync_timeout):
            log.warning("starting server with unsynced Kubernetes API")
        await server.start()
        serving = True
        await stop.wait()
        serving = False
        if s.lameduck > 0:
            # CoreDNS's lameduck: /ready fails while the sockets still answer, so the queries that
            # reach this pod until the service proxies drop it are answered
            log.info("lameduck: serving %g s more", s.lameduck)
            await asyncio.sleep(s.lameduck)
    finally:
        await server.close()
        for runner in runners:
            await runner.cleanup()
        watcher.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        s = settings_from(args)
    except (corefile.CorefileError, ValueError) as e:
        print(f"kubeweft dns: {e}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(s, args.sync_timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
