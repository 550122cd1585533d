"""IPv6 and dual-stack Services through the real agent, kernel and packets, in scratch namespaces:
the lab API server alone on an underlay with both families (192.168.56.0/24 and
2001:db8:56::/64), one dual-stack node (podCIDRs 10.244.1.0/24 and fd00:10:244:1::/64, both
InternalIPs) running the agent with a proxier per family, two pods wired by the agent's CNI, and
the underlay's namespace as the host outside the cluster.

Services carry their ClusterIPs of both families, and their EndpointSlices are written by hand
per address type (as the EndpointSlice controller writes them for a dual-stack Service): the
checks are the service proxy's, not the controllers'. Each check runs over IPv6 and, where it
compares, over IPv4 too (`family`), so the same test holds the two tables to the same verdicts.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubeweft.lab import netns

from . import agent_helpers
from .agent_helpers import health, ip, join_underlay
from .apiserver_proc import terminate
from .netns_helpers import scratch_netns
from .services_helpers import CONNECTED, UdpClient, family_of, http_get, in_thread, udp_exchange
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
KUBEWEFT = ROOT / ".venv" / "bin" / "kubeweft"
SHIM = ROOT / ".venv" / "bin" / "kubeweft-cni"
NODE = {4: "192.168.56.11", 6: "2001:db8:56::11"}
POD_CIDRS = ["10.244.1.0/24", "fd00:10:244:1::/64"]
GATEWAY = {4: "10.244.1.1", 6: "fd00:10:244:1::1"}        # the node's bridge: the pods' gateway
SERVICE_CIDRS = {4: "10.96.0.0/12", 6: "fd00:10:96::/112"}     # the dual lab's (lab/config.py)
CLUSTER_IP = {4: "10.96.0.80", 6: "fd00:10:96::50"}        # web (TCP 80, UDP 53), nodePorts 30080/30053
EMPTY_IP = {4: "10.96.0.81", 6: "fd00:10:96::51"}          # no endpoints: rejected
UNALLOCATED = {4: "10.96.0.99", 6: "fd00:10:96::63"}       # in the range, no Service: dropped
HC_PORT = 31999

# The pods' workload: TCP 8080 and UDP 5353 on both families, answering "NAME CLIENT-ADDRESS".
SERVER = r"""
import socket, sys, threading
name = sys.argv[1]
def sock(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    return s
def client(a):
    return a[0].removeprefix("::ffff:")
def udp():
    u = sock(socket.SOCK_DGRAM, 5353)
    while True:
        d, a = u.recvfrom(2048)
        u.sendto(f"{name} {client(a)}".encode(), a)
threading.Thread(target=udp, daemon=True).start()
t = sock(socket.SOCK_STREAM, 8080)
t.listen(64)
while True:
    c, a = t.accept()
    c.sendall(f"{name} {client(a)}\n".encode())
    c.close()
"""


def tcp(ns: str, host: str, port: int, timeout: float = 2.0) -> str:
    """'NAME CLIENT' from the workload behind host:port, asked from inside ns; else 'refused' or
    'timeout' (or the error)."""
    def run() -> str:
        with netns.entered(ns):
            s = socket.socket(family_of(host), socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            return s.recv(200).decode().strip()
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        except OSError as e:
            return f"{type(e).__name__}: {e}"
        finally:
            s.close()
    return in_thread(run)


def udp(ns: str, host: str, port: int) -> str:
    """The workload's answer to one datagram; 'refused' (an ICMP(v6) port unreachable came back)
    or 'timeout'."""
    outcome, data = udp_exchange(ns, host, port, timeout=1.5)
    return data.decode().strip() if outcome == CONNECTED else outcome.lower()


def add_pod(tmp: Path, node_ns: str, pod_ns: str) -> dict[int, str]:
    """A CNI ADD through the executable runtimes run; the pod's address per family."""
    conf = {"cniVersion": "1.0.0", "name": "kubeweft", "type": "kubeweft", "socket": str(tmp / "agent.sock")}
    proc = netns.run(node_ns, [str(SHIM)], input=json.dumps(conf), capture_output=True, text=True, timeout=60,
                     env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"c-{pod_ns}", "CNI_IFNAME": "eth0",
                          "CNI_NETNS": str(netns.path(pod_ns)), "CNI_PATH": str(SHIM.parent),
                          "PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    addrs = [i["address"].split("/")[0] for i in json.loads(proc.stdout)["ips"]]
    return {6 if ":" in a else 4: a for a in addrs}


def apply(server, obj: dict) -> None:
    server.kubectl("apply", "-f", "-", input=json.dumps(obj))


def service(name: str, ips: dict[int, str], ports: list[dict], **spec) -> dict:
    """A Service without a selector (its EndpointSlices are the test's), ClusterIPs in both
    families, IPv4 first (kind's dual-stack order)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ips[4], "clusterIPs": [ips[4], ips[6]], "ipFamilies": ["IPv4", "IPv6"],
                     "ipFamilyPolicy": "RequireDualStack", "ports": ports, **spec}}


def endpoint_slice(svc: str, version: int, ips: list[str], ports: list[dict]) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": f"IPv{version}",
            "metadata": {"name": f"{svc}-v{version}", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "endpoints": [{"addresses": [a], "nodeName": "node1", "conditions": {"ready": True}} for a in ips],
            "ports": ports}


WEB_PORTS = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080},
             {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP", "nodePort": 30053}]
SLICE_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]


@dataclass
class Cluster:
    server: object
    node: str                                        # the node's netns
    outside: str                                     # the underlay's netns: a host outside the cluster
    pods: dict[str, tuple[str, dict[int, str]]]      # name -> (netns, {family: address})


@contextlib.contextmanager
def dual_stack_node(tmp: Path):
    with agent_helpers.lab_api(tmp, f"h13d{os.getpid() % 100000}", "dual") as (server, underlay, _), \
            scratch_netns("h13n", 4) as (node_ns, web_ns, client_ns, web2_ns):
        agent = None
        workloads: list[subprocess.Popen] = []
        try:
            join_underlay(underlay, node_ns, "eth1", NODE[4])
            ip(node_ns, "-6", "addr", "add", f"{NODE[6]}/64", "dev", "eth1", "nodad")
            # default routes as a node has them, so that its own packets to a ClusterIP are routed
            # (then DNATed); the gateways are unused underlay addresses: nothing is sent there
            ip(node_ns, "route", "add", "default", "via", agent_helpers.UNDERLAY_ROUTER)
            ip(node_ns, "-6", "route", "add", "default", "via", "2001:db8:56::fe")
            server.kubectl("create", "-f", "-", input=json.dumps(
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"},
                 "spec": {"podCIDR": POD_CIDRS[0], "podCIDRs": POD_CIDRS}}))
            server.kubectl("patch", "node", "node1", "--subresource=status", "--type=merge", "-p", json.dumps(
                {"status": {"addresses": [{"type": "InternalIP", "address": NODE[4]},
                                          {"type": "InternalIP", "address": NODE[6]}]}}))
            log = tmp / "agent.log"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KUBE", "NODE_"))}
            with open(log, "wb") as out:
                agent = subprocess.Popen(
                    [str(KUBEWEFT), "agent", "--kubeconfig", str(server.state / "kubeconfig-nodes"),
                     "--node-name", "node1", "--socket", str(tmp / "agent.sock"), "--state-dir", str(tmp / "state"),
                     "--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56",
                     "--service-cidr", f"{SERVICE_CIDRS[4]},{SERVICE_CIDRS[6]}",
                     "--overlay", "none", "--no-policy", "--metrics-bind-address", ""],
                    env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
                    preexec_fn=netns.preexec(node_ns))  # noqa: PLW1509 - the test's main thread

            def ready() -> bool:
                assert agent.poll() is None, f"the agent exited {agent.returncode}:\n{log.read_text()[-3000:]}"
                return health(node_ns, "/readyz") == 200
            wait_for("the agent ready", ready, timeout=90, interval=0.3)
            pods = {name: (ns, add_pod(tmp, node_ns, ns))
                    for name, ns in (("web", web_ns), ("client", client_ns), ("web2", web2_ns))}
            for name in ("web", "web2"):
                ns = pods[name][0]
                workloads.append(subprocess.Popen([sys.executable, "-c", SERVER, name], stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL,
                                                  preexec_fn=netns.preexec(ns)))  # noqa: PLW1509
                wait_for(f"{name} listening", lambda ns=ns, name=name: tcp(ns, "::1", 8080).startswith(name),
                         timeout=20)
            web = pods["web"][1]
            apply(server, service("web", CLUSTER_IP, WEB_PORTS, type="NodePort"))
            apply(server, service("empty", EMPTY_IP, [{"name": "http", "port": 80, "protocol": "TCP"},
                                                      {"name": "dns", "port": 53, "protocol": "UDP"}]))
            for v in (4, 6):
                apply(server, endpoint_slice("web", v, [web[v]], SLICE_PORTS))
            yield Cluster(server, node_ns, underlay, pods)
        finally:
            for workload in workloads:
                terminate(workload)
            if agent is not None:
                terminate(agent)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with dual_stack_node(tmp_path_factory.mktemp("h13")) as c:
        client_ns = c.pods["client"][0]
        for v in (4, 6):
            wait_for(f"the IPv{v} ClusterIP programmed", lambda v=v: tcp(client_ns, CLUSTER_IP[v], 80)
                     .startswith("web"), timeout=30)
        yield c


FAMILIES = [pytest.param(6, id="ipv6"), pytest.param(4, id="ipv4")]


@pytest.mark.parametrize("family", FAMILIES)
def test_cluster_ip_tcp_and_udp_keep_the_pod_source(cluster, family):
    client_ns, client = cluster.pods["client"]
    assert tcp(client_ns, CLUSTER_IP[family], 80) == f"web {client[family]}"
    assert udp(client_ns, CLUSTER_IP[family], 53) == f"web {client[family]}"


def test_one_dual_stack_service_answers_on_both_families(cluster):
    for ns in (cluster.pods["client"][0], cluster.node):
        assert [tcp(ns, CLUSTER_IP[v], 80).split()[0] for v in (4, 6)] == ["web", "web"]


@pytest.mark.parametrize("family", FAMILIES)
def test_node_port_on_the_node_address_masquerades_an_outside_client(cluster, family):
    underlay = cluster.outside
    # eTP Cluster: the outside client's source becomes the node's own (masquerade to the bridge's
    # address, the way to the pod), on either protocol
    assert tcp(underlay, NODE[family], 30080) == f"web {GATEWAY[family]}"
    assert udp(underlay, NODE[family], 30053) == f"web {GATEWAY[family]}"


def test_node_port_is_never_on_ipv6_loopback(cluster):
    node_ns = cluster.node
    assert tcp(node_ns, NODE[6], 30080).startswith("web")          # the node's own address: yes
    assert tcp(node_ns, "::1", 30080) == "refused"                  # nothing listens, nothing DNATs


@pytest.mark.parametrize("family", FAMILIES)
def test_no_endpoints_is_rejected_with_a_reset_or_port_unreachable(cluster, family):
    client_ns = cluster.pods["client"][0]
    t0 = time.monotonic()
    assert tcp(client_ns, EMPTY_IP[family], 80) == "refused"        # TCP reset
    assert udp(client_ns, EMPTY_IP[family], 53) == "refused"        # ICMP(v6) port unreachable
    assert time.monotonic() - t0 < 1.5, "a reject answers at once"
    assert tcp(client_ns, CLUSTER_IP[family], 81) == "refused"      # a ClusterIP's unused port


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unallocated_service_address_is_dropped(cluster, family):
    client_ns = cluster.pods["client"][0]
    assert tcp(client_ns, UNALLOCATED[family], 80, timeout=1.0) == "timeout"


def test_ipv6_hairpin_a_pod_reaches_itself_through_the_service(cluster):
    web_ns = cluster.pods["web"][0]
    # masqueraded to the node's bridge address: without it the pod would answer itself directly
    assert tcp(web_ns, CLUSTER_IP[6], 80) == f"web {GATEWAY[6]}"


def test_health_check_node_port_answers_over_ipv6(cluster):
    server, underlay, web = cluster.server, cluster.outside, cluster.pods["web"][1]
    apply(server, service("lb", {4: "10.96.0.82", 6: "fd00:10:96::52"},
                          [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30082}],
                          type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=HC_PORT))
    for v in (4, 6):
        apply(server, endpoint_slice("lb", v, [web[v]], SLICE_PORTS[:1]))

    def status(v: int) -> str:
        code, body = http_get(underlay, NODE[v], HC_PORT)
        return body if code == 200 else ""
    for v in (6, 4):
        assert json.loads(wait_for(f"healthCheckNodePort over IPv{v}", lambda v=v: status(v),
                                   timeout=30))["localEndpoints"] == 1


def test_kubeweft_services_lists_ipv6_frontends_bracketed(cluster):
    out = netns.run(cluster.node, [str(KUBEWEFT), "services"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert any(line.startswith(f"[{CLUSTER_IP[6]}]:80/tcp") for line in out.stdout.splitlines()), out.stdout
    assert any(line.startswith(f"{CLUSTER_IP[4]}:80/tcp") for line in out.stdout.splitlines()), out.stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_udp_flows_of_an_endpoint_that_left_are_cleared(cluster, family):
    """A client reusing one UDP socket (as a resolver does) reaches the new endpoint with its next
    datagram: the conntrack entry that still sent it to the old one is deleted."""
    server, client_ns = cluster.server, cluster.pods["client"][0]
    web, web2 = cluster.pods["web"][1], cluster.pods["web2"][1]
    apply(server, service("dns", {4: "10.96.0.83", 6: "fd00:10:96::53"},
                          [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]))
    apply(server, endpoint_slice("dns", family, [web[family]], SLICE_PORTS[1:]))
    ip = {4: "10.96.0.83", 6: "fd00:10:96::53"}[family]
    sock = UdpClient(client_ns, ip, 53)
    try:
        wait_for("the first endpoint answers", lambda: _name(sock) == "web", timeout=30)
        apply(server, endpoint_slice("dns", family, [web2[family]], SLICE_PORTS[1:]))
        wait_for("the same socket reaches the new endpoint", lambda: _name(sock) == "web2", timeout=30)
    finally:
        sock.close()


def _name(sock: UdpClient) -> str | None:
    sock.sock.settimeout(0.3)
    try:
        sock.sock.send(b"whoami")
        return sock.sock.recv(200).decode().split()[0]
    except OSError:
        return None


@pytest.mark.parametrize("family", FAMILIES)
def test_external_ip_from_outside_and_load_balancer_source_ranges(cluster, family):
    """An externalIP routed to the node reaches the Service from outside; a LoadBalancer address
    whose loadBalancerSourceRanges leave the outside host out drops it before DNAT."""
    server, outside, web = cluster.server, cluster.outside, cluster.pods["web"][1]
    ext = {4: "192.0.2.10", 6: "2001:db8:100::10"}
    lb = {4: "192.0.2.11", 6: "2001:db8:100::11"}
    for v in (4, 6):        # the outside host's routes to both through the node (a router's job)
        for addr in (ext[v], lb[v]):
            subprocess.run(["ip", "-n", outside, "route", "replace", addr, "via", NODE[v]], check=True,
                           capture_output=True, timeout=10)
    apply(server, service("ext", {4: "10.96.0.84", 6: "fd00:10:96::54"},
                          [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                          externalIPs=[ext[4], ext[6]]))
    apply(server, service("fenced", {4: "10.96.0.85", 6: "fd00:10:96::55"},
                          [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30085}],
                          type="LoadBalancer", loadBalancerClass="example.com/none",
                          loadBalancerSourceRanges=["10.244.0.0/16", "fd00:10:244::/56"]))       # pods only
    server.kubectl("patch", "service", "fenced", "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"loadBalancer": {"ingress": [{"ip": lb[4]}, {"ip": lb[6]}]}}}))
    for name in ("ext", "fenced"):
        for v in (4, 6):
            apply(server, endpoint_slice(name, v, [web[v]], SLICE_PORTS[:1]))
    wait_for("the externalIP answers from outside", lambda: tcp(outside, ext[family], 80).startswith("web"),
             timeout=30)
    assert tcp(outside, ext[family], 80) == f"web {GATEWAY[family]}"      # eTP Cluster: masqueraded
    # the LoadBalancer address is programmed: a pod, inside its source ranges, gets an answer ...
    wait_for("the LoadBalancer address answers a pod", lambda: tcp(cluster.pods["client"][0], lb[family], 80)
             .startswith("web"), timeout=30)
    # ... and the outside host, outside them, none (dropped before DNAT)
    assert tcp(outside, lb[family], 80, timeout=1.0) == "timeout"


@pytest.mark.parametrize("family", FAMILIES)
def test_session_affinity_keeps_a_client_on_one_endpoint(cluster, family):
    server, client_ns = cluster.server, cluster.pods["client"][0]
    ips = {4: "10.96.0.86", 6: "fd00:10:96::56"}
    apply(server, service("sticky", ips, [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                          sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    for v in (4, 6):
        apply(server, endpoint_slice("sticky", v, [cluster.pods[p][1][v] for p in ("web", "web2")], SLICE_PORTS[:1]))
    def answer() -> str:
        return tcp(client_ns, ips[family], 80).split(" ")[0]
    first = wait_for("the sticky Service answers", lambda: (name := answer()).startswith("web") and name,
                     timeout=30)
    # 12 new connections over 2 endpoints: all to one is 1 in 2048 without affinity
    assert {answer() for _ in range(12)} == {first}
