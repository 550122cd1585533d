"""lab.workload's pure parts for both families: how a client is written, and the pktinfo that
makes a UDP reply leave from the address the datagram was sent to."""
from __future__ import annotations

import socket

from kubeweft.lab.workload import IN6_PKTINFO, IN_PKTINFO, IP_PKTINFO, plan_reply_pktinfo, render_peer


def test_peers_ipv6_in_brackets():
    assert render_peer("10.244.1.5", 40000) == "10.244.1.5:40000"
    assert render_peer("fd00:10:244:1::5", 40000) == "[fd00:10:244:1::5]:40000"


def test_ipv4_reply_from_the_header_destination():
    got = IN_PKTINFO.pack(2, socket.inet_aton("192.168.56.12"), socket.inet_aton("192.168.56.112"))
    [(level, kind, data)] = plan_reply_pktinfo(socket.AF_INET, [(socket.IPPROTO_IP, IP_PKTINFO, got)])
    assert (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO)
    ifindex, spec_dst, _ = IN_PKTINFO.unpack(data)
    assert ifindex == 0 and socket.inet_ntoa(spec_dst) == "192.168.56.112"


def test_ipv6_reply_from_the_destination_interface_only_for_link_local():
    dst = socket.inet_pton(socket.AF_INET6, "2001:db8:56::112")
    [(level, kind, data)] = plan_reply_pktinfo(
        socket.AF_INET6, [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, IN6_PKTINFO.pack(dst, 3))])
    assert (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)
    assert IN6_PKTINFO.unpack(data) == (dst, 0)
    ll = socket.inet_pton(socket.AF_INET6, "fe80::1")
    [(_, _, data)] = plan_reply_pktinfo(
        socket.AF_INET6, [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, IN6_PKTINFO.pack(ll, 3))])
    assert IN6_PKTINFO.unpack(data) == (ll, 3)


def test_no_pktinfo_no_ancillary_data():
    assert plan_reply_pktinfo(socket.AF_INET, []) == []
    assert plan_reply_pktinfo(socket.AF_INET6, [(socket.IPPROTO_IP, IP_PKTINFO, b"\0" * 12)]) == []
    assert plan_reply_pktinfo(socket.AF_INET, [(socket.IPPROTO_IP, IP_PKTINFO, b"short")]) == []
