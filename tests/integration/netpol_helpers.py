"""Shared helpers of the NetworkPolicy lab tests: the x/y/z world on the shared `klab` labs (once per
IP family: its pods, nodes, Services and the external host by their addresses of `klab.version`), policies
through the real kubectl, and truth tables probed with real packets and compared with the
model (lab/truth_table.py).

    from tests.integration.netpol_helpers import xyz, Sources, apply_policies, ...

`xyz` (module fixture) creates the world (lab.matrix.ensure_world: namespaces x y z labelled
ns=..., pods a b c with ports 80/81 TCP+UDP named serve-<port>-<proto>, Services s-a s-b s-c),
routes the external host to the pod CIDRs (the lab's "cloud route table", which kubeweft mode
does not install by itself), and removes all of it afterwards, also on failure.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubeweft.lab import matrix, topology
from kubeweft.lab.truth_table import Endpoint, diff_tables, expected_table

ROOT = Path(__file__).resolve().parents[2]
NAMESPACES = matrix.XYZ_NAMESPACES
PORTS = matrix.XYZ_PORTS
PROBE_TIMEOUT = 0.6           # per probe; a denied probe costs exactly this
SETTLE = 12.0                 # how long the agent may take to converge on a policy change


@dataclass
class XYZ:
    lab: object                           # conftest.Lab
    world: matrix.World
    nodes: list[tuple[str, str, str]]     # (name, podCIDR, InternalIP) of the family probed

    @property
    def version(self) -> int:
        """The IP version the probes use (klab.version)."""
        return self.lab.version

    def pods(self) -> list[Endpoint]:
        return self.world.endpoints(self.version)

    def pod(self, key: str) -> Endpoint:
        return next(p for p in self.pods() if p.key == key)

    def refresh(self) -> None:
        """Re-read the world (labels after a relabel)."""
        self.world = matrix.collect_world(self.lab.cfg)

    def node_sources(self) -> list[tuple[Endpoint, str]]:
        return [(Endpoint(f"node:{n}", ip, node=n), self.lab.cfg.node_netns(n)) for n, _, ip in self.nodes]

    def external(self) -> tuple[Endpoint, str]:
        cfg = self.lab.cfg
        return Endpoint("external", cfg.external_ip6 if self.version == 6 else cfg.external_ip), cfg.external_netns

    def subnets(self) -> tuple[str, str]:
        """(the pods' cluster CIDR, the external host's subnet) of the family probed."""
        cfg = self.lab.cfg
        return (cfg.cluster_cidr6, cfg.external_subnet6) if self.version == 6 else \
            (cfg.cluster_cidr, cfg.external_subnet)


def host_cidr(ip: str) -> str:
    """The ipBlock of one address: /32, or /128 for IPv6."""
    return f"{ip}/{128 if ':' in ip else 32}"


def _nodes(lab) -> list[tuple[str, str, str]]:
    """(name, podCIDR, InternalIP) of every node, of the family `lab.version`."""
    doc = json.loads(lab.kubectl("get", "nodes", "-o", "json").stdout)
    out = []
    for n in doc["items"]:
        ip = lab.pick([a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"])
        cidr = lab.pick(n["spec"].get("podCIDRs") or [n["spec"]["podCIDR"]])
        out.append((n["metadata"]["name"], cidr, ip))
    return sorted(out)


def delete_world(lab) -> None:
    for ns in NAMESPACES:
        lab.kubectl("delete", "networkpolicy", "--all", "-n", ns, "--ignore-not-found", "--wait=false",
                    check=False, timeout=30)
        lab.kubectl("delete", "pod,service", "--all", "-n", ns, "--grace-period=0", "--ignore-not-found",
                    "--wait=false", check=False, timeout=30)
    lab.kubectl("delete", "namespace", *NAMESPACES, "--ignore-not-found", "--wait=false", check=False, timeout=30)


@pytest.fixture(scope="module")
def xyz(klab) -> Iterator[XYZ]:
    labk = klab
    nodes = _nodes(labk)
    routes = topology.plan_pod_cidr_routes(labk.cfg, nodes)
    try:
        matrix.ensure_world(labk.cfg, timeout=90)
        topology.apply_steps(routes)
        for ns in NAMESPACES:           # a previous run's leftovers must not skew the first case
            labk.kubectl("delete", "networkpolicy", "--all", "-n", ns, check=False, timeout=30)
        yield XYZ(labk, matrix.collect_world(labk.cfg), nodes)
    finally:
        topology.apply_steps(topology.plan_underlay_route_removal(labk.cfg, [c for _, c, _ in nodes])) \
            if _routes_present(labk, nodes) else None
        delete_world(labk)


def _routes_present(lab, nodes) -> bool:
    out = lab.run_in(lab.cfg.underlay_netns, ["ip", f"-{lab.version}", "route", "show"]).stdout
    return any(cidr in out for _, cidr, _ in nodes)


# --- policies ------------------------------------------------------------------------------------
def netpol(ns: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def apply_policies(lab, policies: Sequence[dict]) -> None:
    if policies:
        # a YAML stream of JSON documents: kubectl cannot validate a v1 List against this server
        lab.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(p) for p in policies), timeout=60)


def delete_policies(lab) -> None:
    for ns in NAMESPACES:
        lab.kubectl("delete", "networkpolicy", "--all", "-n", ns, "--ignore-not-found", check=False, timeout=30)


# --- tables --------------------------------------------------------------------------------------
Key = tuple[str, str, int, str]


def plan(xyz: XYZ, via: str, *, pods: bool = True, nodes: bool = False,
         external: bool = False) -> tuple[list[matrix.Probe], list[Endpoint], list[Endpoint]]:
    """Probes and the model's (sources, destinations). Nodes probe only their own pods (the
    only node traffic the semantics fix); the external host probes pod IPs only."""
    dest_eps = xyz.pods()
    addr = dict(xyz.world.dests(via, xyz.version))
    probes: list[matrix.Probe] = []
    sources: list[Endpoint] = []
    if pods:
        netns = dict(xyz.world.sources())
        for src in xyz.pods():
            sources.append(src)
            # by Service, a pod to itself hairpins through the node: no fixed answer, left out
            probes += [matrix.Probe(src.key, netns[src.key], d.key, addr[d.key], port, proto)
                       for d in dest_eps if via == "pod" or d.key != src.key for port, proto in PORTS]
    if nodes:
        for ep, ns in xyz.node_sources():
            sources.append(ep)
            probes += [matrix.Probe(ep.key, ns, d.key, addr[d.key], port, proto)
                       for d in dest_eps if d.node == ep.node for port, proto in PORTS]
    if external and via == "pod":
        ep, ns = xyz.external()
        sources.append(ep)
        probes += [matrix.Probe(ep.key, ns, d.key, addr[d.key], port, proto)
                   for d in dest_eps for port, proto in PORTS]
    return probes, sources, dest_eps


def probe_table(probes: Sequence[matrix.Probe]) -> tuple[dict[Key, bool], list[dict]]:
    results = matrix.run_probes(probes, PROBE_TIMEOUT, workers=64)
    table = {(r["from"], r["to"], r["port"], r["proto"]): matrix.cell_value(r) == "connected" for r in results}
    return table, results


def check_table(xyz: XYZ, policies: Sequence[dict], via: str = "pod", *, nodes: bool = False,
                external: bool = False, settle: float = SETTLE) -> dict[Key, bool]:
    """Probe until the real table equals the model's (the agent converges within `settle`
    seconds), else fail with the differing cells and the drawn table. Returns the table."""
    probes, sources, dests = plan(xyz, via, nodes=nodes, external=external)
    full = expected_table(policies, sources, dests, PORTS)
    probed = {(p.source, p.dest, p.port, p.proto) for p in probes}
    want = {k: v for k, v in full.items() if k in probed}
    deadline = time.monotonic() + settle
    while True:
        got, results = probe_table(probes)
        diff = diff_tables(want, got)
        if not diff:
            return got
        if time.monotonic() > deadline:
            drawn = "\n".join(matrix.render_world(results, want, via))
            pytest.fail(f"{len(diff)} cells differ from the model (via {via}) after {settle:g} s:\n"
                        + "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else "") + "\n\n" + drawn,
                        pytrace=False)
        time.sleep(0.3)


# --- the attacker of the race test ---------------------------------------------------------------
def flood(cidr: str, port: int, seconds: float, skip: int = 1, limit: int = 254) -> dict:
    """Until SIGTERM (or `seconds`): to every address of `cidr` (after the first `skip` hosts,
    the bridge; at most `limit` of them: an IPv6 /64 is walked from its start, where the IPAM
    hands out addresses in order), again and again, a TCP SYN (non-blocking connect) and a UDP "whoami" on
    `port`. Records every answer a workload gave (TCP: connected, then "whoami" answered;
    UDP: a reply), with the wall-clock time it arrived, and counts RSTs per address."""
    import errno
    import ipaddress
    import itertools
    import select
    import signal
    import socket

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    net = ipaddress.ip_network(cidr)
    family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    hosts = [str(h) for h in itertools.islice(net.hosts(), skip, skip + limit)]
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.setblocking(False)
    answers: list[dict] = []
    refused: dict[str, int] = {}
    rounds = syns = dgrams = 0
    end = time.monotonic() + seconds

    def drain_udp() -> None:
        while True:
            try:
                data, peer = udp.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            answers.append({"t": time.time(), "proto": "UDP", "ip": peer[0], "answer": data.decode("utf-8", "replace")})

    while not stop["now"] and time.monotonic() < end:
        rounds += 1
        socks: dict[socket.socket, str] = {}
        for ip in hosts:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((ip, port))
            socks[s] = ip
            syns += 1
            try:
                udp.sendto(b"whoami", (ip, port))
                dgrams += 1
            except OSError:
                pass
        t_end = time.monotonic() + 0.03
        pending = dict(socks)
        while pending and time.monotonic() < t_end:
            _, writable, _ = select.select([], list(pending), [], max(0.0, t_end - time.monotonic()))
            for s in writable:
                ip = pending.pop(s)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    s.setblocking(True)
                    s.settimeout(0.3)
                    try:
                        s.sendall(b"whoami\n")
                        data = s.recv(2048)
                    except OSError:
                        data = b""
                    answers.append({"t": time.time(), "proto": "TCP", "ip": ip,
                                    "answer": data.decode("utf-8", "replace")})
                elif err in (errno.ECONNREFUSED, errno.ECONNRESET):
                    refused[ip] = refused.get(ip, 0) + 1
            drain_udp()
        for s in socks:
            s.close()
        drain_udp()
    return {"rounds": rounds, "syns": syns, "datagrams": dgrams, "answers": answers, "refused": refused,
            "addresses": len(hosts)}


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["flood"]:
        print(json.dumps(flood(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))), flush=True)
