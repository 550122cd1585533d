"""The pod datapath and the CNI nftables table on the real kernel, in scratch namespaces (h6b-*):

    ext netns  eth0 203.0.113.2/24  <--veth-->  node netns  eth0 203.0.113.1/24
                                                bridge kw0 10.244.1.1/24 -- pods (own netns each)

The node-side code runs on a thread that entered the node netns (as the agent does in its own
netns); packets are real (ping, TCP, UDP), servers run on threads inside the pod namespaces.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from kubeweft.lab import netns as lab_netns

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.timeout(120)]

GW = ipaddress.IPv4Interface("10.244.1.1/24")
CLUSTER = "10.244.0.0/16"
NODE_IP, EXT_IP = "203.0.113.1", "203.0.113.2"
ROOT_NETNS_INODE = os.stat("/proc/self/ns/net").st_ino     # the netns the tests start in


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=20)


def in_netns(name: str, fn: Callable, *args, **kwargs):
    """Run fn on a fresh thread inside the netns and return its result (or raise its error)."""
    out: dict = {}

    def run() -> None:
        try:
            with lab_netns.entered(name):
                assert os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino \
                    != ROOT_NETNS_INODE
                out["value"] = fn(*args, **kwargs)
        except BaseException as e:      # noqa: BLE001 - re-raised on the test's thread
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), f"{fn} in {name} hung"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def ping(ns: str, dst: str) -> bool:
    return lab_netns.run(ns, ["ping", "-c1", "-W1", dst], capture_output=True, timeout=10).returncode == 0


class Topology:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"h6b{tag}"
        self.node, self.ext = f"{self.prefix}-node", f"{self.prefix}-ext"
        self.made: list[str] = []

    def netns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def pod_netns(self, n: int) -> str:
        return str(lab_netns.path(self.netns(f"{self.prefix}-pod{n}")))

    def up(self) -> Topology:
        self.netns(self.node)
        self.netns(self.ext)
        sh("ip", "-n", self.node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", self.ext)
        sh("ip", "-n", self.node, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
        sh("ip", "-n", self.node, "link", "set", "eth0", "up", "mtu", "1500")
        sh("ip", "-n", self.ext, "addr", "add", f"{EXT_IP}/24", "dev", "eth0")
        sh("ip", "-n", self.ext, "link", "set", "eth0", "up")
        # the external host has no route to the pod CIDR: replies reach pods only when masqueraded
        sh("ip", "-n", self.node, "route", "add", "default", "via", EXT_IP)
        return self

    def down(self) -> None:
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)


@pytest.fixture
def topo():
    t = Topology()
    try:
        yield t.up()
    finally:
        if "kubeweft.cni.nft" in sys.modules:
            sys.modules["kubeweft.cni.nft"].reset()        # its contexts would keep the dead netns alive
        t.down()
    assert not [n for n in os.listdir(lab_netns.NETNS_DIR) if n.startswith(t.prefix)]


def wire(topo: Topology, n: int, ip: str, **kw):
    from kubeweft.cni import datapath
    ns = topo.pod_netns(n)
    hv = datapath.host_veth_name(f"ctr{n}", "eth0")
    w = in_netns(topo.node, datapath.wire_pod, ns, "eth0", ipaddress.IPv4Interface(f"{ip}/24"), GW.ip,
                 "kw0", 1450, hv, **kw)
    return ns, w


def bridge(topo: Topology):
    from kubeweft.cni import datapath
    mtu = in_netns(topo.node, datapath.underlay_mtu) - datapath.VXLAN_OVERHEAD
    return in_netns(topo.node, datapath.ensure_bridge, "kw0", GW, mtu)


# ---- names and the bridge ----------------------------------------------------------------

def test_host_veth_names_are_short_deterministic_distinct():
    from kubeweft.cni import datapath
    names = {datapath.host_veth_name(f"{c:064x}", i) for c in range(2000) for i in ("eth0", "net1")}
    assert len(names) == 4000
    assert all(len(n) <= 15 and n.startswith("kw") for n in names)
    assert datapath.host_veth_name("abc", "eth0") == datapath.host_veth_name("abc", "eth0")


def test_bridge_underlay_mtu_and_sysctls(topo):
    from kubeweft.cni import datapath
    assert in_netns(topo.node, datapath.underlay_mtu) == 1500
    sh("ip", "-n", topo.node, "link", "set", "eth0", "mtu", "9000")
    assert in_netns(topo.node, datapath.underlay_mtu) == 9000
    sh("ip", "-n", topo.node, "link", "set", "eth0", "mtu", "1500")
    sh("ip", "netns", "exec", topo.node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
    info = bridge(topo)
    again = bridge(topo)                                   # idempotent
    assert info == again and info.name == "kw0" and info.bridge_nf_call
    link = sh("ip", "-n", topo.node, "-d", "link", "show", "kw0").stdout
    assert "mtu 1450" in link and "bridge" in link and info.mac in link
    addrs = sh("ip", "-n", topo.node, "-4", "-o", "addr", "show", "kw0").stdout
    assert addrs.count("inet ") == 1 and "10.244.1.1/24" in addrs
    for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables",
                "net.bridge.bridge-nf-call-ip6tables"):
        assert sh("ip", "netns", "exec", topo.node, "sysctl", "-n", key).stdout.strip() == "1"


# ---- wiring ------------------------------------------------------------------------------

def test_wire_pod_address_route_mtu_hairpin_mac_and_ping(topo):
    from kubeweft.cni import datapath
    bridge(topo)
    ns1, w1 = wire(topo, 1, "10.244.1.5", mac="02:42:0a:f4:01:05")
    _ns2, w2 = wire(topo, 2, "10.244.1.6")
    assert w1.pod_ifname == "eth0" and w1.sandbox == ns1 and w1.pod_mac == "02:42:0a:f4:01:05"
    assert int(w2.pod_mac.split(":")[0], 16) & 0b11 == 0b10      # random, locally administered, unicast

    obs = datapath.inspect_pod(ns1, "eth0")
    assert obs.mac == w1.pod_mac and obs.mtu == 1450
    assert obs.addresses == [ipaddress.IPv4Interface("10.244.1.5/24")]
    assert (ipaddress.IPv4Network("0.0.0.0/0"), GW.ip) in obs.routes
    assert (ipaddress.IPv4Network("10.244.1.0/24"), None) in obs.routes
    assert "UP" in sh("ip", "-n", f"{topo.prefix}-pod1", "link", "show", "lo").stdout

    port = sh("ip", "-n", topo.node, "-d", "link", "show", w1.host_veth).stdout
    assert "master kw0" in port and "hairpin on" in port and "mtu 1450" in port and w1.host_mac in port
    assert in_netns(topo.node, datapath.list_host_veths, "kw0") == {w1.host_veth, w2.host_veth}

    assert ping(f"{topo.prefix}-pod1", "10.244.1.1")          # pod -> gateway
    assert ping(f"{topo.prefix}-pod1", "10.244.1.6")          # pod <-> pod over the bridge
    assert ping(f"{topo.prefix}-pod2", "10.244.1.5")


def test_wire_fails_if_ifname_exists_and_touches_nothing(topo):
    from kubeweft.cni import datapath
    from kubeweft.cni.errors import INTERFACE_EXISTS, CniError
    bridge(topo)
    ns, _w = wire(topo, 1, "10.244.1.5")
    before = in_netns(topo.node, datapath.list_host_veths, "kw0")
    with pytest.raises(CniError) as e:
        in_netns(topo.node, datapath.wire_pod, ns, "eth0", ipaddress.IPv4Interface("10.244.1.9/24"),
                 GW.ip, "kw0", 1450, datapath.host_veth_name("other", "eth0"))
    assert e.value.code == INTERFACE_EXISTS
    assert in_netns(topo.node, datapath.list_host_veths, "kw0") == before
    assert datapath.inspect_pod(ns, "eth0").addresses == [ipaddress.IPv4Interface("10.244.1.5/24")]


def node_links(topo: Topology) -> set[str]:
    return {line.split(":")[1].strip().split("@")[0]
            for line in sh("ip", "-n", topo.node, "-o", "link", "show").stdout.splitlines()}


def test_rollback_on_forced_failures_leaves_nothing(topo):
    from kubeweft.cni import datapath
    from kubeweft.cni.errors import DATAPATH_FAILURE, UNKNOWN_CONTAINER, CniError
    bridge(topo)
    ns = topo.pod_netns(1)
    links = node_links(topo)
    hv = datapath.host_veth_name("ctr1", "eth0")
    # fails at the last step: a gateway that is not on-link makes the route add fail
    with pytest.raises(CniError) as e:
        in_netns(topo.node, datapath.wire_pod, ns, "eth0", ipaddress.IPv4Interface("10.244.1.5/24"),
                 ipaddress.IPv4Address("10.99.0.1"), "kw0", 1450, hv)
    assert e.value.code == DATAPATH_FAILURE
    # fails at veth creation: a multicast MAC
    with pytest.raises(CniError):
        in_netns(topo.node, datapath.wire_pod, ns, "eth0", ipaddress.IPv4Interface("10.244.1.5/24"),
                 GW.ip, "kw0", 1450, hv, mac="01:00:5e:00:00:01")
    # no bridge
    with pytest.raises(CniError):
        in_netns(topo.node, datapath.wire_pod, ns, "eth0", ipaddress.IPv4Interface("10.244.1.5/24"),
                 GW.ip, "nobridge", 1450, hv)
    # no sandbox
    with pytest.raises(CniError) as e:
        in_netns(topo.node, datapath.wire_pod, "/run/netns/h6b-missing", "eth0",
                 ipaddress.IPv4Interface("10.244.1.5/24"), GW.ip, "kw0", 1450, hv)
    assert e.value.code == UNKNOWN_CONTAINER
    assert node_links(topo) == links
    assert sh("ip", "-n", f"{topo.prefix}-pod1", "-o", "link", "show").stdout.count(":") \
        and "eth0" not in sh("ip", "-n", f"{topo.prefix}-pod1", "-o", "link", "show").stdout
    # and the same attachment wires fine afterwards
    w = in_netns(topo.node, datapath.wire_pod, ns, "eth0", ipaddress.IPv4Interface("10.244.1.5/24"),
                 GW.ip, "kw0", 1450, hv)
    assert w.host_veth == hv and ping(f"{topo.prefix}-pod1", "10.244.1.1")


def test_unwire_leaves_nothing_and_is_idempotent(topo):
    from kubeweft.cni import datapath
    bridge(topo)
    links = node_links(topo)
    ns, w = wire(topo, 1, "10.244.1.5")
    assert node_links(topo) == links | {w.host_veth}
    in_netns(topo.node, datapath.unwire_pod, ns, "eth0", w.host_veth)
    assert node_links(topo) == links
    assert datapath.inspect_pod(ns, "eth0") is None
    in_netns(topo.node, datapath.unwire_pod, ns, "eth0", w.host_veth)          # twice
    in_netns(topo.node, datapath.unwire_pod, None, "eth0", w.host_veth)        # no netns
    in_netns(topo.node, datapath.unwire_pod, "/run/netns/h6b-gone", "eth0", w.host_veth)
    # the sandbox went first: unwire still cleans the host end
    ns2, w2 = wire(topo, 2, "10.244.1.6")
    sh("ip", "netns", "del", f"{topo.prefix}-pod2")
    topo.made.remove(f"{topo.prefix}-pod2")
    in_netns(topo.node, datapath.unwire_pod, ns2, "eth0", w2.host_veth)
    for _ in range(50):                       # the kernel tears the peer down asynchronously
        if node_links(topo) == links:
            break
        threading.Event().wait(0.05)
    assert node_links(topo) == links
    assert in_netns(topo.node, datapath.list_host_veths, "kw0") == set()


def test_wire_is_fast(topo):
    import time

    from kubeweft.cni import datapath
    bridge(topo)
    times = []
    for n in range(5):
        ns = topo.pod_netns(n)
        hv = datapath.host_veth_name(f"fast{n}", "eth0")

        def timed(ns=ns, hv=hv, n=n):
            t = time.perf_counter()
            datapath.wire_pod(ns, "eth0", ipaddress.IPv4Interface(f"10.244.1.{20 + n}/24"), GW.ip, "kw0",
                              1450, hv)
            return time.perf_counter() - t
        times.append(in_netns(topo.node, timed))
    assert sorted(times)[2] < 0.05, times        # median well under 50 ms (a few ms, typically)


# ---- nftables: masquerade and hostPorts --------------------------------------------------

@contextlib.contextmanager
def server(ns_name: str, proto: str, port: int):
    """A server inside the netns that answers with the address it saw the client come from."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    ready, stop = threading.Event(), threading.Event()

    def run() -> None:
        with lab_netns.entered(ns_name):
            s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.settimeout(0.2)
        if proto == "tcp":
            s.listen(8)
        ready.set()
        with s:
            while not stop.is_set():
                try:
                    if proto == "tcp":
                        c, addr = s.accept()
                        with c:
                            c.sendall(addr[0].encode())
                    else:
                        _, addr = s.recvfrom(100)
                        s.sendto(addr[0].encode(), addr)
                except TimeoutError:
                    continue

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)


def ask(ns_name: str, proto: str, ip: str, port: int) -> str:
    """Connect from inside the netns; returns what the server saw as our address."""
    out: dict = {}

    def run() -> None:
        with lab_netns.entered(ns_name):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        with s:
            s.settimeout(2)
            try:
                if proto == "tcp":
                    s.connect((ip, port))
                    out["seen"] = s.recv(100).decode()
                else:
                    s.sendto(b"hi", (ip, port))
                    out["seen"] = s.recvfrom(100)[0].decode()
            except OSError:
                pass                     # no answer: "" to the caller

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=10)
    return out.get("seen", "")


def test_masquerade_only_leaving_the_cluster(topo):
    from kubeweft.cni import nft
    bridge(topo)
    wire(topo, 1, "10.244.1.5")
    wire(topo, 2, "10.244.1.6")
    pod1, pod2 = f"{topo.prefix}-pod1", f"{topo.prefix}-pod2"
    with server(topo.ext, "tcp", 7000), server(pod2, "tcp", 7000), server(topo.ext, "udp", 7001):
        assert ask(pod1, "tcp", EXT_IP, 7000) == ""            # no masquerade yet: no way back
        in_netns(topo.node, nft.ensure_masquerade, CLUSTER)
        in_netns(topo.node, nft.ensure_masquerade, CLUSTER)    # idempotent
        assert ask(pod1, "tcp", EXT_IP, 7000) == NODE_IP
        assert ask(pod1, "udp", EXT_IP, 7001) == NODE_IP
        assert ask(pod1, "tcp", "10.244.1.6", 7000) == "10.244.1.5"      # pod-to-pod keeps its address
    ruleset = sh("ip", "netns", "exec", topo.node, "nft", "list", "table", "ip", "kubeweft-cni").stdout
    assert ruleset.count("masquerade comment") == 2       # ensured twice: still one rule each


def test_hostport_dnat_from_the_external_host(topo):
    from kubeweft.cni import nft
    from kubeweft.cni.errors import CniError
    bridge(topo)
    wire(topo, 1, "10.244.1.5")
    wire(topo, 2, "10.244.1.6")
    pod1, pod2 = f"{topo.prefix}-pod1", f"{topo.prefix}-pod2"
    in_netns(topo.node, nft.ensure_masquerade, CLUSTER)
    maps1 = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
             {"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]
    with server(pod1, "tcp", 80), server(pod1, "udp", 53), server(pod2, "tcp", 81):
        assert ask(topo.ext, "tcp", NODE_IP, 8080) == ""
        in_netns(topo.node, nft.set_hostports, "ctr1", maps1, "10.244.1.5")
        in_netns(topo.node, nft.set_hostports, "ctr1", maps1, "10.244.1.5")            # idempotent
        in_netns(topo.node, nft.set_hostports, "ctr2",
                 [{"hostPort": 9090, "containerPort": 81, "protocol": "TCP", "hostIP": NODE_IP}],
                 "10.244.1.6")
        assert ask(topo.ext, "tcp", NODE_IP, 8080) == EXT_IP       # the pod sees the real client
        assert ask(topo.ext, "udp", NODE_IP, 8053) == EXT_IP
        assert ask(topo.ext, "tcp", NODE_IP, 9090) == EXT_IP
        assert ask(topo.node, "tcp", NODE_IP, 8080) == NODE_IP     # from the node itself (output)
        # hairpin: pods reaching a hostPort on their own node, also the pod behind it
        assert ask(pod2, "tcp", NODE_IP, 8080) == str(GW.ip)
        assert ask(pod1, "tcp", NODE_IP, 8080) == str(GW.ip)
        assert ask(pod1, "tcp", "10.244.1.6", 81) == "10.244.1.5"  # plain pod-to-pod still unmasqueraded
        with pytest.raises(CniError):                               # a hostPort held by another pod
            in_netns(topo.node, nft.set_hostports, "ctr3",
                     [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], "10.244.1.7")
        nft.reset()           # as in a fresh process (the shim's fallback DEL): found by comment
        in_netns(topo.node, nft.clear_hostports, "ctr1")
        in_netns(topo.node, nft.clear_hostports, "ctr1")                               # idempotent
        assert ask(topo.ext, "tcp", NODE_IP, 8080) == ""
        assert ask(topo.ext, "tcp", NODE_IP, 9090) == EXT_IP      # the other pod's mapping stays
    listing = sh("ip", "netns", "exec", topo.node, "nft", "list", "table", "ip", "kubeweft-cni").stdout
    assert "8080" not in listing and "9090" in listing


def test_parallel_wire_and_unwire(topo):
    """16 pods wired and unwired at once from 16 threads of the node netns (as the agent's gRPC
    workers do): every pod gets its own working interface, and nothing is left afterwards."""
    from kubeweft.cni import datapath
    bridge(topo)
    links = node_links(topo)
    pods = {n: topo.pod_netns(n) for n in range(16)}
    barrier = threading.Barrier(16, timeout=20)

    def one(n: int):
        barrier.wait()
        return datapath.wire_pod(pods[n], "eth0", ipaddress.IPv4Interface(f"10.244.1.{10 + n}/24"), GW.ip,
                                 "kw0", 1450, datapath.host_veth_name(f"par{n}", "eth0"))

    results: dict = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, in_netns(topo.node, one, n)))
               for n in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 16
    assert in_netns(topo.node, datapath.list_host_veths, "kw0") == {w.host_veth for w in results.values()}
    assert ping(f"{topo.prefix}-pod3", "10.244.1.12") and ping(f"{topo.prefix}-pod15", "10.244.1.10")

    def gone(n: int) -> None:
        barrier.wait()
        datapath.unwire_pod(pods[n], "eth0", results[n].host_veth)

    barrier.reset()
    threads = [threading.Thread(target=in_netns, args=(topo.node, gone, n)) for n in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert node_links(topo) == links
    assert all(datapath.inspect_pod(ns, "eth0") is None for ns in pods.values())


def receive_time(ns_server: str, ns_client: str, ip: str, port: int, size: int) -> float:
    """Seconds the server in ns_server takes to receive `size` bytes sent by a client in ns_client."""
    ready, out = threading.Event(), {}

    def serve() -> None:
        with lab_netns.entered(ns_server):
            s = socket.socket()
        with s:
            s.settimeout(20)
            s.bind((ip, port))
            s.listen(1)
            ready.set()
            c, _ = s.accept()
            with c:
                c.settimeout(20)
                got, start = 0, None
                while got < size:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    if start is None:
                        start = time.perf_counter()
                    got += len(chunk)
                out["t"] = time.perf_counter() - start

    def send() -> None:
        with lab_netns.entered(ns_client):
            s = socket.socket()
        with s:
            s.settimeout(20)
            s.connect((ip, port))
            s.sendall(b"x" * size)

    srv = threading.Thread(target=serve, daemon=True)
    srv.start()
    assert ready.wait(10)
    cli = threading.Thread(target=send, daemon=True)
    cli.start()
    srv.join(timeout=30)
    cli.join(timeout=5)
    return out["t"]


def test_bandwidth_shapes_both_directions(topo):
    from kubeweft.cni import bandwidth, datapath
    bridge(topo)
    ns, w = wire(topo, 1, "10.244.1.5")
    pod1 = f"{topo.prefix}-pod1"
    size = 600_000                                                  # bytes
    fast_in = receive_time(pod1, topo.node, "10.244.1.5", 5001, size)
    fast_out = receive_time(topo.node, pod1, "10.244.1.1", 5002, size)
    rate = 4_000_000                                                # bit/s: 500 kB/s
    in_netns(topo.node, bandwidth.apply_bandwidth, ns, "eth0", w.host_veth,
             {"ingressRate": rate, "ingressBurst": 400_000, "egressRate": rate, "egressBurst": 400_000})
    assert "tbf" in sh("tc", "-n", topo.node, "qdisc", "show", "dev", w.host_veth).stdout
    assert "tbf" in sh("tc", "-n", pod1, "qdisc", "show", "dev", "eth0").stdout
    slow_in = receive_time(pod1, topo.node, "10.244.1.5", 5003, size)
    slow_out = receive_time(topo.node, pod1, "10.244.1.1", 5004, size)
    # 600 kB at 500 kB/s, less a 50 kB burst: about 1.1 s either way; unshaped it takes milliseconds
    assert 0.8 < slow_in < 4 and 0.8 < slow_out < 4, (fast_in, fast_out, slow_in, slow_out)
    assert fast_in < 0.3 and fast_out < 0.3, (fast_in, fast_out)
    assert bandwidth.plan_bandwidth({"egressRate": 8000}) == (None, bandwidth.Tbf(8000, 3000))
    in_netns(topo.node, datapath.unwire_pod, ns, "eth0", w.host_veth)
