"""What a node and the lab expose, and to whom, over real sockets:

- the agent's metrics on 127.0.0.1:10249 only (kube-proxy's default); healthz on every address;
- the agent's gRPC socket 0600 in a directory 0700 of the agent's own, whatever the umask and
  whoever made the directory (scratch agents, namespaces prefixed h16e);
- the lab API: 401 with kube-apiserver's Status body to every request without a valid token, on
  the host's endpoint and on the LAN's, and the real kubectl told "Unauthorized";
- CVE-2020-8558: a neighbour on the node's LAN (netns h16n<id>, one more port of the lab's lan0
  bridge) sends raw Ethernet frames to the node's MAC with destination 127.0.0.1: neither a
  NodePort nor a listener on the node's loopback answers, nor does a SYN reach the endpoint,
  also with route_localnet=1 (kubeweft's nftables drop it, and count it); the agents leave
  route_localnet at 0.

The NodePort and pods live in the shared `labk` lab (k8s namespace h16-exposure).
"""
from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import random
import socket
import ssl
import stat
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from kubeweft.lab import netns as lab_netns

from .services_helpers import EXTERNAL, cluster, http_get, svc_port
from .test_cni_conformance import ScratchNode
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "h16-exposure"
NEIGHBOUR_IP = "192.168.56.250"          # on the nodes' LAN, beyond every node's and the router's
UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="h16e")


def in_netns(netns: str | None, fn, *args):
    """fn(*args) on a worker thread inside netns (sockets made there stay there)."""
    def run():
        if netns is None:
            return fn(*args)
        with lab_netns.entered(netns):
            return fn(*args)
    return _pool.submit(run).result(timeout=60)


def ip_json(netns: str, *args: str) -> list:
    out = lab_netns.run(netns, ["ip", "-j", *args], capture_output=True, text=True, timeout=10, check=True)
    return json.loads(out.stdout or "[]")


# --- the lab ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.ips = cl.start_pods(web={"web-1": "node1"})
        cl.svc = cl.service("web", [svc_port(80, "http", name="http")], selector={"app": "web"},
                            type_="NodePort")
        cl.np = cl.svc.node_ports["http"]
        cl.wait_endpoints("web", 1)
        cl.wait_answer(EXTERNAL, cl.node_ip["node1"], cl.np)
        yield cl


# --- metrics and healthz ------------------------------------------------------------------------

@pytest.mark.parametrize("node", ["node1", "node2"])
def test_metrics_answer_on_loopback_only(c, node):
    netns, ip = c.cfg.node_netns(node), c.node_ip[node]
    status, body = http_get(netns, "127.0.0.1", 10249, "/metrics")
    assert status == 200 and "kubeproxy_sync_proxy_rules_duration_seconds" in body
    status, why = http_get(netns, ip, 10249, "/metrics")
    assert status == 0 and "ConnectionRefused" in why, (status, why)
    status, why = http_get(c.cfg.external_netns, ip, 10249, "/metrics")
    assert status == 0 and "ConnectionRefused" in why, (status, why)
    # kube-proxy's healthz stays on every address: load balancers probe it from outside
    assert http_get(c.cfg.external_netns, ip, 10256, "/healthz")[0] == 200


# --- the lab API --------------------------------------------------------------------------------

def _forged_jwt() -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    claims = {"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:kube-system:x",
              "aud": ["https://kubernetes.default.svc.cluster.local"], "exp": int(time.time()) + 3600,
              "kubernetes.io": {"namespace": "kube-system", "serviceaccount": {"name": "x", "uid": "1"}}}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


CREDENTIALS = {"none": None, "empty bearer": "Bearer ", "wrong token": "Bearer not-the-token",
               "basic": "Basic " + base64.b64encode(b"admin:admin").decode(),
               "unsigned jwt": "Bearer " + _forged_jwt(), "token without scheme": "TOKEN"}
PATHS = ["/api/v1/namespaces/kube-system/secrets", "/apis", "/version", "/api/v1/nodes?watch=1"]


def api_get(netns: str | None, url: str, ca: Path, authorization: str | None) -> tuple[int, dict]:
    def run():
        ctx = ssl.create_default_context(cafile=str(ca))
        req = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    return in_netns(netns, run)


def endpoints(labk) -> dict[str, tuple[str | None, str]]:
    """Where the API listens: the host's loopback, and the control-plane address on the LAN (from a node)."""
    host = yaml.safe_load(labk.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    lan = yaml.safe_load(labk.cfg.node_kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return {"host": (None, host), "lan": (labk.cfg.node_netns("node1"), lan)}


@pytest.mark.parametrize("where", ["host", "lan"])
@pytest.mark.parametrize("credential", sorted(CREDENTIALS))
def test_the_api_answers_401_without_a_valid_token(labk, where, credential):
    netns, server = endpoints(labk)[where]
    for path in PATHS:
        status, body = api_get(netns, server + path, labk.cfg.pki_dir / "ca.crt", CREDENTIALS[credential])
        assert (status, body) == (401, UNAUTHORIZED), (path, status, body)
    # the same server answers the admin's token: the 401 is about the credential, not the path
    token = yaml.safe_load(labk.kubeconfig.read_text())["users"][0]["user"]["token"]
    status, body = api_get(netns, server + "/version", labk.cfg.pki_dir / "ca.crt", f"Bearer {token}")
    assert status == 200 and "gitVersion" in body


def test_kubectl_with_a_wrong_token_is_unauthorized(labk, tmp_path):
    # (with no credentials at all kubectl asks for a username before it sends anything)
    empty = tmp_path / "kubeconfig"
    empty.write_text("")
    proc = subprocess.run([labk.kubectl_path, "--server", endpoints(labk)["host"][1], "--certificate-authority",
                           str(labk.cfg.pki_dir / "ca.crt"), "--token", "not-the-token", "get", "secrets", "-A"],
                          env={**os.environ, "KUBECONFIG": str(empty)}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "You must be logged in to the server" in proc.stderr, proc.stderr


# --- CVE-2020-8558: 127.0.0.1 from a neighbour on the LAN ---------------------------------------

@pytest.fixture(scope="module")
def neighbour(labk):
    """A netns on the nodes' L2 segment: a veth made in the underlay, one end on lan0, the other
    moved straight into the neighbour (never into the root netns)."""
    cfg = labk.cfg
    name, port = f"h16n{uuid.uuid4().hex[:6]}", f"h16n{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        for argv in (["ip", "-n", cfg.underlay_netns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                      "netns", name],
                     ["ip", "-n", cfg.underlay_netns, "link", "set", port, "master", "lan0", "up"],
                     ["ip", "-n", name, "addr", "add", f"{NEIGHBOUR_IP}/24", "dev", "eth0"],
                     ["ip", "-n", name, "link", "set", "eth0", "up"],
                     ["ip", "-n", name, "link", "set", "lo", "up"]):
            subprocess.run(argv, check=True, timeout=10, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)     # takes the veth pair


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_frame(src_mac: bytes, dst_mac: bytes, src: str, dst: str, sport: int, dport: int) -> bytes:
    """Ethernet + IPv4 + TCP SYN, checksums done: what the attacker writes on the wire."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64,
                     socket.IPPROTO_TCP, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


def _tcp_of(frame: bytes) -> tuple[str, str, int, int, int] | None:
    """(src, dst, sport, dport, flags) of an IPv4 TCP frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_TCP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    sport, dport, _, _, _, flags = struct.unpack("!HHIIBB", frame[14 + ihl:14 + ihl + 14])
    return socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]), sport, dport, flags


class Sniffer:
    """Every TCP packet seen on an interface of a netns, from a thread, until stopped."""

    def __init__(self, netns: str, ifname: str = "eth0") -> None:
        self.packets: list[tuple[str, str, int, int, int]] = []
        self._stop = threading.Event()
        ready = threading.Event()

        def run() -> None:
            with lab_netns.entered(netns):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
            s.bind((ifname, 0))
            s.settimeout(0.1)
            ready.set()
            try:
                while not self._stop.is_set():
                    try:
                        frame, addr = s.recvfrom(65535)
                    except TimeoutError:
                        continue
                    if addr[2] != socket.PACKET_OUTGOING and (tcp := _tcp_of(frame)):
                        self.packets.append(tcp)
            finally:
                s.close()
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> list[tuple[str, str, int, int, int]]:
        self._stop.set()
        self._thread.join(10)
        return self.packets


def mac_of(netns: str, ifname: str = "eth0") -> bytes:
    return bytes.fromhex(ip_json(netns, "link", "show", ifname)[0]["address"].replace(":", ""))


def attack(c, neighbour: str, node: str, dst: str, dport: int, backend: str | None = None) -> dict:
    """One SYN from the neighbour to the node's MAC for dst:dport. What answered the neighbour,
    and which SYNs the backend pod's interface saw (dst port 8080), within 2 s."""
    node_mac, src_mac = mac_of(c.cfg.node_netns(node)), mac_of(neighbour)
    sport = random.randint(20000, 60000)
    at_pod = Sniffer(c.source_netns(backend)) if backend else None
    at_neighbour = Sniffer(neighbour)
    try:
        def send() -> None:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            try:
                s.bind(("eth0", 0))
                s.send(syn_frame(src_mac, node_mac, NEIGHBOUR_IP, dst, sport, dport))
            finally:
                s.close()
        in_netns(neighbour, send)
        time.sleep(2)
    finally:
        answers = at_neighbour.stop()
        seen = at_pod.stop() if at_pod else []
    back = [p for p in answers if p[1] == NEIGHBOUR_IP and p[3] == sport]
    return {"syn-ack": any(p[4] & 0x12 == 0x12 for p in back), "rst": any(p[4] & 0x04 for p in back),
            "backend saw": [p for p in seen if p[3] == 8080 and p[4] & 0x02 and not p[4] & 0x10]}


def loopback_drops(c, node: str) -> int:
    """Packets kubeweft's filter-prerouting dropped for a loopback destination from outside."""
    out = lab_netns.run(c.cfg.node_netns(node), ["nft", "-j", "list", "chain", "ip", "kubeweft", "filter-prerouting"],
                        capture_output=True, text=True, timeout=10, check=True).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule and "127.0.0.0" in json.dumps(rule["expr"]):
            return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    raise AssertionError(f"no loopback rule in filter-prerouting: {out}")


def route_localnet(c, node: str) -> dict[str, str]:
    out = lab_netns.run(c.cfg.node_netns(node), ["sysctl", "-a", "-r", r"\.route_localnet$"],
                        capture_output=True, text=True, timeout=10, check=True).stdout
    return dict(line.split(" = ") for line in out.splitlines() if " = " in line)


@pytest.mark.parametrize("node", ["node1", "node2", "node3"])
def test_the_agents_leave_route_localnet_off(c, node):
    values = route_localnet(c, node)
    assert "net.ipv4.conf.all.route_localnet" in values and "net.ipv4.conf.eth0.route_localnet" in values
    assert set(values.values()) == {"0"}, values


def test_the_neighbour_reaches_the_node_port_on_the_node_address(c, neighbour):
    """The rig works: the same frame, to the node's own address, opens a connection to the pod."""
    got = attack(c, neighbour, "node1", c.node_ip["node1"], c.np, backend="web-1")
    assert got["syn-ack"] and got["backend saw"], got


@pytest.mark.parametrize("target", ["nodePort", "loopback listener"])
def test_the_neighbour_reaches_nothing_through_127_0_0_1(c, neighbour, target):
    port = c.np if target == "nodePort" else 10249         # the agent's metrics, on 127.0.0.1
    before = loopback_drops(c, "node1")
    got = attack(c, neighbour, "node1", "127.0.0.1", port, backend="web-1")
    assert not got["syn-ack"] and not got["rst"] and not got["backend saw"], got
    assert loopback_drops(c, "node1") > before             # kubeweft's rule dropped it


@pytest.mark.parametrize("target", ["nodePort", "loopback listener"])
def test_not_even_with_route_localnet_on(c, neighbour, target):
    """kube-proxy's iptables mode sets route_localnet=1 (its localhost nodePorts); the kernel then
    routes 127.0.0.1 from outside, and only the nftables rule stands in the way."""
    netns = c.cfg.node_netns("node1")
    keys = ["net.ipv4.conf.all.route_localnet", "net.ipv4.conf.eth0.route_localnet"]
    port = c.np if target == "nodePort" else 10249
    try:
        lab_netns.run(netns, ["sysctl", "-q", *[f"{k}=1" for k in keys]], check=True, timeout=10)
        before = loopback_drops(c, "node1")
        got = attack(c, neighbour, "node1", "127.0.0.1", port, backend="web-1")
        assert not got["syn-ack"] and not got["rst"] and not got["backend saw"], got
        assert loopback_drops(c, "node1") > before
    finally:
        lab_netns.run(netns, ["sysctl", "-q", *[f"{k}=0" for k in keys]], check=True, timeout=10)
    assert set(route_localnet(c, "node1").values()) == {"0"}


# --- the agent's socket -------------------------------------------------------------------------

UMASK_0 = ("/bin/sh", "-c", 'umask 000 && exec "$@"', "umask-0")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _umask_of(pid: int) -> str:
    return next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("Umask:"))


@pytest.mark.parametrize("made_by", ["the agent", "the IPAM store first", "someone else, 0777"])
def test_the_socket_is_0600_in_a_directory_0700_whatever_the_umask(tmp_path, made_by):
    run = tmp_path / "run"
    extra: tuple = ()
    if made_by == "the agent":
        extra = ("--state-dir", str(tmp_path / "state"))   # the socket's dir is made by prepare_socket
    elif made_by == "someone else, 0777":
        run.mkdir()
        run.chmod(0o777)                                    # kubelet's DirectoryOrCreate makes 0755
    # else: the state dir is the socket's dir, and the IPAM store's mkdir(parents=True) makes it
    with ScratchNode(tmp_path, pod_cidr="10.246.9.0/24", bridge="kwe", tag=f"h16e{os.getpid() % 100000}",
                     agent_prefix=UMASK_0, agent_args=extra) as node:
        # the agent runs under umask 0 (0177 only while it binds the socket, which a connect may
        # already reach)
        wait_for("the agent's umask back to 0", lambda: _umask_of(node.agent.pid) == "0000", timeout=5)
        sock = os.stat(node.socket)
        assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600 and sock.st_uid == 0
        assert node.socket.parent == run and _mode(run) == 0o700 and os.stat(run).st_uid == 0
        assert node.cni("STATUS")[:2] == (0, None)          # root still gets in


def test_the_agent_refuses_a_shared_directory_for_its_socket(tmp_path):
    shared = tmp_path / "run"
    shared.mkdir()
    shared.chmod(0o1777)                                     # what /tmp looks like
    node = ScratchNode(tmp_path, pod_cidr="10.246.10.0/24", bridge="kwe", tag=f"h16e{os.getpid() % 100000}",
                       agent_args=("--state-dir", str(tmp_path / "state")))
    with pytest.raises(AssertionError, match="needs a directory of its own"), node:
        pass
    assert _mode(shared) == 0o1777                           # and leaves it as it was
