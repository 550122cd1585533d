"""NetworkPolicy cannot be bypassed by spoofing an allowed pod's address, on the shared kubeweft
lab: a server admits ingress only from pod A; pod B, on the server's node, sends TCP SYNs with
A's source address from a raw socket in its own netns. None reaches the server (a packet socket
in the server's netns counts SYNs from A's address while A sends nothing), the node's spoof
counter rises, B's honest connection is denied by the policy and A's is answered."""
from __future__ import annotations

import ipaddress
import socket
import struct
import time

import pytest
from kubeweft.cni import antispoof
from kubeweft.lab import netns as lab_netns
from kubeweft.lab.probe import CONNECTED, REFUSED, TIMEOUT

from .netpol_helpers import apply_policies, netpol
from .services_helpers import cluster
from .test_cni_antispoof import ETH_P_IP, _checksum, _packet_socket
from .waiting import wait_for

pytestmark = pytest.mark.integration

NS = "h16-spoof"
PORT = 8080
SPOOF_SPORT = 47001


def tcp_syn(src_ip: str, dst_ip: str, sport: int, dport: int) -> bytes:
    """An IPv4 packet holding a TCP SYN, checksums filled (the kernel adds no header: IPPROTO_RAW)."""
    src, dst = ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    csum = _checksum(src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, socket.IPPROTO_TCP, 0, src, dst)
    return hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:] + tcp


def syn_from(frame: bytes, src_ip: str, dport: int) -> bool:
    """Whether an Ethernet frame holds a TCP SYN (no ACK) from src_ip to dport. Pure."""
    if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP or frame[23] != socket.IPPROTO_TCP:
        return False
    if frame[26:30] != ipaddress.IPv4Address(src_ip).packed:
        return False
    tcp = frame[14 + (frame[14] & 0x0F) * 4:]
    return len(tcp) >= 14 and struct.unpack("!H", tcp[2:4])[0] == dport and tcp[13] & 0x12 == 0x02


def _raw_ip_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)


def count_syns(listener: socket.socket, src_ip: str, dport: int, seconds: float) -> int:
    n, deadline = 0, time.monotonic() + seconds
    listener.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            n += syn_from(listener.recv(2048), src_ip, dport)
        except TimeoutError:
            continue
    return n


def test_a_spoofed_allowed_source_does_not_pass_the_policy(labk):
    node_ns = lab_netns.path(labk.cfg.node_netns("node1"))
    with cluster(labk, NS) as c:
        c.pod("server", "node1", labels={"app": "server"})
        c.pod("a", "node2", labels={"role": "a"})
        c.pod("b", "node1", labels={"role": "b"})
        ips = c.wait_ready("server", "a", "b")
        apply_policies(labk, [netpol(NS, "only-a", {
            "podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "a"}}}]}]})])
        c.wait_answer("a", ips["server"], PORT)
        wait_for("B denied by the policy", lambda: c.probe("b", ips["server"], PORT, timeout=1.0).outcome
                 in (REFUSED, TIMEOUT), timeout=30, interval=0.3)

        before = lab_netns.call_in(node_ns, antispoof.read_counters)
        listener = lab_netns.call_in(lab_netns.path(c.source_netns("server")), _packet_socket, "eth0")
        sender = lab_netns.call_in(lab_netns.path(c.source_netns("b")), _raw_ip_socket)
        try:
            for _ in range(5):
                sender.sendto(tcp_syn(ips["a"], ips["server"], SPOOF_SPORT, PORT), (ips["server"], 0))
            spoofed_seen = count_syns(listener, ips["a"], PORT, 2.0)
            # the listener does see A's SYNs when A itself connects
            answered = c.probe("a", ips["server"], PORT)
            honest_seen = count_syns(listener, ips["a"], PORT, 1.0)
        finally:
            listener.close()
            sender.close()
        after = lab_netns.call_in(node_ns, antispoof.read_counters)

    assert spoofed_seen == 0, f"{spoofed_seen} SYNs spoofed by B as A reached the server"
    assert after["ipv4"] - before.get("ipv4", 0) >= 5, (before, after)
    assert answered.outcome == CONNECTED, answered.raw
    assert honest_seen >= 1
