"""Load-balancing schedulers with real traffic: TCP connections per scheduler from the external
host to a NodePort on node1, each from one of many client addresses (extra addresses of the
external host, in the lab's external subnet of the family, so the replies route back), and the
pod that answered each one. Runs in every IP family (`klab`; on a dual-stack lab over the IPv6
NodePort of RequireDualStack Services).

- random: every endpoint gets roughly a third;
- rr: the endpoints in turn, exactly (each a third, give or take one; sequential connections
  cycle with period 3);
- sh: each client address always reaches one endpoint, and the clients spread over all of them;
- maglev: sticky as sh; an endpoint added takes about 1/(N+1) of the clients and the others
  mostly stay; an endpoint removed moves its own clients and few others (the fractions are
  printed and compared with what Maglev's table allows: tests/unit/test_maglev.py).

The same 1,000 connections per scheduler in every family: on a shared 2-core machine the
file's tests took 25 s per family at load average 45, of which Maglev's (every client's
endpoint read three times, 3,000 connections) 8-15 s; Maglev's took 30 s at load average 80.

    node1: the NodePort's node    node2, node3: the endpoints
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ipaddress
import json
import socket
import subprocess
from pathlib import Path

import pytest
from kubeweft.lab import install
from kubeweft.lab import netns as lab_netns
from kubeweft.lab.config import EXT_UPLINK
from kubeweft.lab.probe import parse_answer

from .services_helpers import cluster, family_of, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

NS = "h15-sched"
KUBEWEFT = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubeweft")
CLIENT_COUNT = 100              # extra addresses of the external host, offsets 100.. of its subnet
CONNECTIONS = 1000


def client_addresses(subnet: str) -> list[str]:
    net = ipaddress.ip_network(subnet)
    return [str(net[i]) for i in range(100, 100 + CLIENT_COUNT)]


def connect(netns_name: str, source: str, host: str, port: int, timeout: float = 3.0) -> str | None:
    """One TCP connection from `source` (an address of the netns) -> the answering pod's name."""
    with lab_netns.entered(netns_name):
        sock = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        sock.connect((host, port))
        sock.sendall(f"GET /whoami HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        pod, _ = parse_answer(data)
        return pod.rpartition("/")[2] if pod else None
    except OSError:
        return None
    finally:
        sock.close()


@pytest.fixture(scope="module")
def c(klab):
    ext = klab.cfg.external_netns
    six = klab.version == 6
    clients = client_addresses(klab.cfg.external_subnet6 if six else klab.cfg.external_subnet)
    added = []
    try:
        for a in clients:
            # nodad: an address still in DAD cannot be bound
            subprocess.run(["ip", "-n", ext, "addr", "add", f"{a}/{128 if six else 32}", "dev", EXT_UPLINK,
                            *(["nodad"] if six else [])], check=True, timeout=10)
            added.append(a)
        with cluster(klab, NS) as cl:
            cl.clients = clients
            cl.start_pods(web={"web-1": "node2", "web-2": "node3", "web-3": "node2"})
            for name, node in (("mh-1", "node2"), ("mh-2", "node3"), ("mh-3", "node2"), ("mh-4", "node3")):
                cl.pod(name, node, ports=[{"containerPort": 8080, "name": "http"}], labels={"app": "mh"})
            cl.wait_ready("mh-1", "mh-2", "mh-3", "mh-4")
            cl.svcs = {}
            for sched in ("random", "rr", "sh", "maglev"):
                svc = cl.service(sched, [svc_port(80, "http")], selector={"app": "mh" if sched == "maglev" else "web"},
                                 type_="NodePort", annotations={"kubeweft.io/scheduler": sched})
                cl.svcs[sched] = next(iter(svc.node_ports.values()))
            cl.ext = ext
            cl.node1 = cl.node_ip["node1"]
            for sched, count in (("random", 3), ("rr", 3), ("sh", 3), ("maglev", 4)):
                wait_frontend(cl, sched, count)
            yield cl
    finally:
        for a in added:
            subprocess.run(["ip", "-n", ext, "addr", "del", f"{a}/{128 if six else 32}", "dev", EXT_UPLINK],
                           timeout=10, check=False)


def frontends(c) -> dict[str, dict]:
    """node1's frontends for every client, of the Cluster's family (on a dual-stack lab a
    nodePort is listed once per family's table, told apart by its backends' addresses)."""
    proc = c.lab.cli("node-exec", "node1", "--", KUBEWEFT, "services", "--json", timeout=60)
    six = c.version == 6
    return {f["address"]: f for f in json.loads(proc.stdout)
            if f["clients"] == "all" and all(b.startswith("[") == six for b in f["backends"])}


def wait_frontend(c, sched: str, endpoints: int) -> dict:
    """node1's NodePort frontend of Service `sched`, once it spreads over that many endpoints."""
    address = f"*:{c.svcs[sched]}/tcp"

    def ready():
        f = frontends(c).get(address)
        return f if f and f["action"] == "spread" and len(set(f["backends"])) == endpoints else None
    f = wait_for(f"{address} over {endpoints} endpoints", ready, timeout=60, interval=1.0)
    assert f["scheduler"] == sched, f
    return f


def run(c, sched: str, sources: list[str], parallel: int = 8) -> list[tuple[str, str | None]]:
    """(source, pod) of one connection per item of sources, in order of sources when parallel=1."""
    port = c.svcs[sched]
    if parallel == 1:
        return [(s, connect(c.ext, s, c.node1, port)) for s in sources]
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        return list(zip(sources, pool.map(lambda s: connect(c.ext, s, c.node1, port), sources)))


def test_random_spreads_roughly_evenly(c):
    got = run(c, "random", [c.clients[i % len(c.clients)] for i in range(CONNECTIONS)])
    counts = collections.Counter(p for _, p in got)
    print("random:", dict(counts))
    assert None not in counts and set(counts) == {"web-1", "web-2", "web-3"}
    # a third each: 333 +- 14.9 (one standard deviation); 6 of them either way is a broken spread
    assert all(245 <= n <= 422 for n in counts.values()), counts


def test_round_robin_rotates_exactly(c):
    seq = [p for _, p in run(c, "rr", [c.clients[0]] * 30, parallel=1)]
    assert None not in seq and len(set(seq[:3])) == 3
    assert seq == seq[:3] * 10, seq                      # the same order, again and again
    got = run(c, "rr", [c.clients[i % len(c.clients)] for i in range(CONNECTIONS - 30)])
    counts = collections.Counter(seq) + collections.Counter(p for _, p in got)
    print("rr:", dict(counts))
    assert None not in counts and max(counts.values()) - min(counts.values()) <= 1, counts


def test_source_hash_keeps_each_client_on_one_endpoint(c):
    sources = [c.clients[i % 20] for i in range(CONNECTIONS)]     # 20 clients, 50 connections each
    got = run(c, "sh", sources)
    per_client = collections.defaultdict(set)
    for s, p in got:
        per_client[s].add(p)
    print("sh:", {s: sorted(p) for s, p in per_client.items()})
    assert all(len(p) == 1 and None not in p for p in per_client.values()), per_client
    assert len({next(iter(p)) for p in per_client.values()}) >= 2      # the clients are spread


def endpoint_of_each_client(c) -> dict[str, str]:
    """Maglev's choice for every client address, each asked 10 times (all 10 must agree)."""
    got = run(c, "maglev", [s for s in c.clients for _ in range(10)])
    per_client = collections.defaultdict(set)
    for s, p in got:
        per_client[s].add(p)
    assert all(len(p) == 1 and None not in p for p in per_client.values()), per_client
    return {s: next(iter(p)) for s, p in per_client.items()}


def test_maglev_moves_few_clients_when_an_endpoint_comes_or_goes(c):
    before = endpoint_of_each_client(c)
    n = 4
    assert len(set(before.values())) == n, collections.Counter(before.values())
    # one endpoint added: its clients come from the others, the rest stay
    c.pod("mh-5", "node3", ports=[{"containerPort": 8080, "name": "http"}], labels={"app": "mh"})
    c.wait_ready("mh-5")
    wait_frontend(c, "maglev", n + 1)
    added = endpoint_of_each_client(c)
    moved = [s for s in c.clients if added[s] != before[s]]
    to_new = [s for s in moved if added[s] == "mh-5"]
    share = len(moved) / len(c.clients)
    print(f"maglev, endpoint added: {len(moved)} of {len(c.clients)} clients moved ({share:.0%}), "
          f"{len(to_new)} to the new endpoint; 1/(N+1) = {1 / (n + 1):.0%}, Maglev's bound 2.8/(N+1) = "
          f"{2.8 / (n + 1):.0%}")
    assert to_new and share <= 2.8 / (n + 1) + 0.1
    # one endpoint removed: its clients move, and few others
    gone = "mh-2"
    c.delete_pod(gone)
    wait_frontend(c, "maglev", n)
    removed = endpoint_of_each_client(c)
    assert gone not in removed.values()
    others = [s for s in c.clients if added[s] != gone]
    others_moved = [s for s in others if removed[s] != added[s]]
    share = len(others_moved) / len(others)
    print(f"maglev, endpoint removed: {len(c.clients) - len(others)} clients of it moved; "
          f"{len(others_moved)} of the other {len(others)} moved ({share:.0%}); Maglev's bound 1.8/N = "
          f"{1.8 / (n + 1):.0%} (N = {n + 1})")
    assert share <= 1.8 / (n + 1) + 0.1


def test_a_bad_annotation_gets_the_default_and_one_log_line(c):
    svc = c.service("bad", [svc_port(80, "http")], selector={"app": "web"}, type_="NodePort",
                    annotations={"kubeweft.io/scheduler": "wlc"})
    c.svcs["bad"] = next(iter(svc.node_ports.values()))
    address = f"*:{c.svcs['bad']}/tcp"
    f = wait_for(f"{address} programmed", lambda: frontends(c).get(address), timeout=60, interval=1.0)
    assert f["scheduler"] == "random" and f["action"] == "spread"

    def logged():
        with contextlib.suppress(FileNotFoundError):
            return f"{NS}/bad skipped: kubeweft.io/scheduler 'wlc' names no scheduler" in \
                install.agent_log_text(c.cfg, "node1")
    wait_for("the warning in node1's agent log", logged, timeout=10)
