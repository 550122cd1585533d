"""kubeweft.lab.topology's plans (pure): what the lab builds, and that nothing lands in the root netns."""
from __future__ import annotations

import pytest
from kubeweft.lab.config import LabConfig
from kubeweft.lab.topology import Step, lab_netns, node_port, plan_build, plan_pod_cidr_routes, plan_remove

CFG = LabConfig(name="kw", nodes=2)


def cmds(steps: list[Step]) -> list[str]:
    return [" ".join(s.argv) for s in steps]


def test_namespaces_first_then_only_lab_netns_commands():
    steps = plan_build(CFG)
    lab = set(lab_netns(CFG))
    assert cmds(steps[:4]) == [f"ip netns add {n}" for n in ("kw-underlay", "kw-ext", "kw-node1", "kw-node2")]
    for s in steps[4:]:
        # every later command names a lab netns with -n, or runs inside one
        if s.inside is None:
            assert s.argv[:2] == ("ip", "-n") and s.argv[2] in lab, s
        else:
            assert s.inside in lab


def test_veths_are_born_with_their_peer_in_the_target_netns():
    veths = [s.argv for s in plan_build(CFG) if "veth" in s.argv and "add" in s.argv]
    assert len(veths) == 3
    for argv in veths:
        assert argv[2] == "kw-underlay"
        assert argv[argv.index("peer"):][-2:][0] == "netns"
    targets = sorted(argv[-1] for argv in veths)
    assert targets == ["kw-ext", "kw-node1", "kw-node2"]


def test_addresses_routes_and_forwarding():
    text = "\n".join(cmds(plan_build(CFG)))
    assert "ip -n kw-underlay addr add 192.168.56.1/24 dev lan0" in text
    assert "ip -n kw-underlay addr add 203.0.113.1/24 dev veth-ext" in text
    assert "ip -n kw-node2 addr add 192.168.56.12/24 dev eth0" in text
    assert "ip -n kw-node1 route add default via 192.168.56.1" in text
    assert "ip -n kw-ext addr add 203.0.113.2/24 dev eth0" in text
    assert "ip -n kw-ext route add default via 203.0.113.1" in text
    fwd = sorted(s.inside for s in plan_build(CFG) if "net.ipv4.ip_forward=1" in s.argv)
    assert fwd == ["kw-node1", "kw-node2", "kw-underlay"]     # not the external host


def test_pod_cidr_routes_skip_nodes_without_cidr_or_address():
    steps = plan_pod_cidr_routes(CFG, [("node1", "10.244.1.0/24", "192.168.56.11"),
                                       ("node2", None, "192.168.56.12"), ("node3", "10.244.3.0/24", None)])
    assert cmds(steps) == ["ip -n kw-underlay route replace 10.244.1.0/24 via 192.168.56.11"]


def test_remove_and_port_names():
    assert cmds(plan_remove(["kw-a"])) == ["ip netns delete kw-a"]
    assert node_port("node1") == "veth-node1"
    with pytest.raises(ValueError):
        node_port("node-with-a-long-name")


@pytest.mark.parametrize("ip_family", ["ipv6", "dual"])
def test_ipv6_underlay_nodes_and_external_host(ip_family):
    cfg = LabConfig(name="kw", nodes=2, ip_family=ip_family)
    steps = plan_build(cfg)
    text = "\n".join(cmds(steps))
    want = ("ip -n kw-node2 addr add 192.168.56.12/24 dev eth0",   # IPv4 stays, in every mode
            "ip -n kw-underlay -6 addr add 2001:db8:56::1/64 dev lan0 nodad",
            "ip -n kw-node1 -6 addr add 2001:db8:56::11/64 dev eth0 nodad",
            "ip -n kw-node2 -6 route add default via 2001:db8:56::1",
            "ip -n kw-underlay -6 addr add 2001:db8:113::1/64 dev veth-ext nodad",
            "ip -n kw-ext -6 addr add 2001:db8:113::2/64 dev eth0 nodad",
            "ip -n kw-ext -6 route add default via 2001:db8:113::1")
    assert [c for c in want if c not in text] == []
    fwd6 = sorted(s.inside for s in steps if "net.ipv6.conf.all.forwarding=1" in s.argv)
    assert fwd6 == ["kw-node1", "kw-node2", "kw-underlay"]
    dad = sorted({s.inside for s in steps if "net.ipv6.conf.default.accept_dad=0" in s.argv})
    assert dad == ["kw-ext", "kw-node1", "kw-node2", "kw-underlay"]
    # every sysctl runs inside a lab netns, after that netns exists
    made = set()
    for s in steps:
        if s.argv[:3] == ("ip", "netns", "add"):
            made.add(s.argv[3])
        elif s.argv[0] == "sysctl":
            assert s.inside in made


def test_ipv4_lab_has_no_ipv6_step():
    text = "\n".join(cmds(plan_build(CFG)))
    assert "-6" not in text.split() and "ipv6" not in text and "2001:db8" not in text


def test_pod_cidr_routes_in_both_families():
    steps = plan_pod_cidr_routes(CFG, [("node1", "10.244.1.0/24", "192.168.56.11"),
                                       ("node1", "fd00:10:244:1::/64", "2001:db8:56::11")])
    assert cmds(steps) == ["ip -n kw-underlay route replace 10.244.1.0/24 via 192.168.56.11",
                           "ip -n kw-underlay route replace fd00:10:244:1::/64 via 2001:db8:56::11"]
