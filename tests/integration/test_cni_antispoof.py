"""Source checks on pod veths, through the real agent and executable in scratch namespaces: a pod
that sends raw frames (AF_PACKET) with another pod's, the node's or an external source address,
another source MAC, or a gratuitous ARP claiming another pod's address reaches no pod (a raw
socket in the target's netns sees none of them), and each drop is counted by its reason; the
pod's own traffic still flows. The same for IPv6 (on an IPv6-only and a dual-stack node): another
pod's global or link-local source, a neighbour advertisement for an address the pod does not
own, a router advertisement."""
from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import struct
import time

import pytest
from kubeweft.cni import antispoof, netns
from kubeweft.lab import netns as lab_netns
from kubeweft.proxy import antispoof_metrics
from prometheus_client import REGISTRY

from .test_cni_conformance import ScratchNode, sh

pytestmark = pytest.mark.integration

ETH_P_ALL, ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0003, 0x0800, 0x0806, 0x86DD
ICMPV6, UDP = 58, 17
ND_ROUTER_ADVERT, ND_NEIGHBOR_ADVERT = 134, 136
BROADCAST = "ff:ff:ff:ff:ff:ff"
EXTERNAL = "198.51.100.7"       # TEST-NET-2: the frame goes only to the target pod's veth


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, 40001, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                      ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed)
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return _mac(dst_mac) + _mac(src_mac) + struct.pack("!H", ETH_P_IP) + hdr + udp


def _ip6_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, proto: int, payload: bytes,
               checksum_at: int, hop_limit: int = 64) -> bytes:
    """Ethernet + IPv6 + payload, with the upper-layer checksum (at byte checksum_at of the
    payload) over the RFC 8200 pseudo-header."""
    src, dst = ipaddress.IPv6Address(src_ip).packed, ipaddress.IPv6Address(dst_ip).packed
    pseudo = src + dst + struct.pack("!I3xB", len(payload), proto)
    body = payload + (b"\0" if len(payload) % 2 else b"")
    csum = _checksum(pseudo + body)
    payload = payload[:checksum_at] + struct.pack("!H", csum) + payload[checksum_at + 2:]
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, hop_limit, src, dst)
    return _mac(dst_mac) + _mac(src_mac) + struct.pack("!H", ETH_P_IPV6) + hdr + payload


def udp6_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, 40001, 8 + len(payload), 0) + payload
    return _ip6_frame(src_mac, dst_mac, src_ip, dst_ip, UDP, udp, 6)


def _marker_option(marker: bytes) -> bytes:
    """An ND option of an unknown type (receivers skip it) that carries the test's marker."""
    body = marker + b"\0" * (-(len(marker) + 2) % 8)
    return struct.pack("!BB", 250, (len(body) + 2) // 8) + body


def na_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, target: str, marker: bytes) -> bytes:
    """A neighbour advertisement (override) claiming `target` for src_mac."""
    icmp = (struct.pack("!BBHI16s", ND_NEIGHBOR_ADVERT, 0, 0, 0x20000000, ipaddress.IPv6Address(target).packed)
            + struct.pack("!BB6s", 2, 1, _mac(src_mac)) + _marker_option(marker))
    return _ip6_frame(src_mac, dst_mac, src_ip, dst_ip, ICMPV6, icmp, 2, hop_limit=255)


def ra_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, marker: bytes) -> bytes:
    """A router advertisement: "I am a default router for 30 minutes"."""
    icmp = struct.pack("!BBHBBHII", ND_ROUTER_ADVERT, 0, 0, 64, 0, 1800, 0, 0) + _marker_option(marker)
    return _ip6_frame(src_mac, dst_mac, src_ip, dst_ip, ICMPV6, icmp, 2, hop_limit=255)


def garp_frame(src_mac: str, claimed_ip: str, marker: bytes) -> bytes:
    ip = ipaddress.IPv4Address(claimed_ip).packed
    arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 2, _mac(src_mac), ip, _mac(BROADCAST), ip)
    return _mac(BROADCAST) + _mac(src_mac) + struct.pack("!H", ETH_P_ARP) + arp + marker


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    return s


def _link(pod: str, family: str = "4", scope: str = "global") -> tuple[str, str]:
    link = json.loads(sh("ip", "-j", "-n", pod, "link", "show", "eth0"))[0]
    info = json.loads(sh("ip", "-j", "-n", pod, f"-{family}", "addr", "show", "eth0", "scope", scope))[0]
    return link["address"], next(a["local"] for a in info["addr_info"] if "local" in a)


def _scraped(node: ScratchNode) -> dict[str, float]:
    """reason -> kubeweft_spoofed_packets_total, as the agent's registry serves it, read from the
    node's netns."""
    collector = antispoof_metrics.register_metrics(
        lambda: netns.call_in(lab_netns.path(node.node), antispoof.read_counters))
    try:
        return {s.labels["reason"]: s.value for m in REGISTRY.collect() if m.name == antispoof_metrics.NAME
                for s in m.samples if s.name.endswith("_total")}
    finally:
        antispoof_metrics.unregister_metrics(collector)


def _counters(node: ScratchNode) -> dict[str, int]:
    out = json.loads(sh("ip", "netns", "exec", node.node, "nft", "-j", "list", "table", "bridge", "kubeweft-cni"))
    return {o["counter"]["name"]: o["counter"]["packets"] for o in out["nftables"] if "counter" in o}


@contextlib.contextmanager
def three_pods(tmp_path, *ranges: str):
    """A node with these pod ranges and three pods wired on it."""
    with ScratchNode(tmp_path, pod_cidr=",".join(ranges), bridge="kwsp") as node:
        pods = [node.new_pod() for _ in range(3)]
        for pod in pods:
            node.add(pod)
        yield node, pods


@pytest.fixture
def wired(tmp_path):
    with three_pods(tmp_path, "10.247.0.0/24") as wired:
        yield wired


def test_spoofed_frames_reach_no_pod_and_are_counted(wired):
    node, (attacker, target, other) = wired
    a_mac, a_ip = _link(attacker)
    t_mac, t_ip = _link(target)
    o_mac, o_ip = _link(other)
    gateway = "10.247.0.1"
    cases = {   # marker -> (frame, counter expected to count it)
        b"kw-other-pod-ip": (udp_frame(a_mac, t_mac, o_ip, t_ip, b"kw-other-pod-ip"), "spoofed_ipv4"),
        b"kw-node-ip": (udp_frame(a_mac, t_mac, gateway, t_ip, b"kw-node-ip"), "spoofed_ipv4"),
        b"kw-external-ip": (udp_frame(a_mac, t_mac, EXTERNAL, t_ip, b"kw-external-ip"), "spoofed_ipv4"),
        b"kw-other-mac": (udp_frame("02:00:00:00:be:ef", t_mac, a_ip, t_ip, b"kw-other-mac"), "spoofed_mac"),
        b"kw-pod-mac": (udp_frame(o_mac, t_mac, o_ip, t_ip, b"kw-pod-mac"), "spoofed_mac"),
        b"kw-garp": (garp_frame(a_mac, o_ip, b"kw-garp"), "spoofed_arp"),
    }
    legit = udp_frame(a_mac, t_mac, a_ip, t_ip, b"kw-legit")
    before = _counters(node)
    scraped_before = _scraped(node)

    _send_and_check(node, attacker, target, cases, {b"kw-legit": legit}, before, scraped_before)


def _send_and_check(node: ScratchNode, attacker: str, target: str, cases: dict, legit: dict,
                    before: dict, scraped_before: dict) -> None:
    """Send every frame from the attacker's eth0; the target's eth0 must see each legit marker and
    no case's, and each case must be counted by its counter and its metric."""
    listener = netns.call_in(lab_netns.path(target), _packet_socket, "eth0")
    sender = netns.call_in(lab_netns.path(attacker), _packet_socket, "eth0")
    try:
        for frame, _ in cases.values():
            sender.send(frame)
        for frame in legit.values():
            sender.send(frame)
        seen: set[bytes] = set()
        listener.settimeout(0.2)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                data = listener.recv(2048)
            except TimeoutError:
                continue
            seen.update(m for m in [*cases, *legit] if m in data)
    finally:
        listener.close()
        sender.close()

    assert set(legit) <= seen, f"the pod's own traffic must flow: {sorted(set(legit) - seen)}"
    assert not seen & set(cases), f"spoofed frames reached the target: {sorted(seen & set(cases))}"
    after = _counters(node)
    scraped = _scraped(node)
    for reason in {c for _, c in cases.values()}:
        expected = sum(1 for _, c in cases.values() if c == reason)
        assert after[reason] - before.get(reason, 0) >= expected, (reason, before, after)
        metric = reason.removeprefix("spoofed_")
        assert scraped[metric] - scraped_before[metric] >= expected, (metric, scraped_before, scraped)


def test_del_removes_the_pods_elements(wired):
    node, (attacker, _, _) = wired
    listing = sh("ip", "netns", "exec", node.node, "nft", "list", "set", "bridge", "kubeweft-cni", "pod_ips")
    a_ip = _link(attacker)[1]
    assert a_ip in listing
    rc, out, err = node.cni("DEL", attacker, attacker)
    assert rc == 0, (out, err)
    listing = sh("ip", "netns", "exec", node.node, "nft", "list", "set", "bridge", "kubeweft-cni", "pod_ips")
    assert a_ip not in listing and listing.count("10.247.0.") == 2


@pytest.fixture(params=[("fd00:247::/64",), ("10.247.0.0/24", "fd00:247::/64")], ids=["ipv6", "dual"])
def wired6(tmp_path, request):
    with three_pods(tmp_path, *request.param) as wired:
        yield wired


def test_spoofed_ipv6_and_neighbour_discovery_reach_no_pod_and_are_counted(wired6):
    node, (attacker, target, other) = wired6
    (a_mac, a_ip), (_, a_ll) = _link(attacker, "6"), _link(attacker, "6", "link")
    t_mac, t_ip = _link(target, "6")
    (o_mac, o_ip), (_, o_ll) = _link(other, "6"), _link(other, "6", "link")
    gateway = "fd00:247::1"
    cases = {   # marker -> (frame, counter expected to count it)
        b"kw6-other-pod-ip": (udp6_frame(a_mac, t_mac, o_ip, t_ip, b"kw6-other-pod-ip"), "spoofed_ipv6"),
        b"kw6-other-link-local": (udp6_frame(a_mac, t_mac, o_ll, t_ip, b"kw6-other-link-local"), "spoofed_ipv6"),
        b"kw6-node-ip": (udp6_frame(a_mac, t_mac, gateway, t_ip, b"kw6-node-ip"), "spoofed_ipv6"),
        b"kw6-external-ip": (udp6_frame(a_mac, t_mac, "2001:db8::7", t_ip, b"kw6-external-ip"), "spoofed_ipv6"),
        b"kw6-other-mac": (udp6_frame("02:00:00:00:be:ef", t_mac, a_ip, t_ip, b"kw6-other-mac"), "spoofed_mac"),
        b"kw6-pod-mac": (udp6_frame(o_mac, t_mac, o_ip, t_ip, b"kw6-pod-mac"), "spoofed_mac"),
        # from the attacker's own addresses, claiming the other pod's addresses or the gateway
        b"kw6-na-pod": (na_frame(a_mac, t_mac, a_ll, "ff02::1", o_ip, b"kw6-na-pod"), "spoofed_ndp"),
        b"kw6-na-ll": (na_frame(a_mac, t_mac, a_ip, t_ip, o_ll, b"kw6-na-ll"), "spoofed_ndp"),
        b"kw6-na-gw": (na_frame(a_mac, t_mac, a_ll, "ff02::1", gateway, b"kw6-na-gw"), "spoofed_ndp"),
        b"kw6-ra": (ra_frame(a_mac, t_mac, a_ll, "ff02::1", b"kw6-ra"), "spoofed_ndp"),
    }
    legit = {   # its own addresses: global and link-local, and advertisements of them
        b"kw6-legit": udp6_frame(a_mac, t_mac, a_ip, t_ip, b"kw6-legit"),
        b"kw6-legit-ll": udp6_frame(a_mac, t_mac, a_ll, "ff02::1", b"kw6-legit-ll"),
        b"kw6-legit-na": na_frame(a_mac, t_mac, a_ll, "ff02::1", a_ip, b"kw6-legit-na"),
        b"kw6-legit-na-ll": na_frame(a_mac, t_mac, a_ll, "ff02::1", a_ll, b"kw6-legit-na-ll"),
    }
    _send_and_check(node, attacker, target, cases, legit, _counters(node), _scraped(node))
    # and real traffic of the pod's own still flows: ping over IPv6 to another pod
    sh("ping", "-6", "-c1", "-W2", t_ip, netns=attacker)


def test_del_removes_the_pods_ipv6_elements(wired6):
    node, (attacker, _, _) = wired6
    _, a_ip = _link(attacker, "6")
    _, a_ll = _link(attacker, "6", "link")

    def listed() -> str:
        return "".join(sh("ip", "netns", "exec", node.node, "nft", "list", "set", "bridge", "kubeweft-cni", name)
                       for name in ("pod_ips6", "pod_nd_targets"))
    target_hex = f"0x{int(ipaddress.IPv6Address(a_ip)):032x}"
    assert a_ip in listed() and a_ll in listed() and target_hex in listed()
    assert node.cni("DEL", attacker, attacker)[0] == 0
    assert a_ip not in listed() and a_ll not in listed() and target_hex not in listed()
