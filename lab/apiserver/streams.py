"""pods/log and pods/exec: the API server proxies them to the pod's kubelet, as the real one does.

    GET  /api/v1/namespaces/<ns>/pods/<name>/log?container&follow&previous&tailLines&limitBytes
    GET  /api/v1/namespaces/<ns>/pods/<name>/exec?command=..&container&stdin&stdout&stderr&tty
    POST the same (a WebSocket upgrade either way; SPDY is not spoken: kubectl 1.30+ uses WebSocket)

The API server checks the pod and the container the way the real one does (pod.ExecLocation,
LogLocation: the same messages), then reaches the kubelet on the Node's InternalIP at the port
the Node advertises (daemonEndpoints.kubeletEndpoint, 10250). The nodes live on the lab's
underlay, so the sockets to them are made by a thread that sits in the underlay netns (a
socket keeps the netns it was made in), handed to aiohttp's connector. exec is relayed message
by message between kubectl's WebSocket and one to the kubelet, which picked the subprotocol.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import time
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from .. import errors, netns
from ..resources import find

log = logging.getLogger("kubeweft.lab.apiserver.streams")

PODS = find("", "pods")
NODES = find("", "nodes")
KUBELET_PORT = 10250
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
LOG_PARAMS = ("follow", "previous", "tailLines", "limitBytes", "sinceSeconds", "timestamps")
EXEC_PARAMS = ("stdin", "stdout", "stderr", "tty")
STATE_KEY = web.AppKey("streams", dict)


# --- what the request names (pure) ----------------------------------------------------------------
def pick_container(pod: dict, name: str | None) -> str:
    """The container a pods/log or pods/exec request is for, or the real server's 400."""
    spec = pod.get("spec") or {}
    pod_name = pod["metadata"]["name"]
    containers = [c.get("name", "") for c in spec.get("containers") or []]
    inits = [c.get("name", "") for c in spec.get("initContainers") or []]
    if not name:
        if len(containers) == 1:
            return containers[0]
        all_names = " ".join(containers + inits)
        raise errors.bad_request(f"a container name must be specified for pod {pod_name}, choose one of: "
                                 f"[{all_names}]")
    if name not in containers + inits:
        raise errors.bad_request(f"container {name} is not valid for pod {pod_name}")
    return name


def kubelet_address(node: dict) -> tuple[str, int]:
    status = node.get("status") or {}
    ip = next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or KUBELET_PORT
    if not ip:
        raise errors.APIError(500, "InternalError", f"node {node['metadata']['name']} has no InternalIP")
    return ip, int(port)


def _url_host(ip: str) -> str:
    """An address as a URL's host: an IPv6 one in brackets."""
    return f"[{ip}]" if ":" in ip else ip


# --- the connection to kubelets -------------------------------------------------------------------
class UnderlayDialer:
    """aiohttp's socket_factory: sockets made in the underlay netns by a thread that lives there."""

    def __init__(self, netns_name: str):
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="underlay-dial",
                                                          initializer=netns.setns, initargs=(netns_name,))

    def __call__(self, addr_info) -> socket.socket:
        family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
        return self.pool.submit(socket.socket, family, type_, proto).result(10)

    def close(self) -> None:
        self.pool.shutdown(wait=False)


def _session(app: web.Application) -> aiohttp.ClientSession:
    state = app[STATE_KEY]
    if state.get("session") is None:
        from .app import CFG_KEY
        cfg = app[CFG_KEY]
        factory = None
        if netns.exists(cfg.underlay_netns):
            state["dialer"] = factory = UnderlayDialer(cfg.underlay_netns)
        state["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=factory, force_close=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, connect=10))
    return state["session"]


async def _cleanup(app: web.Application) -> None:
    state = app[STATE_KEY]
    if state.get("session") is not None:
        await state["session"].close()
    if state.get("dialer") is not None:
        state["dialer"].close()


def _target(request: web.Request) -> tuple[dict, str, str, int]:
    """(pod, container, kubelet IP, kubelet port) for a pods/log or pods/exec request."""
    from .app import STORE_KEY
    store = request.app[STORE_KEY]
    ns, name = request.match_info["ns"], request.match_info["name"]
    pod = store.get(PODS, ns, name)
    container = pick_container(pod, request.query.get("container"))
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise errors.bad_request(f"pod {name} does not have a host assigned")
    node = store.try_get(NODES, "", node_name)
    if node is None:
        raise errors.APIError(500, "InternalError", f'nodes "{node_name}" not found')
    ip, port = kubelet_address(node)
    return pod, container, ip, port


def _headers(request: web.Request) -> dict:
    from .app import TOKEN_KEY
    return {"Authorization": f"Bearer {request.app[TOKEN_KEY]}"}


async def _kubelet_error(resp: aiohttp.ClientResponse) -> errors.APIError:
    text = (await resp.text()).strip() or resp.reason or "error"
    code = resp.status if resp.status in (400, 404) else 500
    reason = {400: "BadRequest", 404: "NotFound"}.get(code, "InternalError")
    return errors.APIError(code, reason, text)


# --- handlers ------------------------------------------------------------------------------------------
async def pod_log(request: web.Request) -> web.StreamResponse:
    pod, container, ip, port = _target(request)
    meta = pod["metadata"]
    query = {k: request.query[k] for k in LOG_PARAMS if k in request.query}
    url = f"http://{_url_host(ip)}:{port}/containerLogs/{meta['namespace']}/{meta['name']}/{container}"
    try:
        upstream = await _session(request.app).get(url, params=query, headers=_headers(request))
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise errors.APIError(500, "InternalError", f"Get \"{url}\": {e}") from None
    async with upstream:
        if upstream.status != 200:
            raise await _kubelet_error(upstream)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientError):
            pass
    return resp


FAILURE_MEMORY = 10.0     # seconds a failed WebSocket exec is remembered for kubectl's SPDY retry


async def pod_exec(request: web.Request) -> web.StreamResponse:
    pod, container, ip, port = _target(request)
    meta = pod["metadata"]
    key = (meta["namespace"], meta["name"], container)
    failures = request.app[STATE_KEY].setdefault("exec_failures", {})
    if request.headers.get("Upgrade", "").lower() != "websocket":
        # kubectl retries over SPDY when the WebSocket upgrade was refused: a real server then
        # answers the same error again, so pass on the reason the WebSocket attempt failed
        when, error = failures.get(key, (0.0, None))
        if error is not None and time.monotonic() - when < FAILURE_MEMORY:
            raise error
        raise errors.bad_request("Upgrade request required: this server speaks the remotecommand protocol over "
                                 "WebSocket (v5.channel.k8s.io) only, not SPDY")
    try:
        return await _exec_websocket(request, pod, container, ip, port)
    except errors.APIError as e:
        now = time.monotonic()
        for k in [k for k, (when, _) in failures.items() if now - when >= FAILURE_MEMORY]:
            del failures[k]
        failures[key] = (now, e)
        raise


async def _exec_websocket(request: web.Request, pod: dict, container: str, ip: str,
                          port: int) -> web.StreamResponse:
    meta = pod["metadata"]
    query = [("command", c) for c in request.query.getall("command", [])]
    query += [(k, request.query[k]) for k in EXEC_PARAMS if k in request.query]
    url = (f"http://{_url_host(ip)}:{port}/exec/{meta['namespace']}/{meta['name']}/{container}?{urlencode(query)}")
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    try:
        upstream = await _session(request.app).ws_connect(url, protocols=offered or PROTOCOLS,
                                                          headers=_headers(request), autoping=True,
                                                          max_msg_size=0)
    except aiohttp.WSServerHandshakeError as e:
        code = e.status if e.status in (400, 404) else 500
        raise errors.APIError(code, {400: "BadRequest", 404: "NotFound"}.get(code, "InternalError"),
                              f"unable to upgrade connection: {e.message}") from None
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise errors.APIError(500, "InternalError", f"unable to upgrade connection: {e}") from None
    ws = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (), autoping=True,
                               max_msg_size=0)
    await ws.prepare(request)
    try:
        await _relay(ws, upstream)
    finally:
        await upstream.close()
        await ws.close()
    return ws


async def _pipe(src, dst) -> None:
    """Forward every data message of WebSocket `src` to `dst` until `src` closes."""
    async for msg in src:
        if msg.type == aiohttp.WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == aiohttp.WSMsgType.TEXT:
            await dst.send_str(msg.data)


async def _relay(client: web.WebSocketResponse, kubelet: aiohttp.ClientWebSocketResponse) -> None:
    """Both ways, until either side closes."""
    tasks = [asyncio.ensure_future(_pipe(client, kubelet)), asyncio.ensure_future(_pipe(kubelet, client))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def add_routes(app: web.Application) -> None:
    """Register pods/log and pods/exec (before the generic resource routes, which would take them)."""
    app[STATE_KEY] = {}
    app.on_cleanup.append(_cleanup)
    base = "/api/v1/namespaces/{ns}/pods/{name}"
    app.router.add_get(base + "/log", pod_log)
    app.router.add_route("GET", base + "/exec", pod_exec)
    app.router.add_route("POST", base + "/exec", pod_exec)
