"""The pod workload and the probe, on real sockets between two scratch network namespaces.

    h5p<pid>-node1 (client) eth0 10.250.0.1/24 <-veth-> eth0 10.250.0.2/24 h5p<pid>-pod (workload)

The client netns is named like a lab node so that `kubeweft lab --name h5p<pid> probe
--from node:node1` resolves it; nothing here needs a running lab.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubeweft.lab import netns
from kubeweft.lab.probe import probe_once

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
LAB = f"h5p{os.getpid()}"
CLIENT_NS, SERVER_NS = f"{LAB}-node1", f"{LAB}-pod"
CLIENT_IP, SERVER_IP = "10.250.0.1", "10.250.0.2"
POD = "h5/web-0"

if os.geteuid() != 0:
    pytest.skip("needs root (network namespaces)", allow_module_level=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


@pytest.fixture(scope="module")
def pair():
    """Two netns joined by a veth pair made inside the client netns (never in the root one)."""
    try:
        for ns in (CLIENT_NS, SERVER_NS):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", CLIENT_NS, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", SERVER_NS)
        for ns, addr in ((CLIENT_NS, CLIENT_IP), (SERVER_NS, SERVER_IP)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        yield
    finally:
        for ns in (CLIENT_NS, SERVER_NS):
            subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=10, capture_output=True)


class Workload:
    def __init__(self, ports: str, *extra: str, pod: str = POD, ns: str = SERVER_NS) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [PY, "-m", "kubeweft.lab.workload", "--lab", LAB, "--pod", pod, "--ports", ports, *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=netns.preexec(ns))  # noqa: PLW1509
        ready, _, _ = select.select([self.proc.stdout], [], [], 5)
        line = self.proc.stdout.readline() if ready else b""
        self.startup = time.monotonic() - self.started
        if line != b"ready\n":
            self.proc.kill()
            err = self.proc.communicate(timeout=5)[1]
            raise AssertionError(f"workload not ready: {line!r} {err!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture(scope="module")
def workload(pair):
    wl = Workload("80/TCP,81/UDP,82/TCP,9/SCTP")
    # Port 82 is dropped inside the server netns (never root): the "dropped path" case.
    netns.run(SERVER_NS, ["nft", "-f", "-"], check=True, timeout=10, input=(
        b"table inet h5drop {\n chain input {\n type filter hook input priority 0; policy accept;\n"
        b" tcp dport 82 drop\n udp dport 82 drop\n }\n}\n"))
    try:
        yield wl
    finally:
        wl.stop()


def from_client(fn, *args, **kwargs):
    """Run fn on a worker thread that is inside the client netns."""
    def inside():
        with netns.entered(CLIENT_NS):
            return fn(*args, **kwargs)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(inside).result(timeout=30)


def probe(port: int, udp: bool = False, host: str = SERVER_IP, timeout: float = 1.0) -> dict:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(probe_once, CLIENT_NS, host, port, udp=udp, timeout=timeout).result(30)


def test_workload_says_ready_and_loads_only_the_standard_library(workload):
    # Start-up speed itself is a benchmark matter; what keeps it fast is that the workload
    # (one process per pod) imports nothing heavy.
    assert workload.startup > 0
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import kubeweft.lab.workload"],
                          capture_output=True, text=True, timeout=30, check=True)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"kubernetes", "pyroute2", "aiohttp", "yaml", "grpc", "urllib3", "nftables"}


@pytest.mark.parametrize("port,udp", [(80, False), (80, True), (81, False), (81, True)])
def test_probe_connects_on_tcp_and_udp_of_every_port(workload, port, udp):
    r = probe(port, udp)
    assert r["outcome"] == "connected", r
    assert r["pod"] == POD
    host, _, cport = r["client"].rpartition(":")
    assert host == CLIENT_IP and 1024 <= int(cport) < 65536
    assert r["proto"] == ("udp" if udp else "tcp")


@pytest.mark.parametrize("udp", [False, True])
def test_closed_port_is_refused(workload, udp):
    # TCP: the kernel answers RST; UDP: ICMP port unreachable, seen on the connected socket.
    r = probe(9999, udp)
    assert r["outcome"] == "refused", r
    assert r["pod"] is None and r["client"] is None
    assert r["ms"] < 500


def test_sctp_port_is_skipped_not_served(workload):
    assert probe(9)["outcome"] == "refused"


@pytest.mark.parametrize("udp", [False, True])
def test_dropped_path_times_out(workload, udp):
    r = probe(82, udp, timeout=0.6)
    assert r["outcome"] == "timeout", r
    assert 500 <= r["ms"] < 2000


def test_address_without_route_is_unreachable(workload):
    for udp in (False, True):
        r = probe(80, udp, host="10.251.0.1")
        assert r["outcome"] == "unreachable", r


def test_http_endpoints_and_keepalive(workload):
    def session():
        c = http.client.HTTPConnection(SERVER_IP, 80, timeout=5)
        out = []
        for path in ("/hostname", "/clientip", "/whoami", "/ready", "/ready/off", "/ready",
                     "/ready/on", "/ready", "/nope"):
            c.request("GET", path)
            resp = c.getresponse()
            out.append((resp.status, resp.read().decode()))
        local = c.sock.getsockname()
        c.close()
        return out, f"{local[0]}:{local[1]}"
    out, me = from_client(session)
    # one connection carried every request (keep-alive), so the server saw the same client
    assert out[0] == (200, "web-0")
    assert out[1] == (200, me)
    assert json.loads(out[2][1]) == {"pod": POD, "client": me}
    assert [s for s, _ in out[3:]] == [200, 200, 503, 200, 200, 404]


def test_plain_tcp_lines(workload):
    def lines():
        s = socket.create_connection((SERVER_IP, 81), timeout=5)
        s.sendall(b"hostname\nwhoami\n")
        f = s.makefile("rb")
        got = [f.readline(), f.readline()]
        s.close()
        return got
    got = from_client(lines)
    assert got[0] == b"web-0\n"
    assert json.loads(got[1])["pod"] == POD


def test_probe_cli_from_a_node_and_from_a_pod(workload, tmp_path):
    """The real CLI: --from node:NAME names the node netns, --from NS/POD reads pods.json."""
    (tmp_path / LAB / "nodes" / "node1").mkdir(parents=True)
    (tmp_path / LAB / "nodes" / "node1" / "pods.json").write_text(json.dumps(
        {"uid-1": {"namespace": "h5", "name": "client", "netns": CLIENT_NS, "ip": CLIENT_IP,
                   "containerID": "c1", "pid": 1}}))
    env = dict(os.environ, KUBEWEFT_LAB_ROOT=str(tmp_path))
    base = [PY, "-m", "kubeweft", "lab", "--name", LAB, "probe"]
    for source in ("node:node1", "h5/client"):
        res = subprocess.run([*base, "--from", source, "--count", "2", "--json", f"{SERVER_IP}:80"],
                             check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        lines = [json.loads(line) for line in res.stdout.splitlines()]
        assert len(lines) == 2
        assert all(r["outcome"] == "connected" and r["pod"] == POD for r in lines)
        assert all(r["client"].startswith(CLIENT_IP + ":") for r in lines)
    res = subprocess.run([*base, "--from", "h5/client", "--udp", "--timeout", "0.5", f"{SERVER_IP}:9999"],
                         check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stdout.startswith("refused")
    res = subprocess.run([*base, "--from", "h5/nobody", f"{SERVER_IP}:80"],
                         check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "h5/nobody" in res.stderr


def test_sigterm_exits_at_once(pair):
    wl = Workload("7000/TCP", pod="h5/term-now")
    try:
        t = time.monotonic()
        wl.proc.send_signal(signal.SIGTERM)
        wl.proc.wait(2)
        assert time.monotonic() - t < 0.5
        assert probe(7000, timeout=0.5)["outcome"] == "refused"
    finally:
        wl.stop()


def test_term_delay_keeps_serving(pair):
    wl = Workload("7001/TCP", "--term-delay", "1.5", pod="h5/term-late")
    try:
        t = time.monotonic()
        wl.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert wl.proc.poll() is None
        r = probe(7001, timeout=0.5)
        assert r["outcome"] == "connected" and r["pod"] == "h5/term-late"
        assert probe(7001, udp=True, timeout=0.5)["outcome"] == "connected"
        wl.proc.wait(5)
        assert 1.4 <= time.monotonic() - t < 3.0
        assert wl.proc.returncode == 0
    finally:
        wl.stop()


def test_matrix_cli_without_an_api_server(pair, tmp_path):
    """`lab matrix` falls back to pods.json (ports 8080 TCP+UDP) when the API is not there: a
    workload in each netns, four probes from each, all connected and drawn."""
    client_wl = None
    server_wl = Workload("", pod="h5/server")
    try:
        client_wl = Workload("", pod="h5/client", ns=CLIENT_NS)
        node = tmp_path / LAB / "nodes" / "node1"
        node.mkdir(parents=True)
        (node / "pods.json").write_text(json.dumps({
            "u1": {"namespace": "h5", "name": "client", "netns": CLIENT_NS, "ip": CLIENT_IP},
            "u2": {"namespace": "h5", "name": "server", "netns": SERVER_NS, "ip": SERVER_IP}}))
        env = dict(os.environ, KUBEWEFT_LAB_ROOT=str(tmp_path))
        res = subprocess.run([PY, "-m", "kubeweft", "lab", "--name", LAB, "matrix"], check=False, cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "API not reachable" in res.stderr
        lines = res.stdout.splitlines()
        assert lines[-1] == "8/8 connected"
        assert "8080/TCP" in res.stdout and "8080/UDP" in res.stdout
        assert sum(line.count("✓") for line in lines if line.startswith(("client", "server"))) == 8, res.stdout
    finally:
        server_wl.stop()
        if client_wl:
            client_wl.stop()
