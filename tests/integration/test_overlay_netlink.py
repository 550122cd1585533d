"""The overlay's netlink side on the real kernel, in scratch namespaces: two "nodes" on one
bridge, each with a VXLAN device planned from the other's NodeInfo; real ICMP across. The
nodes have IPv4 and IPv6 addresses; the VXLAN and host-gw tests run in each family."""
import os
import subprocess
import uuid

import pytest

from .waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, timeout=20).stdout


@pytest.fixture
def two_nodes():
    from pyroute2 import IPRoute
    tag = uuid.uuid4().hex[:6]
    names = {1: f"ovl{tag}-n1", 2: f"ovl{tag}-n2", "lan": f"ovl{tag}-lan"}
    try:
        for n in names.values():
            sh(f"ip netns add {n}")
        lan = names["lan"]
        sh(f"ip -n {lan} link add br0 type bridge && ip -n {lan} link set br0 up")
        for i in (1, 2):
            n = names[i]
            sh(f"ip -n {lan} link add v{i} type veth peer name eth0 netns {n}")
            sh(f"ip -n {lan} link set v{i} master br0 up")
            sh(f"ip -n {n} addr add 192.168.56.{10 + i}/24 dev eth0 && ip -n {n} link set eth0 up "
               f"&& ip -n {n} link set lo up && ip -n {n} addr add 2001:db8:56::{10 + i}/64 dev eth0 nodad")
            # a stand-in for the pod bridge, holding the node's first pod address
            sh(f"ip -n {n} link add kwbr type bridge && ip -n {n} addr add 10.244.{i}.1/24 dev kwbr "
               f"&& ip -n {n} addr add fd00:10:244:{i}::1/64 dev kwbr nodad && ip -n {n} link set kwbr up")
        for i in (1, 2):
            # a fresh interface's link-local address is tentative for ~1 s (DAD); neighbour
            # discovery waits for it, so the first IPv6 packet over the underlay would take ~1 s
            wait_for("eth0's DAD done", lambda n=names[i]: not sh(f"ip -n {n} -6 addr show dev eth0 tentative"),
                     timeout=10, interval=0.1)
        yield names, IPRoute
    finally:
        for n in names.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=10, check=False)


def ping(ns: str, src: str, dst: str, size: int = 56, df: bool = False) -> subprocess.CompletedProcess:
    flags = f"-M do -s {size}" if df else f"-s {size}"
    return subprocess.run(f"ip netns exec {ns} ping -c1 -W1 {flags} -I {src} {dst}", shell=True,
                          capture_output=True, text=True, timeout=10, check=False)


ADDRESS = {4: "192.168.56.{}", 6: "2001:db8:56::{}"}
POD_CIDR = {4: "10.244.{}.0/24", 6: "fd00:10:244:{}::/64"}
POD_GATEWAY = {4: "10.244.{}.1", 6: "fd00:10:244:{}::1"}     # on the stand-in pod bridge
SUBNET = {4: "192.168.56.0/24", 6: "2001:db8:56::/64"}


def underlay(i: int, family: int = 4):
    from kubeweft.proxy.overlay.plan import Underlay
    return Underlay("eth0", ADDRESS[family].format(10 + i), 1500, (SUBNET[family],))


@pytest.mark.parametrize("family", [4, 6])
def test_vxlan_plan_applies_reads_back_and_survives_restart(two_nodes, family):
    from kubeweft.proxy.overlay import kernel, vxlan
    from kubeweft.proxy.overlay import plan as ov
    names, IPRoute = two_nodes
    backend = {i: vxlan.VxlanBackend(underlay(i, family)) for i in (1, 2)}
    dev = vxlan.DEVICES[family]
    macs = {}
    for i in (1, 2):
        with IPRoute(netns=names[i]) as ipr:
            macs[i] = backend[i].setup(ipr, POD_CIDR[family].format(i))[ov.vtep_mac_annotation(family)]
    nodes = [ov.NodeInfo(f"node{i}", ADDRESS[family].format(10 + i), POD_CIDR[family].format(i), macs[i], family)
             for i in (1, 2)]
    for i in (1, 2):
        with IPRoute(netns=names[i]) as ipr:
            want = ov.plan_overlay(backend[i], f"node{i}", nodes)
            kernel.apply_ops(ipr, ov.diff_overlay(backend[i].read_state(ipr), want))
            assert backend[i].read_state(ipr) == want
    assert sh(f"ip -n {names[1]} -j -d link show {dev}").count(f'"mtu":{1500 - vxlan.OVERHEAD[family]}') == 1

    assert ping(names[1], POD_GATEWAY[family].format(1), POD_GATEWAY[family].format(2)).returncode == 0

    # An agent restart: the device is kept (same ifindex) and the diff against the kernel is empty.
    with IPRoute(netns=names[1]) as ipr:
        idx = ipr.link_lookup(ifname=dev)[0]
        assert backend[1].setup(ipr, POD_CIDR[family].format(1)) == {ov.vtep_mac_annotation(family): macs[1]}
        assert ipr.link_lookup(ifname=dev)[0] == idx
        assert ov.diff_overlay(backend[1].read_state(ipr), ov.plan_overlay(backend[1], "node1", nodes)) == []

    # node2 leaves: route, neighbour and FDB entry go, in that order, and traffic stops.
    with IPRoute(netns=names[1]) as ipr:
        ops = ov.diff_overlay(backend[1].read_state(ipr), ov.plan_overlay(backend[1], "node1", nodes[:1]))
        assert [o.action for o in ops] == ["delete"] * 3
        assert isinstance(ops[0].item, ov.Route)
        kernel.apply_ops(ipr, ops)
        assert backend[1].read_state(ipr) == ov.OverlayState()
    assert ping(names[1], POD_GATEWAY[family].format(1), POD_GATEWAY[family].format(2)).returncode != 0


@pytest.mark.parametrize("family", [4, 6])
def test_hostgw_routes_carry_traffic(two_nodes, family):
    from kubeweft.proxy.overlay import kernel
    from kubeweft.proxy.overlay import plan as ov
    from kubeweft.proxy.overlay.hostgw import HostGwBackend
    from kubeweft.proxy.overlay.underlay import UnderlaySelector
    names, IPRoute = two_nodes
    nodes = [ov.NodeInfo(f"node{i}", ADDRESS[family].format(10 + i), POD_CIDR[family].format(i), family=family)
             for i in (1, 2)]
    for i in (1, 2):
        with IPRoute(netns=names[i]) as ipr:
            choice = kernel.discover_underlay(ipr, UnderlaySelector(node_ip=ADDRESS[family].format(10 + i)), family)
            backend = HostGwBackend(choice.underlay)
            assert backend.underlay == underlay(i, family)
            want = ov.plan_overlay(backend, f"node{i}", nodes)
            kernel.apply_ops(ipr, ov.diff_overlay(backend.read_state(ipr), want))
            assert backend.read_state(ipr) == want
    assert ping(names[1], POD_GATEWAY[family].format(1), POD_GATEWAY[family].format(2)).returncode == 0


def test_cleanup_removes_only_what_the_backend_made(two_nodes):
    """A node switching backend: each backend's cleanup takes away its own entries (the VXLAN
    device; host-gw's routes, by protocol) and leaves every other route of the node alone."""
    from kubeweft.proxy.overlay import kernel
    from kubeweft.proxy.overlay import plan as ov
    from kubeweft.proxy.overlay.hostgw import HostGwBackend
    from kubeweft.proxy.overlay.vxlan import VxlanBackend
    names, IPRoute = two_nodes
    nodes = [ov.NodeInfo(f"node{i}", f"192.168.56.{10 + i}", f"10.244.{i}.0/24", f"0e:00:00:00:00:0{i}")
             for i in (1, 2)]
    sh(f"ip -n {names[1]} route add 10.99.0.0/24 via 192.168.56.12 dev eth0")   # not ours
    with IPRoute(netns=names[1]) as ipr:
        vx, hg = VxlanBackend(underlay(1)), HostGwBackend(underlay(1))
        vx.setup(ipr, "10.244.1.0/24")
        kernel.apply_ops(ipr, ov.diff_overlay(ov.OverlayState(), ov.plan_overlay(vx, "node1", nodes)))
        vx.cleanup(ipr)
        assert ipr.link_lookup(ifname="kw.1") == []
        assert "10.244.2.0/24" not in sh(f"ip -n {names[1]} -4 route show")

        kernel.apply_ops(ipr, ov.diff_overlay(ov.OverlayState(), ov.plan_overlay(hg, "node1", nodes)))
        assert hg.read_state(ipr).routes == {ov.Route("10.244.2.0/24", "192.168.56.12", "eth0")}
        hg.cleanup(ipr)
        assert hg.read_state(ipr) == ov.OverlayState()
    routes = sh(f"ip -n {names[1]} -4 route show")
    assert "10.99.0.0/24 via 192.168.56.12" in routes and "10.244.2.0/24" not in routes
