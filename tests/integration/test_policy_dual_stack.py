"""NetworkPolicy over IPv6 and dual-stack pods, with real packets through a real kernel, without
a lab: a scratch node namespace with a bridge (both families on it, br_netfilter's sysctls on),
pod namespaces on veths, an external namespace routed through the node, and the policy
controller writing its table into the node namespace, its watch events fed by hand (as
test_policy_basic's bookkeeping test does).

Each test runs per family: `ipv6` (pods with one IPv6 address) and `dual` (one of each; every
check runs over both).
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kubeweft.cni import netns as cni_netns
from kubeweft.lab import netns

from .agent_helpers import cni_add_request
from .netns_helpers import scratch_netns
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAMILIES = {"ipv6": (6,), "dual": (4, 6)}
RANGES = {4: ipaddress.ip_network("10.244.0.0/24"), 6: ipaddress.ip_network("fd00:10:244::/64")}
EXT_NET = {4: ipaddress.ip_network("203.0.113.0/24"), 6: ipaddress.ip_network("2001:db8:113::/64")}
PORT = 8080


def sh(ns: str, *argv: str) -> None:
    netns.run(ns, list(argv), check=True, capture_output=True, timeout=10)


@dataclass
class Node:
    """The scratch node and what runs on it."""
    name: str
    ext: str
    families: tuple[int, ...]
    spare: list[str]                               # namespaces made for pods not wired yet
    pods: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)   # name -> (netns, ips)

    def cidrs(self) -> list[str]:
        return [str(RANGES[v]) for v in self.families]

    def ext_ips(self) -> tuple[str, ...]:
        return tuple(str(EXT_NET[v][2]) for v in self.families)

    def wire(self, name: str, host: int) -> tuple[str, tuple[str, ...]]:
        """A pod namespace on the bridge with address `host` of each family's range."""
        ns = self.spare.pop()
        ips = tuple(str(RANGES[v][host]) for v in self.families)
        veth = f"kwd{host}"
        sh(self.name, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh(self.name, "ip", "link", "set", veth, "master", "kw0", "up")
        sh(ns, "ip", "link", "set", "lo", "up")
        for v, ip in zip(self.families, ips, strict=True):
            extra = ["nodad"] if v == 6 else []
            sh(ns, "ip", "addr", "add", f"{ip}/{RANGES[v].prefixlen}", "dev", "eth0", *extra)
        sh(ns, "ip", "link", "set", "eth0", "up")
        for v in self.families:
            sh(ns, "ip", f"-{v}", "route", "add", "default", "via", str(RANGES[v][1]))
        self.pods[name] = (ns, ips)
        return ns, ips


@contextlib.contextmanager
def scratch_node(family: str, spare: int) -> Iterator[Node]:
    """The node, the external host and `spare` pod namespaces, all removed afterwards."""
    families = FAMILIES[family]
    with scratch_netns("h13ds", 2 + spare) as made:
        node, ext, *pods = made
        # no DAD on the links made here (both veth ends are made in the node's netns): a
        # tentative link-local address makes the node's first neighbour solicitations go out
        # from ::, which the pod does not answer to the node, and the first probes time out
        sh(node, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
        sh(node, "ip", "link", "set", "lo", "up")
        sh(node, "ip", "link", "add", "kw0", "type", "bridge")
        for v in families:
            extra = ["nodad"] if v == 6 else []
            sh(node, "ip", "addr", "add", f"{RANGES[v][1]}/{RANGES[v].prefixlen}", "dev", "kw0", *extra)
        sh(node, "ip", "link", "set", "kw0", "up")
        sh(node, "ip", "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext)
        sh(ext, "ip", "link", "set", "lo", "up")
        for v in families:
            extra = ["nodad"] if v == 6 else []
            sh(node, "ip", "addr", "add", f"{EXT_NET[v][1]}/{EXT_NET[v].prefixlen}", "dev", "ext0", *extra)
            sh(ext, "ip", "addr", "add", f"{EXT_NET[v][2]}/{EXT_NET[v].prefixlen}", "dev", "eth0", *extra)
        sh(node, "ip", "link", "set", "ext0", "up")
        sh(ext, "ip", "link", "set", "eth0", "up")
        for v in families:
            sh(ext, "ip", f"-{v}", "route", "add", str(RANGES[v]), "via", str(EXT_NET[v][1]))
        # forwarding and br_netfilter in the scratch node only (sysctls of its own netns)
        sh(node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
           "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1")
        # IPv6 takes a moment after the links come up (link-local DAD): wait until the external
        # host reaches the node on each family, so that a failed probe means a drop
        for v in families:
            wait_for(f"the node from the external host over IPv{v}", lambda v=v: netns.run(
                ext, ["ping", f"-{v}", "-c1", "-W1", str(EXT_NET[v][1])], capture_output=True,
                timeout=5).returncode == 0, 15)
        yield Node(node, ext, families, pods)


def controller(node: Node, policies: list[dict], pods: dict[str, dict]):
    """A policy controller on the scratch node, after its first lists: namespace x, `policies`,
    `pods` (name -> labels; the wired ones with their addresses as podIPs, the others with none)."""
    from kubeweft.proxy.nftables import Nft
    from kubeweft.proxy.policy_controller import PolicyController

    ctl = PolicyController(None, "node1", node.cidrs(), nft=Nft(node.name), netns=node.name)
    ctl._on_sync("ns", {("", "x"): {"metadata": {"name": "x"}}})
    ctl._on_sync("pol", {("x", p["metadata"]["name"]): p for p in policies})
    ctl._on_sync("pod", {("x", name): pod_obj(name, labels, node.pods.get(name, ("", ()))[1])
                         for name, labels in pods.items()})
    with ctl.lock:
        ctl._plan_locked()
        ctl.rebuild()
    return ctl


def pod_obj(name: str, labels: dict, ips: tuple[str, ...]) -> dict:
    status = {"podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]} if ips else {}
    return {"metadata": {"namespace": "x", "name": name, "labels": labels},
            "spec": {"nodeName": "node1"}, "status": status}


def policy(name: str, spec: dict) -> dict:
    return {"metadata": {"namespace": "x", "name": name}, "spec": spec}


def sock_in(ns: str, ip: str, kind: int) -> socket.socket:
    """A socket of `ip`'s family made in netns `ns` (a socket stays in the netns it was made in)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with cni_netns.entered(ns):
        return socket.socket(family, kind)


@contextlib.contextmanager
def serving(socks: list[socket.socket], handle) -> Iterator[None]:
    """handle(sock) again and again on a thread per socket (a timeout or an error: again) until
    the block ends; then the sockets are closed."""
    stop = threading.Event()

    def serve(s: socket.socket) -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                handle(s)

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(2)
        for s in socks:
            s.close()


def tcp_listeners(ns: str, ips: tuple[str, ...]):
    """Accept (and close) connections on PORT of each address, until the block ends."""
    socks = []
    for ip in ips:
        s = sock_in(ns, ip, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, PORT))
        s.listen(64)
        s.settimeout(0.2)
        socks.append(s)
    return serving(socks, lambda s: s.accept()[0].close())


def connects(src_ns: str, dst_ip: str, timeout: float = 1.0) -> bool:
    """A new TCP connection from netns `src_ns` to dst_ip:PORT is set up (a drop: timeout)."""
    s = sock_in(src_ns, dst_ip, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((dst_ip, PORT))
        return True
    except (TimeoutError, OSError):
        return False
    finally:
        s.close()


def counter(node: Node, name: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", node.name, "nft", "-j", "list", "counter", "inet",
                          "kubeweft-policy", name], capture_output=True, text=True, check=True, timeout=10).stdout
    return next(i["counter"]["packets"] for i in json.loads(out)["nftables"] if "counter" in i)


def verdicts(node: Node, sources: dict[str, str], dst: str) -> dict[tuple[str, str], bool]:
    """(source name, destination address) -> connected, for every address of pod `dst` and each
    source netns of the same family."""
    out = {}
    dst_ns, dst_ips = node.pods[dst]
    with tcp_listeners(dst_ns, dst_ips):
        for name, src_ns in sources.items():
            for ip in dst_ips:
                out[(name, ip)] = connects(src_ns, ip)
    return out


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    return request.param


def test_default_deny_over_ipv6_and_a_pod_selector_admitting_both_addresses(family, caplog):
    from kubeweft.proxy import render_policy as rp
    from kubeweft.proxy.nflog import DropLog

    with scratch_node(family, 3) as node:
        node.wire("web", 2)
        node.wire("client", 3)
        node.wire("other", 4)
        pods = {"web": {"app": "web"}, "client": {"app": "client"}, "other": {"app": "other"}}
        deny = policy("deny", {"podSelector": {"matchLabels": {"app": "web"}}})
        ctl = controller(node, [deny], pods)
        with cni_netns.entered(node.name):             # the nflog socket reads the node's netns
            drops = DropLog(rp.NFLOG_GROUP, ctl.policy_of).start()
        try:
            sources = {"client": node.pods["client"][0], "other": node.pods["other"][0], "ext": node.ext}
            # no policy selects other: reachable on every address (the table is in force)
            assert all(verdicts(node, sources, "other").values())
            # default deny: no source reaches web on any address, and each drop is counted
            got = verdicts(node, sources, "web")
            assert not any(got.values()), got
            assert counter(node, f"{rp.policy_id('x/deny')}_in_drop") >= len(got)
            # and logged, IPv6 ones with their addresses (the last of each pod's is its IPv6 one)
            web6, client6 = node.pods["web"][1][-1], node.pods["client"][1][-1]
            want = f"denied ingress by x/deny: tcp [{client6}]:"
            wait_for("an IPv6 denial in the drop log", lambda: want in caplog.text and f"-> [{web6}]:{PORT}" in caplog.text, 5)
            # a pod selector admits both of the client's addresses, nothing else
            allow = policy("allow-client", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": PORT}]}]})
            ctl._on_event("pol", "ADDED", allow)
            ctl.sync()
            got = verdicts(node, sources, "web")
            assert got == {(s, ip): s == "client" for s, ip in got}, got
        finally:
            drops.stop()


def test_an_ipv6_ip_block_with_except(family):
    with scratch_node(family, 3) as node:
        node.wire("web", 2)
        node.wire("near", 3)
        node.wire("far", 20)
        pods = {"web": {"app": "web"}, "near": {}, "far": {}}
        # IPv6 only (IPv4 addresses: no block admits them): the pod range but ::10-::1f, and the
        # external net but its one host
        block = policy("block", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "fd00:10:244::/64", "except": ["fd00:10:244::10/124"]}},
            {"ipBlock": {"cidr": "2001:db8:113::/64", "except": ["2001:db8:113::2/128"]}}]}]})
        controller(node, [block], pods)
        got = verdicts(node, {"near": node.pods["near"][0], "far": node.pods["far"][0], "ext": node.ext}, "web")
        want = {(s, ip): s == "near" and ":" in ip for s, ip in got}
        assert got == want, got


def test_the_first_packets_of_a_new_dual_stack_pod_meet_the_policy_in_force(family):
    """A denied source sends to the new pod's addresses all along: from before the CNI ADD, through
    the hook (which puts every address into the sets), to after the interface is up. Not one
    datagram reaches the pod; the allowed client's reach it on every address."""
    with scratch_node(family, 3) as node:
        node.wire("client", 3)
        node.wire("other", 4)
        pods = {"client": {"app": "client"}, "other": {"app": "other"}, "new": {"app": "web"}}
        allow = policy("allow-client", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]})
        ctl = controller(node, [allow], pods)
        new_ns = node.spare[-1]
        new_ips = tuple(str(RANGES[v][5]) for v in node.families)
        received: list[tuple[str, bytes]] = []
        listeners = []
        for ip in new_ips:                         # bound before the address exists (freebind)
            s = sock_in(new_ns, ip, socket.SOCK_DGRAM)
            if ":" in ip:
                s.setsockopt(socket.IPPROTO_IPV6, 78, 1)       # IPV6_FREEBIND
            else:
                s.setsockopt(socket.SOL_IP, 15, 1)                 # IP_FREEBIND
            s.bind((ip, PORT))
            s.settimeout(0.1)
            listeners.append(s)
        stop = threading.Event()

        def flood() -> None:
            socks = {ip: sock_in(node.pods["other"][0], ip, socket.SOCK_DGRAM) for ip in new_ips}
            socks.update({f"ext {ip}": sock_in(node.ext, ip, socket.SOCK_DGRAM) for ip in new_ips})
            try:
                while not stop.is_set():
                    for key, s in socks.items():
                        with contextlib.suppress(OSError):
                            s.sendto(b"denied", (key.split()[-1], PORT))
                    time.sleep(0.002)
            finally:
                for s in socks.values():
                    s.close()

        def take(s: socket.socket) -> None:
            data, peer = s.recvfrom(64)
            received.append((peer[0], data))

        flooder = threading.Thread(target=flood, daemon=True)
        with serving(listeners, take):
            try:
                flooder.start()
                time.sleep(0.5)
                ctl.pod_added("x", "new", list(new_ips), "cid-new")       # the CNI's hook, then the wiring
                assert node.wire("new", 5) == (new_ns, new_ips)
                client_socks = [sock_in(node.pods["client"][0], ip, socket.SOCK_DGRAM) for ip in new_ips]

                def client_heard() -> bool:
                    for s, ip in zip(client_socks, new_ips, strict=True):
                        s.sendto(b"allowed", (ip, PORT))
                    return {p for p, d in received if d == b"allowed"} == set(node.pods["client"][1])
                wait_for("the client's datagrams on every address of the new pod", client_heard, 10)
                time.sleep(1.0)                                           # the flood goes on meanwhile
                for s in client_socks:
                    s.close()
            finally:
                stop.set()
                flooder.join(3)
        assert not [r for r in received if r[1] == b"denied"], received[:5]


class RecordingHook:
    """A pod hook that records what the CNI tells it and fails the ADD there, before any wiring."""

    def __init__(self) -> None:
        self.added: list[tuple[str, str, tuple[str, ...], str]] = []

    def pod_added(self, namespace: str, name: str, ips, container_id: str) -> None:
        from kubeweft.cni.errors import TRY_AGAIN_LATER, CniError

        self.added.append((namespace, name, tuple(ips), container_id))
        raise CniError(TRY_AGAIN_LATER, "Try again later", "recorded")

    def pod_deleted(self, container_id: str) -> None:
        pass


def test_the_cni_hook_gets_every_address_it_allocated_primary_first(tmp_path):
    from kubeweft.cni.plugin import CniPlugin
    from kubeweft.proxy.agent import CniServicer

    plugin = CniPlugin("10.245.0.0/24,fd00:245::/64", tmp_path, mtu=1500)
    hook = RecordingHook()
    plugin.pod_hooks.append(hook)
    request = cni_add_request("cid-ds", "x", "new", "kwds", tmp_path)
    resp = CniServicer(plugin)._call(request, None)
    assert resp.HasField("error") and "recorded" in resp.error.details, resp
    [(ns, name, ips, cid)] = hook.added
    assert (ns, name, cid) == ("x", "new", "cid-ds")
    assert [ipaddress.ip_address(ip).version for ip in ips] == [4, 6]
    assert ipaddress.ip_address(ips[0]) in ipaddress.ip_network("10.245.0.0/24")
    assert ipaddress.ip_address(ips[1]) in ipaddress.ip_network("fd00:245::/64")
    assert not plugin.allocator(None).reservations()          # a failed ADD keeps no address
