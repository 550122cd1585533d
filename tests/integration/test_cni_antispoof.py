"""Source checks on pod veths, through the real agent and executable in scratch namespaces: a pod
that sends raw frames (AF_PACKET) with another pod's, the node's or an external source address,
another source MAC, or a gratuitous ARP claiming another pod's address reaches no pod (a raw
socket in the target's netns sees none of them), and each drop is counted by its reason; the
pod's own traffic still flows."""
from __future__ import annotations

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

ETH_P_ALL, ETH_P_IP, ETH_P_ARP = 0x0003, 0x0800, 0x0806
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


def garp_frame(src_mac: str, claimed_ip: str, marker: bytes) -> bytes:
    ip = ipaddress.IPv4Address(claimed_ip).packed
    arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 2, _mac(src_mac), ip, _mac(BROADCAST), ip)
    return _mac(BROADCAST) + _mac(src_mac) + struct.pack("!H", ETH_P_ARP) + arp + marker


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    return s


def _link(pod: str) -> tuple[str, str]:
    link = json.loads(sh("ip", "-j", "-n", pod, "link", "show", "eth0"))[0]
    addr = json.loads(sh("ip", "-j", "-n", pod, "-4", "addr", "show", "eth0"))[0]["addr_info"][0]["local"]
    return link["address"], addr


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


@pytest.fixture
def wired(tmp_path):
    with ScratchNode(tmp_path, pod_cidr="10.247.0.0/24", bridge="kwsp") as node:
        pods = [node.new_pod() for _ in range(3)]
        for pod in pods:
            node.add(pod)
        yield node, pods


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

    listener = netns.call_in(lab_netns.path(target), _packet_socket, "eth0")
    sender = netns.call_in(lab_netns.path(attacker), _packet_socket, "eth0")
    try:
        for frame, _ in cases.values():
            sender.send(frame)
        sender.send(legit)
        seen: set[bytes] = set()
        listener.settimeout(0.2)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                data = listener.recv(2048)
            except TimeoutError:
                continue
            seen.update(m for m in [*cases, b"kw-legit"] if m in data)
    finally:
        listener.close()
        sender.close()

    assert b"kw-legit" in seen, "the pod's own traffic must flow"
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
