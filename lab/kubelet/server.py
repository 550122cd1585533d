"""The kubelet's server on the node's address, port 10250: what the API server proxies to.

    GET /healthz
    GET /containerLogs/<ns>/<pod>/<container>?follow&previous&tailLines&limitBytes
    GET /exec/<ns>/<pod>/<container>?command=..&stdin&stdout&stderr&tty   (WebSocket)

Requests carry the lab's admin token (the API server's). exec speaks the remotecommand channel
protocol over WebSocket (v5.channel.k8s.io, v4 without the close signal): one byte of channel
(0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, 255 close) then the data; the process's end
is a metav1.Status on the error channel, then a normal close. The command runs inside the
container (runtime.exec_argv: its mount, UTS and network namespaces), with a pty for tty.

aiohttp on an event loop of its own, in a thread of the kubelet.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import pty
import signal
import struct
import termios
import threading
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from . import logs, runtime

if TYPE_CHECKING:
    from .kubelet import Kubelet

log = logging.getLogger("kubelet.server")
PORT = 10250
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
FOLLOW_POLL = 0.2


def render_exit_status(command: list[str], code: int) -> dict:
    """What the error channel carries when the command ends (remotecommand's v4 protocol)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(command)}], exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


class KubeletServer:
    def __init__(self, kubelet: Kubelet, port: int = PORT):
        self.kl = kubelet
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), name="server", daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.container_logs)
        app.router.add_route("*", "/exec/{ns}/{pod}/{container}", self.exec)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.loop.run_until_complete(runner.setup())
        # every InternalIP the Node reports (the API server dials the first), and the underlay's IPv4
        for ip in dict.fromkeys((*self.kl.node_ips, self.kl.node_ip)):
            while True:
                try:
                    self.loop.run_until_complete(web.TCPSite(runner, ip, self.port,
                                                             reuse_address=True).start())
                    break
                except OSError as e:         # the address may not be up yet in a fresh node netns
                    log.warning("listen on %s:%d: %s", ip, self.port, e)
                    self.loop.run_until_complete(asyncio.sleep(1))
            log.info("serving on %s port %d", ip, self.port)
        ready.set()
        self.loop.run_forever()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.path != "/healthz" and request.headers.get("Authorization") != f"Bearer {self.kl.token}":
            return web.Response(status=401, text="Unauthorized")
        return await handler(request)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _container(self, request: web.Request):
        """(worker, container run) named by the URL, or an HTTP error the API server passes on."""
        ns, pod, name = request.match_info["ns"], request.match_info["pod"], request.match_info["container"]
        worker = self.kl.find_worker(ns, pod)
        if worker is None:
            raise web.HTTPNotFound(text=f'pod "{pod}" in namespace "{ns}" not found on node {self.kl.node}')
        run = worker.run_for(name)
        if run is None:
            raise web.HTTPBadRequest(text=f'container "{name}" in pod "{pod}" is not valid')
        return worker, run

    # --- logs -----------------------------------------------------------------------------------------
    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        worker, run = self._container(request)
        pod, name = worker.pod.name, run.spec.name
        try:
            tail = int(request.query["tailLines"]) if "tailLines" in request.query else None
            limit = int(request.query["limitBytes"]) if "limitBytes" in request.query else None
        except ValueError:
            raise web.HTTPBadRequest(text="tailLines and limitBytes must be integers") from None
        if _flag(request, "previous"):
            path = logs.previous_log(run.log_path, run.restarts)
            if path is None:
                raise web.HTTPBadRequest(text=f'previous terminated container "{name}" in pod "{pod}" not found')
            follow = False
        else:
            path = run.log_path
            if path is None:
                reason = run.reason or "ContainerCreating"
                raise web.HTTPBadRequest(text=f'container "{name}" in pod "{pod}" is waiting to start: {reason}')
            follow = _flag(request, "follow")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        data, offset = logs.read_tail(path, tail, limit)
        sent = len(data)
        if data:
            await resp.write(data)
        while follow and (limit is None or sent < limit):
            if request.transport is None or request.transport.is_closing():
                break
            chunk, offset = logs.read_from(path, offset)
            if chunk:
                if limit is not None:
                    chunk = chunk[: limit - sent]
                await resp.write(chunk)
                sent += len(chunk)
                continue
            if run.log_path != path or run.proc is None:
                chunk, offset = logs.read_from(path, offset)        # what was written before it ended
                if chunk:
                    await resp.write(chunk)
                break
            await asyncio.sleep(FOLLOW_POLL)
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    # --- exec -----------------------------------------------------------------------------------------
    async def exec(self, request: web.Request) -> web.StreamResponse:
        worker, run = self._container(request)
        proc = run.proc
        if proc is None or not run.running:
            raise web.HTTPNotFound(text=f'container not found ("{run.spec.name}")')
        command = request.query.getall("command", [])
        if not command:
            raise web.HTTPBadRequest(text="you must specify at least 1 command")
        ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True, max_msg_size=0)
        await ws.prepare(request)
        tty, stdin = _flag(request, "tty"), _flag(request, "stdin")
        session = ExecSession(ws, runtime.exec_argv(proc.pid, command), dict(run.env), tty, stdin,
                              ws.ws_protocol == PROTOCOLS[0])
        try:
            code = await session.run(lambda pid: self.kl.add_exec(worker.uid, pid))
        finally:
            if session.pid:
                self.kl.drop_exec(worker.uid, session.pid)
        if code is not None and not ws.closed:
            await ws.send_bytes(bytes([ERROR]) + json.dumps(render_exit_status(command, code)).encode())
        await ws.close()
        return ws


class ExecSession:
    """One command with its stdio relayed over a channel WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, argv: list[str], env: dict[str, str], tty: bool, stdin: bool,
                 v5: bool):
        self.ws, self.argv, self.env, self.tty, self.stdin, self.v5 = ws, argv, env, tty, stdin, v5
        self.pid = 0
        self.master = -1

    async def run(self, started) -> int | None:
        """The command's exit code, or None when the client went away first."""
        loop = asyncio.get_running_loop()
        if self.tty:
            self.master, slave = pty.openpty()
            os.set_blocking(self.master, False)
            # setsid -c: a session of its own with the pty as its controlling terminal (^C, job control)
            proc = await asyncio.create_subprocess_exec("setsid", "-c", *self.argv, stdin=slave, stdout=slave,
                                                        stderr=slave, env=self.env, close_fds=True)
            os.close(slave)
            outputs = [self._pump_pty(loop)]
        else:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE if self.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env, close_fds=True,
                start_new_session=True)
            outputs = [self._pump(proc.stdout, STDOUT), self._pump(proc.stderr, STDERR)]
        self.pid = proc.pid
        started(proc.pid)
        reader = asyncio.ensure_future(self._read_client(proc))
        pumps = asyncio.ensure_future(asyncio.gather(*outputs))
        waiter = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:                 # the client left: end the command
                _kill(proc)
                await proc.wait()
                return None
            await asyncio.wait({pumps}, timeout=5)
            rc = proc.returncode
            return rc if rc >= 0 else 128 - rc
        finally:
            for t in (reader, pumps, waiter):
                t.cancel()
            if self.master >= 0:
                loop.remove_reader(self.master)
                os.close(self.master)
                self.master = -1

    async def _send(self, channel: int, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(bytes([channel]) + data)

    async def _pump(self, stream: asyncio.StreamReader | None, channel: int) -> None:
        while stream is not None:
            data = await stream.read(32768)
            if not data:
                return
            await self._send(channel, data)

    async def _pump_pty(self, loop: asyncio.AbstractEventLoop) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(self.master, 32768)
            except BlockingIOError:
                return
            except OSError:                    # EIO: every slave end is closed (the command ended)
                data = b""
            if not data:
                loop.remove_reader(self.master)
            queue.put_nowait(data)
        loop.add_reader(self.master, readable)
        while True:
            data = await queue.get()
            if not data:
                return
            await self._send(STDOUT, data)

    async def _read_client(self, proc: asyncio.subprocess.Process) -> None:
        """stdin, resize and close messages from the client; returns when the client has gone."""
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN and self.stdin:
                if self.tty:
                    _write_all(self.master, data)
                elif proc.stdin is not None:
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            elif channel == RESIZE and self.tty:
                _resize(self.master, data)
            elif channel == CLOSE and self.v5 and data[:1] == bytes([STDIN]):
                if not self.tty and proc.stdin is not None:
                    proc.stdin.close()
                elif self.tty:
                    _write_all(self.master, b"\x04")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[n:]


def _resize(fd: int, data: bytes) -> None:
    try:
        size = json.loads(data)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0))
    except (ValueError, KeyError, TypeError, OSError):
        pass


def _kill(proc: asyncio.subprocess.Process) -> None:
    for sig in (signal.SIGHUP, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

