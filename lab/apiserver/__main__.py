"""`python -m kubeweft.lab.apiserver --lab NAME`: the lab's API server process.

Reads the lab's config, makes the PKI if missing, loads the store's snapshot if the lab has
one, listens on 127.0.0.1:<--port, or a free one> (root netns) and on <control-plane-ip>:6443
inside the underlay netns when that exists, writes the two kubeconfigs and then apiserver.ready.
On SIGTERM it stops serving and writes the store's snapshot (apiserver-store.json), so the next
start (`kubeweft lab api-start`) serves the same objects at the same resourceVersions.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import yaml

from .. import controllers, netns
from ..config import API_PORT, LabConfig
from ..files import write_atomic
from ..store import Store
from . import app as apiapp
from . import pki as pkimod
from . import policy, tokens

log = logging.getLogger("kubeweft.lab.apiserver")

IP_FREEBIND = 15            # linux/in.h; the socket module does not name it


def load_config(name: str) -> LabConfig:
    """The lab's LabConfig from state.json, or the defaults for `name` when there is none."""
    cfg = LabConfig(name=name)
    try:
        d = json.loads(cfg.state_file.read_text())["config"]
    except (OSError, ValueError, KeyError):
        return cfg
    if isinstance(d.get("nodeport_range"), list):
        d["nodeport_range"] = tuple(d["nodeport_range"])
    return LabConfig(**d)


def render_kubeconfig(name: str, server: str, ca_pem: bytes, token: str) -> str:
    user = f"{name}-admin"
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": name, "preferences": {},
        "clusters": [{"name": name, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user,
                                                "namespace": "default"}}],
    }, sort_keys=False)


def _listen(host: str, port: int) -> socket.socket:
    v6 = ":" in host
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6:
        # an IPv6 address is unusable while duplicate address detection runs on it (~1 s after it
        # is added); binding it anyway lets the server start as soon as the underlay exists
        s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    s.bind((host, port))
    s.listen(128)
    s.setblocking(False)
    return s


def listen_in_netns(ns: str, host: str, port: int) -> socket.socket:
    """A listening socket made by a helper thread inside `ns`: it stays in that netns while this
    process lives in the root one (docs/architecture.md, "The lab")."""
    out: dict = {}

    def work() -> None:
        try:
            with netns.entered(ns):
                out["sock"] = _listen(host, port)
        except OSError as e:              # handed back to the caller
            out["error"] = e
    t = threading.Thread(target=work, name="underlay-listen")
    t.start()
    t.join(10)
    if "error" in out:
        raise out["error"]
    if "sock" not in out:
        raise TimeoutError(f"could not listen in netns {ns}")
    return out["sock"]


def snapshot_path(cfg: LabConfig) -> Path:
    return cfg.state_dir / "apiserver-store.json"


def load_store(cfg: LabConfig, history: int) -> Store:
    """A store with the lab's last snapshot in it, or an empty one when there is none."""
    store = Store(history=history)
    try:
        data = json.loads(snapshot_path(cfg).read_text())
    except FileNotFoundError:
        return store
    store.restore(data)
    log.info("restored %d objects at resourceVersion %d from %s",
             sum(len(e["items"]) for e in data.get("objects", [])), store.resource_version,
             snapshot_path(cfg))
    return store


def save_store(cfg: LabConfig, store: Store) -> None:
    write_atomic(snapshot_path(cfg), json.dumps(store.snapshot(), separators=(",", ":")))
    log.info("saved the store at resourceVersion %d to %s", store.resource_version, snapshot_path(cfg))


async def run(cfg: LabConfig, history: int = 200_000, port: int = 0) -> int:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    # the serving certificate names the kubernetes Service's ClusterIP too: in-cluster clients
    # (KUBERNETES_SERVICE_HOST) verify it as they would a real API server's
    sans = [cfg.control_plane_ip, *([cfg.control_plane_ip6] if cfg.has_ipv6 else []), apiapp.kubernetes_service_ip(cfg)]
    keys = pkimod.ensure_pki(cfg.pki_dir, sans)
    store = load_store(cfg, history)
    apiapp.ensure_namespaces(store, cfg)
    apiapp.ensure_service_cidr(store, cfg)
    apiapp.ensure_kubernetes_service(store, cfg)
    policy.ensure_bootstrap_policy(store)
    signer = tokens.Signer.from_pem(keys.service_account_key.read_bytes()) if keys.service_account_key else None
    app = apiapp.build_app(store, cfg, keys.token, signer)
    ctx = apiapp.ssl_context(str(keys.cert), str(keys.key))

    local = _listen("127.0.0.1", port)
    socks = [local]
    if netns.exists(cfg.underlay_netns):
        # the IPv4 address in every lab (the nodes reach the API through it); an IPv6 lab's also
        # on its IPv6 address, the endpoint of its kubernetes Service
        for host in (cfg.control_plane_ip, *([cfg.control_plane_ip6] if cfg.has_ipv6 else [])):
            socks.append(listen_in_netns(cfg.underlay_netns, host, API_PORT))
            log.info("listening on %s port %d in netns %s", host, API_PORT, cfg.underlay_netns)
    port = local.getsockname()[1]
    runner = await apiapp.serve(app, ctx, socks)
    log.info("listening on 127.0.0.1:%d", port)

    tasks = controllers.start(store, cfg) or []
    ca_pem = keys.ca_cert.read_bytes()
    write_atomic(cfg.kubeconfig, render_kubeconfig(cfg.name, f"https://127.0.0.1:{port}", ca_pem, keys.token))
    write_atomic(cfg.node_kubeconfig, render_kubeconfig(cfg.name, cfg.api_url_for_nodes, ca_pem, keys.token))
    ready = cfg.state_dir / "apiserver.ready"
    write_atomic(ready, json.dumps({"pid": os.getpid(), "port": port}), 0o644)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    save_store(cfg, store)          # after the last write: nothing changes the store any more
    try:
        if json.loads(ready.read_text()).get("pid") == os.getpid():
            ready.unlink()
    except (OSError, ValueError):
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kubeweft.lab.apiserver")
    p.add_argument("--lab", required=True, help="the lab's name")
    p.add_argument("--history", type=int, default=200_000,
                   help="events kept for watches; an older resourceVersion gets 410 Gone")
    p.add_argument("--port", type=int, default=0,
                   help="the loopback port (0: a free one; a restart passes the previous one)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s apiserver %(levelname)s %(message)s")
    return asyncio.run(run(load_config(args.lab), args.history, args.port))


if __name__ == "__main__":
    sys.exit(main())
