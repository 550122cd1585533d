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
    ops = nft.render_element_ops("abc123", [("hostports", {"concat": ["udp", 53]})], new)["nftables"]
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
        "abc123": [("hostports", {"concat": ["tcp", 8080]})],
        "other": [("hostports", {"concat": ["udp", 53]})]}
    assert nft.render_element_ops("x", [], [])["nftables"] == []


def test_comment_is_sanitised():
    assert nft.render_comment('a"b c;d') == "a_b_c_d"
    assert len(nft.render_comment("x" * 300)) == 128
