"""kubeweft.cni.nft's pure part: the table's text, the hostPort plan, element transactions, map parsing."""
from __future__ import annotations

import re

import pytest
from kubeweft.cni import nft
from kubeweft.cni.errors import INVALID_NETWORK_CONFIG, CniError


def test_every_table_chain_and_map_has_a_comment():
    text = nft.render_base("10.244.0.0/16")
    objects = re.findall(r"^add (table|chain|map) ip kubeweft-cni ?(\S*) \{(.*)\}$", text, re.MULTILINE)
    assert {name for kind, name, _ in objects if kind != "table"} == {
        "hostports", "hostip_ports", "hostports_dnat", "prerouting", "output", "postrouting"}
    assert all('comment "' in body for _, _, body in objects)
    # rules are rewritten, not appended: each chain is flushed before its rules
    for chain in ("hostports_dnat", "prerouting", "output"):
        assert text.index(f"flush chain ip kubeweft-cni {chain}") < text.index(f"add rule ip kubeweft-cni {chain}")


def test_hairpin_marking_only_with_a_cluster_cidr():
    assert "meta mark" not in nft.render_base()
    text = nft.render_base("10.244.0.0/16")
    assert "ip saddr 10.244.0.0/16 meta mark set meta mark or 0x2000" in text
    assert "meta mark set meta mark and 0xffffdfff" in text
    masq = nft.render_masquerade("10.244.7.9/16")
    assert "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade" in masq
    assert masq.startswith("flush chain ip kubeweft-cni postrouting\n")
    with pytest.raises(CniError) as e:
        nft.render_masquerade("10.244.0.0/16; flush ruleset")
    assert e.value.code == INVALID_NETWORK_CONFIG


def test_plan_hostports_normalises_and_validates():
    plan = nft.plan_hostports([
        {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
        {"hostPort": 8080, "containerPort": 80},                                  # duplicate
        {"hostPort": 53, "containerPort": 5353, "protocol": "udp", "hostIP": "0.0.0.0"},
        {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "203.0.113.1"},
        {"hostPort": 9091, "containerPort": 91, "protocol": "tcp", "hostIP": "2001:db8::1"},   # skipped
    ], "10.244.1.5")
    assert plan == [nft.HostPort("tcp", 8080, None, "10.244.1.5", 80),
                    nft.HostPort("udp", 53, None, "10.244.1.5", 5353),
                    nft.HostPort("tcp", 9090, "203.0.113.1", "10.244.1.5", 90)]
    assert [hp.map for hp in plan] == ["hostports", "hostports", "hostip_ports"]
    for bad in [{"hostPort": 0, "containerPort": 80}, {"hostPort": 80, "containerPort": 70000},
                {"hostPort": 80, "containerPort": 80, "protocol": "icmp"}, {"containerPort": 80},
                {"hostPort": 80, "containerPort": 80, "hostIP": "nope"}]:
        with pytest.raises(CniError):
            nft.plan_hostports([bad], "10.244.1.5")


def test_element_ops_and_parse_round_trip():
    new = nft.plan_hostports([{"hostPort": 8080, "containerPort": 80},
                              {"hostPort": 9090, "containerPort": 90, "hostIP": "203.0.113.1"}], "10.244.1.5")
    ops = nft.render_element_ops("abc123", [("ip", "hostports", {"concat": ["udp", 53]})], new)["nftables"]
    assert ops[0] == {"delete": {"element": {"family": "ip", "table": "kubeweft-cni", "name": "hostports",
                                             "elem": [{"concat": ["udp", 53]}]}}}
    assert [next(iter(o)) for o in ops] == ["delete", "add", "add"]
    added = ops[1]["add"]["element"]["elem"][0]
    assert added == [{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": "abc123"}},
                     {"concat": ["10.244.1.5", 80]}]
    # what `list map` answers, as nft 1.0.6 prints it
    listing = {"nftables": [{"metainfo": {}}, {"map": {"name": "hostports", "elem": [
        added, [{"elem": {"val": {"concat": ["udp", 53]}, "comment": "other"}}, {"concat": ["10.244.1.6", 53]}]]}}]}
    assert nft.parse_map_elements(listing, "hostports") == {
        "abc123": [("ip", "hostports", {"concat": ["tcp", 8080]})],
        "other": [("ip", "hostports", {"concat": ["udp", 53]})]}
    assert nft.render_element_ops("x", [], [])["nftables"] == []


def test_comment_is_sanitised():
    assert nft.render_comment('a"b c;d') == "a_b_c_d"
    assert len(nft.render_comment("x" * 300)) == 128


def test_the_ipv6_table_is_the_ipv4_one_in_ip6_terms():
    text = nft.render_base("fd00:10:244::/56", "ip6")
    assert "add table ip6 kubeweft-cni" in text
    assert not re.search(r"\b(ip|ipv4_addr) ", re.sub(r"comment \"[^\"]*\"", "", text))
    assert "type inet_proto . inet_service : ipv6_addr . inet_service" in text
    assert "dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostip_ports" in text
    assert "ip6 saddr fd00:10:244::/56 meta mark set meta mark or 0x2000" in text
    assert "ip6 saddr fd00:10:244::/56 ip6 daddr != fd00:10:244::/56 masquerade" in \
        nft.render_masquerade("fd00:10:244::/56", "ip6")
    with pytest.raises(CniError):
        nft.render_masquerade("fd00::/56", "ip")                # a family's table takes its own CIDR
    assert nft.plan_cluster_cidrs("10.244.0.0/16, fd00:10:244::/56") == {"ip": "10.244.0.0/16",
                                                                          "ip6": "fd00:10:244::/56"}
    with pytest.raises(CniError):
        nft.plan_cluster_cidrs("10.244.0.0/16,10.245.0.0/16")


def test_hostports_of_a_dual_stack_pod_per_family():
    pod = ["10.244.1.5", "fd00:10:244:1::5"]
    plan = nft.plan_hostports([
        {"hostPort": 8080, "containerPort": 80},                                   # both families
        {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "0.0.0.0"},   # IPv4 only
        {"hostPort": 54, "containerPort": 54, "protocol": "udp", "hostIP": "::"},        # IPv6 only
        {"hostPort": 9091, "containerPort": 91, "hostIP": "2001:db8::1"},
    ], pod)
    assert [(hp.family, hp.host_port, hp.host_ip, hp.pod_ip) for hp in plan] == [
        ("ip", 8080, None, "10.244.1.5"), ("ip6", 8080, None, "fd00:10:244:1::5"),
        ("ip", 53, None, "10.244.1.5"), ("ip6", 54, None, "fd00:10:244:1::5"),
        ("ip6", 9091, "2001:db8::1", "fd00:10:244:1::5")]
    ops = nft.render_element_ops("c1", [], plan)["nftables"]
    assert [(o["add"]["element"]["family"], o["add"]["element"]["name"]) for o in ops] == [
        ("ip", "hostports"), ("ip6", "hostports"), ("ip6", "hostip_ports")]
    assert ops[1]["add"]["element"]["elem"][0][1] == {"concat": ["fd00:10:244:1::5", 80]}
    # an IPv6-only pod gets no IPv4 hostPort
    assert {hp.family for hp in nft.plan_hostports([{"hostPort": 1, "containerPort": 1}], "fd00::5")} == {"ip6"}
