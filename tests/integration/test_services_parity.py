"""kube-proxy 1.35 behaviours of the service proxy, with real traffic and real kernel state.

    node1: web-1    node2: web-2, client2    node3: (none)

- NodePorts answer on the node's primary address only (nodePortAddresses "primary"): a second
  address on node1, routed to it from the underlay, gets no NodePort.
- A LoadBalancer ingress in ipMode Proxy is not short-circuited: a pod's traffic to it leaves
  for the load balancer (here a listener in the external host that names itself), while ipMode
  VIP is DNATed on the client's node as before.
- /healthz is 503 (nodeEligible false) while the Node carries ToBeDeletedByClusterAutoscaler,
  /livez stays 200; kubeproxy_proxy_healthz_total counts the 503s.
- A one-way UDP flow's conntrack entry to an endpoint goes when the Service scales to zero and
  when it is deleted (the sender keeps refreshing it meanwhile).
- The agent raised the conntrack timeouts of its node's netns to kube-proxy's defaults.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import subprocess
import threading
import time

import pytest
from kubeweft.lab import netns as lab_netns
from kubeweft.lab import topology
from kubeweft.lab.config import NODE_UPLINK
from kubeweft.proxy.metrics import parse_samples

from .services_helpers import CONNECTED, EXTERNAL, UdpClient, cluster, http_get, in_thread, names, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "h15-parity"
LB_PROXY, LB_VIP = "198.51.100.240", "198.51.100.241"   # outside the lab allocator's way
SECONDARY = "192.0.2.11"                                 # a second address of node1
TAINT = "ToBeDeletedByClusterAutoscaler"


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.ips = cl.start_pods(web={"web-1": "node1", "web-2": "node2"}, clients={"client2": "node2"})
        yield cl


# --- nodePortAddresses: primary ------------------------------------------------------------
@pytest.fixture
def secondary(c):
    ns = c.cfg.node_netns("node1")
    lab_netns.run(ns, ["ip", "addr", "add", f"{SECONDARY}/32", "dev", NODE_UPLINK], check=True, timeout=10)
    c.route(SECONDARY, "node1")
    try:
        yield SECONDARY
    finally:
        lab_netns.run(ns, ["ip", "addr", "del", f"{SECONDARY}/32", "dev", NODE_UPLINK], timeout=10)


def test_node_port_only_on_the_primary_address(c, secondary):
    svc = c.service("np", [svc_port(80, "http", name="http")], selector={"app": "web"}, type_="NodePort")
    port = svc.node_ports["http"]
    c.wait_answer(EXTERNAL, c.node_ip["node1"], port)
    assert names(c.who(EXTERNAL, c.node_ip["node1"], port, n=8)) == {"web-1", "web-2"}
    # the secondary address is node1's and reachable (the agent's health port answers on it)...
    assert http_get(c.cfg.external_netns, secondary, 10256, "/livez")[0] == 200
    assert c.probe(EXTERNAL, secondary, port, timeout=1.0).outcome != CONNECTED
    # ...and the ClusterIP path is not affected by it
    assert c.probe("client2", svc.ip, 80).outcome == CONNECTED


# --- ipMode Proxy ----------------------------------------------------------------------------
def _listen_in(netns_name: str, addr: str, port_: int) -> socket.socket:
    def make() -> socket.socket:
        with lab_netns.entered(netns_name):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port_))
        s.listen(16)
        s.settimeout(0.5)
        return s
    return in_thread(make)


def _serve_whoami(sock: socket.socket, name: str, stop: threading.Event) -> None:
    """Answer each connection with the workload's whoami JSON line, naming itself."""
    while not stop.is_set():
        try:
            conn, peer = sock.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with conn:
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                conn.recv(4096)
                conn.sendall((json.dumps({"pod": name, "client": f"{peer[0]}:{peer[1]}"}) + "\n").encode())


@pytest.fixture(scope="module")
def load_balancer(c):
    """The external host holds LB_PROXY and answers on it as 'lb/load-balancer' (a proxying load
    balancer in front of the cluster); the underlay routes both test LB addresses to it."""
    x = c.cfg.external_netns
    lab_netns.run(x, ["ip", "addr", "add", f"{LB_PROXY}/32", "dev", "lo"], check=True, timeout=10)
    stop = threading.Event()
    sock = None
    try:
        for ip in (LB_PROXY, LB_VIP):
            topology.ensure_underlay_route(c.cfg, f"{ip}/32", c.cfg.external_ip)
            c._routes.append(f"{ip}/32")
        sock = _listen_in(x, LB_PROXY, 80)
        t = threading.Thread(target=_serve_whoami, args=(sock, "lb/load-balancer", stop), daemon=True)
        t.start()
        yield
    finally:
        stop.set()
        if sock is not None:
            t.join(5)
            sock.close()
        lab_netns.run(x, ["ip", "addr", "del", f"{LB_PROXY}/32", "dev", "lo"], timeout=10)


def _lb_service(c, name: str, ip: str, mode: str):
    svc = c.service(name, [svc_port(80, "http", name="http")], selector={"app": "web"}, type_="LoadBalancer",
                    loadBalancerClass="h15.example/external")        # the lab's allocator leaves it alone
    c.core.patch_namespaced_service_status(name, c.ns, {"status": {"loadBalancer": {
        "ingress": [{"ip": ip, "ipMode": mode}]}}}, _request_timeout=10)
    return svc


@pytest.mark.parametrize("source", ["client2", "node:node3"])
def test_ip_mode_proxy_leaves_for_the_load_balancer(c, load_balancer, source):
    if "vip" not in c.__dict__:
        c.vip = _lb_service(c, "lb-vip", LB_VIP, "VIP")
        c.proxied = _lb_service(c, "lb-proxy", LB_PROXY, "Proxy")
    c.wait_answer(source, LB_VIP, 80, pods={"web-1", "web-2"})
    assert names(c.who(source, LB_VIP, 80, n=8)) == {"web-1", "web-2"}      # VIP: DNATed here
    c.wait_answer(source, c.proxied.ip, 80)                                  # the Service is programmed
    results = c.who(source, LB_PROXY, 80, n=8)
    assert names(results) == {"load-balancer"}, [r.raw for r in results]


# --- /healthz and the autoscaler's taint ------------------------------------------------------
def _taints(c, node: str) -> list[dict]:
    return (c._raw(c.core.read_node, node).get("spec") or {}).get("taints") or []


def test_healthz_503_while_the_node_is_marked_for_deletion(c):
    ns = c.cfg.node_netns("node3")
    assert http_get(ns, "127.0.0.1", 10256, "/healthz")[0] == 200
    before = _taints(c, "node3")
    c.core.patch_node("node3", {"spec": {"taints": [*before, {"key": TAINT, "value": str(int(time.time())),
                                                              "effect": "NoSchedule"}]}}, _request_timeout=10)
    try:
        wait_for("node3's /healthz 503", lambda: http_get(ns, "127.0.0.1", 10256, "/healthz")[0] == 503,
                 timeout=30)
        status, body = http_get(ns, "127.0.0.1", 10256, "/healthz")
        assert status == 503 and json.loads(body)["nodeEligible"] is False
        assert http_get(ns, "127.0.0.1", 10256, "/livez")[0] == 200
        assert http_get(c.cfg.node_netns("node1"), "127.0.0.1", 10256, "/healthz")[0] == 200
        samples = parse_samples(http_get(ns, "127.0.0.1", 10249, "/metrics")[1])
        assert samples['kubeproxy_proxy_healthz_total{code="503"}'] >= 2
        assert samples['kubeproxy_proxy_livez_total{code="200"}'] >= 1
    finally:
        c.core.patch_node("node3", {"spec": {"taints": [t for t in _taints(c, "node3") if t["key"] != TAINT]
                                             or None}}, _request_timeout=10)
    wait_for("node3's /healthz 200 again", lambda: http_get(ns, "127.0.0.1", 10256, "/healthz")[0] == 200,
             timeout=30)


# --- UDP conntrack entries ------------------------------------------------------------------
class Sender:
    """A one-way UDP sender in a pod: one connected socket, a datagram every 0.2 s."""

    def __init__(self, c, pod: str, host: str, port_: int) -> None:
        self.sock = UdpClient(c.source_netns(pod), host, port_).sock
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            with contextlib.suppress(OSError):      # ICMP errors from a Service without endpoints
                self.sock.send(b"statsd")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def udp_entries(c, node: str, service_ip: str) -> list[str]:
    """The node's conntrack entries of UDP flows to service_ip (conntrack -L, its own netns)."""
    out = lab_netns.run(c.cfg.node_netns(node), ["conntrack", "-L", "-p", "udp", "--orig-dst", service_ip],
                        capture_output=True, text=True, timeout=10).stdout
    return [line for line in out.splitlines() if line.startswith("udp")]


def _to(entries: list[str], endpoint: str) -> list[str]:
    return [e for e in entries if f"src={endpoint} " in e.split("dport=", 1)[1]]


@pytest.mark.parametrize("how", ["scale-to-zero", "delete"])
def test_stale_udp_entry_goes(c, how):
    name = f"udp-{how}"
    c.pod(f"{name}-ep", "node1", ports=[{"containerPort": 8080, "protocol": "UDP"}], labels={"app": name})
    ep_ip = c.wait_ready(f"{name}-ep")[f"{name}-ep"]
    svc = c.service(name, [svc_port(53, 8080, "UDP")], selector={"app": name})
    c.wait_answer("client2", svc.ip, 53, udp=True)
    sender = Sender(c, "client2", svc.ip, 53)
    try:
        wait_for("the flow DNATed to the endpoint", lambda: _to(udp_entries(c, "node2", svc.ip), ep_ip), timeout=10)
        if how == "scale-to-zero":
            c.delete_pod(f"{name}-ep")
        else:
            c.delete_service(name)
        # the sender keeps refreshing the entry: only the agent's cleanup removes it
        wait_for("the stale entry gone", lambda: not _to(udp_entries(c, "node2", svc.ip), ep_ip), timeout=20)
        time.sleep(1.0)
        assert not _to(udp_entries(c, "node2", svc.ip), ep_ip)
    finally:
        sender.close()
        with contextlib.suppress(Exception):
            c.delete_service(name)
        with contextlib.suppress(Exception):
            c.delete_pod(f"{name}-ep")


# --- conntrack sysctls ----------------------------------------------------------------------
def sysctl(netns_name: str | None, name: str) -> int:
    argv = ["cat", f"/proc/sys/net/netfilter/{name}"]
    if netns_name is None:
        return int(subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout)
    return int(lab_netns.run(netns_name, argv, capture_output=True, text=True, timeout=10, check=True).stdout)


def test_the_agent_raised_the_conntrack_timeouts_of_its_node_only(c):
    for node in ("node1", "node2", "node3"):
        ns = c.cfg.node_netns(node)
        assert sysctl(ns, "nf_conntrack_tcp_timeout_close_wait") == 3600          # kernel default 60
        assert sysctl(ns, "nf_conntrack_tcp_timeout_established") >= 86400       # only ever raised
    # a namespace without an agent keeps the kernel's defaults
    assert sysctl(c.cfg.external_netns, "nf_conntrack_tcp_timeout_close_wait") == 60
    # nf_conntrack_max is global: the node sees the host's value and could not write it
    assert sysctl(c.cfg.node_netns("node1"), "nf_conntrack_max") == sysctl(None, "nf_conntrack_max")


# --- ServiceCIDR and IPAddress --------------------------------------------------------------
EXTRA_CIDR, EXTRA_IP, UNUSED_IP = "10.200.0.0/24", "10.200.0.10", "10.200.0.99"


def _service_check(c, node: str) -> str:
    return lab_netns.run(c.cfg.node_netns(node), ["nft", "list", "chain", "ip", "kubeweft", "service-check"],
                         capture_output=True, text=True, timeout=10).stdout


def test_service_cidrs_served_allocated_from_and_dropped_by_the_agent(c, labk):
    from kubernetes import client as k8s

    net = k8s.NetworkingV1Api(c.api_client)
    out = labk.kubectl("get", "servicecidrs").stdout
    assert out.split("\n")[0].split() == ["NAME", "CIDRS", "AGE"]
    assert out.split("\n")[1].split()[:2] == ["kubernetes", c.cfg.service_cidr]
    kube = labk.kubectl("get", "ipaddress", labk.kubectl("get", "svc", "kubernetes", "-n", "default", "-o",
                                                         "jsonpath={.spec.clusterIP}").stdout).stdout
    assert kube.split("\n")[1].split() == [str(ipaddress.ip_network(c.cfg.service_cidr)[1]),
                                           "services/default/kubernetes"]
    net.create_service_cidr({"metadata": {"name": "h15-extra"}, "spec": {"cidrs": [EXTRA_CIDR]}},
                            _request_timeout=10)
    try:
        wait_for("node2 drops the new range", lambda: EXTRA_CIDR in _service_check(c, "node2"), timeout=20)
        svc = c.service("extra", [svc_port(80, "http")], selector={"app": "web"}, clusterIP=EXTRA_IP)
        assert svc.ip == EXTRA_IP
        assert labk.kubectl("get", "ipaddress", EXTRA_IP, "-o", "jsonpath={.spec.parentRef.name}").stdout == "extra"
        c.wait_answer("client2", EXTRA_IP, 80)
        assert names(c.who("client2", EXTRA_IP, 80, n=8)) == {"web-1", "web-2"}
        # an address of the new range that no Service holds is dropped (a timeout, not unreachable)
        assert c.probe("client2", UNUSED_IP, 80, timeout=1.0).outcome == "timeout"
        c.delete_service("extra")
        wait_for("its IPAddress gone", lambda: labk.kubectl("get", "ipaddress", EXTRA_IP, check=False).returncode != 0,
                 timeout=10)
    finally:
        with contextlib.suppress(Exception):
            c.delete_service("extra")
        net.delete_service_cidr("h15-extra", _request_timeout=10)
    wait_for("node2 back to the default range", lambda: EXTRA_CIDR not in _service_check(c, "node2"), timeout=20)
