"""For tests of the cluster DNS: a TCP relay that makes the root netns' loopback API server reachable
at the same 127.0.0.1:PORT inside a scratch netns (so a process there uses the lab kubeconfig as
it is), and the DNS server run inside that netns."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from kubeweft.lab import netns

from .apiserver_proc import terminate

ROOT = Path(__file__).resolve().parents[2]


class LoopbackRelay:
    """Accepts on 127.0.0.1:port inside `ns` (whose lo must be up) and joins each connection to 127.0.0.1:port of the root
    netns. The listening socket is made on a thread inside the netns; the threads that connect out
    are this process's own, in the root netns. Traffic stays on the two loopbacks."""

    def __init__(self, ns: str, port: int):
        self.port = port
        self.listener = netns.call_in(ns, self._listen, port)
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="relay-accept").start()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen(64)
        return s

    def _accept(self) -> None:
        while True:
            try:
                inside, _ = self.listener.accept()
            except OSError:
                return
            try:
                outside = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                inside.close()
                continue
            outside.settimeout(None)
            with self._lock:
                self._socks += [inside, outside]
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True, name="relay").start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


class DnsProcess:
    """`python -m kubeweft.lab.dns` inside `ns`, DNS on addr:53, /metrics, /health, /ready on
    CoreDNS's ports of the same address."""

    def __init__(self, ns: str, kubeconfig: Path, addr: str, log: Path, *extra: str):
        self.ns, self.addr = ns, addr
        self.log = open(log, "ab")  # noqa: SIM115 (open while the server runs)
        self.proc = subprocess.Popen(
            # nsenter, not a preexec_fn: this test process runs threads
            ["nsenter", f"--net={netns.path(ns)}", sys.executable, "-m", "kubeweft.lab.dns", "--kubeconfig", str(kubeconfig), "--listen", addr,
             "--metrics", f"{addr}:9153", "--health", f"{addr}:8080", "--ready", f"{addr}:8181", "--lameduck", "0s", *extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, port: int, path: str) -> tuple[int, str]:
        def fetch() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://{self.addr}:{port}{path}", timeout=1) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            except OSError:
                return 0, ""
        return netns.call_in(self.ns, fetch)

    def ready(self) -> bool:
        return self.get(8181, "/ready")[0] == 200

    def stop(self) -> int | None:
        code = terminate(self.proc)
        self.log.close()
        return code
