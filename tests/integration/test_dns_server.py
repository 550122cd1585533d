"""The cluster DNS as a process: a lab API server alone, `python -m kubeweft.lab.dns` in a scratch
netns serving on an address there, Services and EndpointSlices made with the real kubectl, and
questions asked from inside that netns with dnspython (its resolver with a pod's search list and
ndots, and raw UDP and TCP): the specification's records, truncation over UDP with the TCP retry,
a deleted Service gone within 1 s, and a restart that a client keeping one UDP socket rides out."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import dns.reversename
import pytest
from kubeweft.lab import netns

from .apiserver_proc import Server
from .dns_helpers import DnsProcess, LoopbackRelay
from .netns_helpers import scratch_netns
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ADDR = "10.53.0.10"
NS = "dnstest"

def service(name: str, spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def written_slice(service_name: str, endpoints: list[dict], ports: list[dict]) -> dict:
    """An EndpointSlice written by the test, not the controller (another managed-by)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service_name}-written", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": service_name,
                                    "endpointslice.kubernetes.io/managed-by": "tests"}},
            "ports": ports, "endpoints": endpoints}


def endpoint(ip: str, hostname: str = "", ready: bool = True) -> dict:
    return {"addresses": [ip], "conditions": {"ready": ready}, **({"hostname": hostname} if hostname else {})}


PG = {"name": "pg", "port": 5432, "protocol": "TCP"}
OBJECTS = [
    service("web", {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                                          {"name": "metrics", "port": 9100, "protocol": "UDP"}]}),
    service("stable", {"ports": [{"port": 8080}]}),
    service("db", {"clusterIP": "None", "selector": {"app": "db"}, "ports": [PG]}),
    written_slice("db", [endpoint("10.244.1.10", "db-0"), endpoint("10.244.1.11"),
                         endpoint("10.244.1.12", "db-2", ready=False)], [PG]),
    service("ext", {"type": "ExternalName", "externalName": "www.example.com"}),
    service("many", {"clusterIP": "None", "ports": [{"port": 80}]}),
    written_slice("many", [endpoint(f"10.244.2.{i}") for i in range(1, 101)], []),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dns")
    api = Server(tmp, f"dns{os.getpid()}")
    try:
        with scratch_netns("h14d") as (ns,):
            for argv in (["link", "set", "lo", "up"], ["addr", "add", f"{ADDR}/32", "dev", "lo"]):
                subprocess.run(["ip", "-n", ns, *argv], check=True, timeout=10)
            relay = LoopbackRelay(ns, api.ready["port"])
            try:
                api.kubectl("create", "namespace", NS)
                api.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                 "items": OBJECTS}))
                api.kubectl("create", "-n", NS, "-f", "-",
                            input="apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                                  "spec: {containers: [{name: c, image: any}]}\n")
                api.kubectl("patch", "-n", NS, "pod", "p", "--subresource=status", "--type=merge", "-p",
                            '{"status": {"podIP": "10.244.3.7", "podIPs": [{"ip": "10.244.3.7"}]}}')
                yield api, ns, tmp
            finally:
                relay.close()
    finally:
        api.stop()


@pytest.fixture
def dns_server(setup):
    api, ns, tmp = setup
    procs: list[DnsProcess] = []

    def start() -> DnsProcess:
        p = DnsProcess(ns, api.kubeconfig, ADDR, tmp / "dns.log", "--pods", "verified")
        procs.append(p)
        wait_for("the DNS server's /ready", lambda: p.proc.poll() is not None or p.ready(), 30, 0.05)
        assert p.proc.poll() is None, (tmp / "dns.log").read_text()
        return p
    try:
        yield start
    finally:
        for p in procs:
            p.stop()


def cluster_ip(api: Server, name: str) -> str:
    return api.kubectl("get", "svc", "-n", NS, name, "-o", "jsonpath={.spec.clusterIP}").stdout


def pod_resolver(tcp: bool = False) -> dns.resolver.Resolver:
    """A resolver configured as the kubelet writes a pod's resolv.conf (search list, ndots:5)."""
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [ADDR]
    r.search = [dns.name.from_text(f"{NS}.svc.cluster.local"), dns.name.from_text("svc.cluster.local"),
                dns.name.from_text("cluster.local")]
    r.ndots = 5
    r.use_search_by_default = True
    r.timeout, r.lifetime = 1.0, 3.0
    return r


def resolve(ns: str, name: str, rdtype: str, **kw) -> list[str]:
    def run() -> list[str]:
        try:
            return sorted(rd.to_text() for rd in pod_resolver(**kw).resolve(name, rdtype))
        except dns.resolver.NXDOMAIN:
            return ["NXDOMAIN"]
        except dns.resolver.NoAnswer:
            return ["NODATA"]
    return netns.call_in(ns, run)


def query(ns: str, name: str, rdtype: str, proto: str = "udp", **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    send = dns.query.udp if proto == "udp" else dns.query.tcp
    return netns.call_in(ns, lambda: send(q, ADDR, timeout=2))


def test_records_over_udp_and_tcp_from_inside_the_netns(setup, dns_server):
    api, ns, _ = setup
    dns_server()
    web, stable = cluster_ip(api, "web"), cluster_ip(api, "stable")
    assert web and stable
    # what a pod types, expanded by its resolver's search list
    assert resolve(ns, "web", "A") == [web]
    assert resolve(ns, "web", "A", tcp=True) == [web]
    assert resolve(ns, f"web.{NS}", "A") == [web]
    assert resolve(ns, f"stable.{NS}.svc.cluster.local", "A") == [stable]
    assert resolve(ns, "_http._tcp.web", "SRV") == [f"0 100 80 web.{NS}.svc.cluster.local."]
    assert resolve(ns, "_metrics._udp.web", "SRV") == [f"0 100 9100 web.{NS}.svc.cluster.local."]
    # headless: the ready endpoints of the slice written directly, by address and by hostname
    assert resolve(ns, "db", "A") == ["10.244.1.10", "10.244.1.11"]
    assert resolve(ns, "db-0.db", "A") == ["10.244.1.10"]
    assert resolve(ns, f"db-2.db.{NS}.svc.cluster.local.", "A") == ["NXDOMAIN"]     # not ready
    assert resolve(ns, "_pg._tcp.db", "SRV") == [f"0 50 5432 10-244-1-11.db.{NS}.svc.cluster.local.",
                                                 f"0 50 5432 db-0.db.{NS}.svc.cluster.local."]
    assert resolve(ns, dns.reversename.from_address(web).to_text(), "PTR") == [f"web.{NS}.svc.cluster.local."]
    assert resolve(ns, "10.1.244.10.in-addr.arpa.", "PTR") == [f"db-0.db.{NS}.svc.cluster.local."]
    # pods verified: an address of a Pod in that namespace, and no other
    assert resolve(ns, f"10-244-3-7.{NS}.pod.cluster.local", "A") == ["10.244.3.7"]
    assert resolve(ns, f"10-244-3-8.{NS}.pod.cluster.local.", "A") == ["NXDOMAIN"]
    assert resolve(ns, "dns-version.cluster.local", "TXT") == ['"1.1.0"']

    cname = query(ns, f"ext.{NS}.svc.cluster.local", "A", "tcp")
    assert cname.rcode() == dns.rcode.NOERROR and cname.flags & dns.flags.AA
    assert [(r.rdtype, r[0].to_text()) for r in cname.answer] == [(dns.rdatatype.CNAME, "www.example.com.")]
    missing = query(ns, f"nothere.{NS}.svc.cluster.local", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert [r.rdtype for r in missing.authority] == [dns.rdatatype.SOA]
    nodata = query(ns, f"web.{NS}.svc.cluster.local", "TXT", "tcp")
    assert (nodata.rcode(), nodata.answer, [r.rdtype for r in nodata.authority]) == \
        (dns.rcode.NOERROR, [], [dns.rdatatype.SOA])
    assert query(ns, "www.example.com", "A").rcode() == dns.rcode.REFUSED


def test_a_large_answer_is_truncated_over_udp_and_whole_over_tcp(setup, dns_server):
    _, ns, _ = setup
    srv = dns_server()
    udp = query(ns, f"many.{NS}.svc.cluster.local", "A")
    assert udp.flags & dns.flags.TC
    tcp = query(ns, f"many.{NS}.svc.cluster.local", "A", "tcp")
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 100
    # the resolver sees TC on UDP and asks again over TCP, as libc's does
    assert len(resolve(ns, "many", "A")) == 100
    status, text = srv.get(9153, "/metrics")
    assert status == 200
    assert 'coredns_dns_requests_total{family="1",proto="tcp",server="dns://10.53.0.10:53",' \
           'type="A",view="",zone="."}' in text
    assert srv.get(8080, "/health") == (200, "OK")


def test_a_deleted_service_is_nxdomain_within_a_second(setup, dns_server):
    api, ns, _ = setup
    dns_server()
    api.kubectl("create", "service", "clusterip", "brief", "-n", NS, "--tcp=81:81")
    ip = cluster_ip(api, "brief")
    name = f"brief.{NS}.svc.cluster.local."
    wait_for("the new Service's A record", lambda: resolve(ns, name, "A") == [ip], 1.0, 0.05)
    api.kubectl("delete", "service", "brief", "-n", NS)
    deleted = time.monotonic()
    wait_for("NXDOMAIN for the deleted Service", lambda: resolve(ns, name, "A") == ["NXDOMAIN"], 1.0, 0.05)
    assert time.monotonic() - deleted < 1.0


class UdpClient:
    """Asks one question again and again over ONE UDP socket made inside the netns, as a resolver
    does: each query re-sent every 200 ms until its answer comes. Records (first send, answer time,
    rcode, addresses) per query."""

    def __init__(self, ns: str, name: str):
        self.sock = netns.call_in(ns, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.2)
        self.name = name
        self.results: list[tuple[float, float | None, int | None, list[str]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            q = dns.message.make_query(self.name, "A")
            first = time.monotonic()
            answered = None
            while answered is None and time.monotonic() - first < 15:
                self.sock.sendto(q.to_wire(), (ADDR, 53))
                try:
                    wire, _ = self.sock.recvfrom(65535)
                except (TimeoutError, ConnectionRefusedError):
                    continue
                r = dns.message.from_wire(wire)
                if r.id == q.id:
                    answered = (time.monotonic(), r.rcode(), sorted(rd.to_text() for s in r.answer for rd in s))
            self.results.append((first, *(answered or (None, None, []))))
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)
        self.sock.close()


def test_a_restart_while_a_client_keeps_one_udp_socket(setup, dns_server):
    api, ns, _ = setup
    ip = cluster_ip(api, "stable")
    first = dns_server()
    client = UdpClient(ns, f"stable.{NS}.svc.cluster.local")
    try:
        time.sleep(1)
        first.stop()
        stopped = time.monotonic()
        time.sleep(0.5)                       # queries go unanswered while no server runs
        dns_server()
        ready = time.monotonic()
        time.sleep(3)
    finally:
        client.close()
    results = client.results
    assert results and all(r[1] is not None for r in results), results
    assert all(r[2] == dns.rcode.NOERROR and r[3] == [ip] for r in results), results
    over = [r for r in results if r[0] < ready and r[1] > stopped]
    assert over, "no query was in flight while no server ran"
    print(f"query over the restart: asked {over[0][0] - stopped:+.2f} s after the stop, answered "
          f"{over[0][1] - ready:+.2f} s after the new server was ready")
    late = [r for r in results if r[1] > max(r[0], ready) + 2.0]
    assert not late, f"answered more than 2 s after the new server was ready: {late}"
    assert sum(1 for r in results if r[0] > ready) >= 10
