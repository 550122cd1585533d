"""The overlay's interface on multi-homed nodes, with the real agent in scratch namespaces: two
nodes as VirtualBox makes them, each with a "NAT" interface that holds the default route and the
same address on every node (nat0, 10.0.2.15, a veth to a namespace of its own standing for that
VM's NAT network, gateway 10.0.2.2) and a private one on a shared bridge (eth1, 192.168.56.11
and .12), where the lab API server also is.

With --iface, --iface-can-reach, the downward API's hostIP ($KUBEWEFT_NODE_IP) or the Node's
InternalIP, each agent publishes its private address, the VXLAN device's local address and FDB
entries (vxlan) or the routes' next hops (host-gw) use it, and a pod on one node reaches a pod
on the other. Without any of them the NAT interface wins and both nodes publish 10.0.2.15:
what the selectors are for.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from kubeweft.lab import netns

from . import agent_helpers
from . import overlay_helpers as oh
from .agent_helpers import ip, join_underlay
from .netns_helpers import scratch_netns
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NAT_ADDRESS = "10.0.2.15"
PRIVATE = {"node1": "192.168.56.11", "node2": "192.168.56.12"}


def nat_interface(ns: str, nat_ns: str) -> None:
    """VirtualBox's NAT interface: the default route, and the address every VM has; the VM's own
    NAT network (nat_ns) behind it. Made in ns with the peer moved straight into nat_ns."""
    ip(ns, "link", "add", "nat0", "type", "veth", "peer", "name", "eth0", "netns", nat_ns)
    ip(nat_ns, "addr", "add", "10.0.2.2/24", "dev", "eth0")
    ip(nat_ns, "link", "set", "eth0", "up")
    ip(ns, "addr", "add", f"{NAT_ADDRESS}/24", "dev", "nat0")
    ip(ns, "link", "set", "nat0", "up")
    ip(ns, "route", "add", "default", "via", "10.0.2.2")


def our_routes(ns: str) -> list[dict]:
    return oh.ip_json(ns, "-4", "route", "show", "proto", "175")


@contextlib.contextmanager
def two_nodes(tmp: Path, backend: str, args: list[str], env_of=lambda node: {}, internal_ip: bool = False):
    """The lab API server, two multi-homed nodes with their Node objects (podCIDRs from the lab's
    node IPAM; InternalIP in the status when asked), an agent on each; yields (server,
    {node: netns}, {node: agent log path})."""
    with agent_helpers.lab_api(tmp, f"h12u{os.getpid() % 100000}") as (server, underlay, _), \
            scratch_netns("h12n", 4) as namespaces:
        nodes = dict(zip(PRIVATE, namespaces[:2], strict=True))
        nat = dict(zip(PRIVATE, namespaces[2:], strict=True))
        for node, ns in nodes.items():
            join_underlay(underlay, ns, "eth1", PRIVATE[node])
            nat_interface(ns, nat[node])
            server.kubectl("create", "-f", "-", input=json.dumps(
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}))
            if internal_ip:
                server.kubectl("patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(
                    {"status": {"addresses": [{"type": "InternalIP", "address": PRIVATE[node]}]}}))
        with agent_helpers.node_agents(tmp, server, nodes, backend, args, env_of) as logs:
            yield server, nodes, logs


def pod_to_pod(tmp: Path, nodes: dict[str, str]) -> None:
    """A pod on each node; node1's pod pings node2's."""
    with scratch_netns("h12p", 2) as pods:
        addresses = [oh.add_pod(tmp, nodes[node], pod, node)[0] for node, pod in zip(nodes, pods, strict=True)]
        ping = netns.run(pods[0], ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", addresses[1]],
                         capture_output=True, text=True, timeout=20)
        assert ping.returncode == 0, ping.stdout + ping.stderr


def wait_routed(nodes: dict[str, str]) -> None:
    for node, ns in nodes.items():
        wait_for(f"{node} routes to the other node's pods", lambda n=ns: len(our_routes(n)) == 1, timeout=30)


SELECTORS = {
    "iface": (["--iface", "eth1"], lambda node: {}, False, "--iface eth1"),
    "iface-can-reach": (["--iface-can-reach", "192.168.56.1"], lambda node: {}, False,
                        "--iface-can-reach 192.168.56.1 (via eth1)"),
    "hostIP": ([], lambda node: {"KUBEWEFT_NODE_IP": PRIVATE[node]}, False, "the node's address"),
    "InternalIP": ([], lambda node: {}, True, "the node's address"),
}


@pytest.mark.parametrize("selector", SELECTORS)
def test_vxlan_runs_on_the_private_interface(tmp_path, selector):
    args, env_of, internal_ip, why = SELECTORS[selector]
    with two_nodes(tmp_path, "vxlan", args, env_of, internal_ip) as (server, nodes, logs):
        for node in nodes:
            assert oh.node_annotations(server, node)["kubeweft.io/public-ip"] == PRIVATE[node]
            assert f"underlay eth1 {PRIVATE[node]} (mtu 1500), chosen by {why}" in logs[node].read_text()
        wait_routed(nodes)
        for node, other in (("node1", "node2"), ("node2", "node1")):
            (link,) = oh.ip_json(nodes[node], "-d", "link", "show", "kw.1")
            assert link["linkinfo"]["info_data"]["local"] == PRIVATE[node]
            fdb = netns.run(nodes[node], ["bridge", "-j", "fdb", "show", "dev", "kw.1"], capture_output=True,
                            text=True, timeout=10).stdout
            assert [f["dst"] for f in json.loads(fdb) if f.get("dst")] == [PRIVATE[other]]
        pod_to_pod(tmp_path, nodes)


@pytest.mark.parametrize("selector", ["iface-can-reach"])
def test_host_gw_next_hops_are_the_private_addresses(tmp_path, selector):
    args, env_of, internal_ip, _ = SELECTORS[selector]
    with two_nodes(tmp_path, "host-gw", args, env_of, internal_ip) as (server, nodes, _):
        wait_routed(nodes)
        for node, other in (("node1", "node2"), ("node2", "node1")):
            assert oh.node_annotations(server, node)["kubeweft.io/public-ip"] == PRIVATE[node]
            (route,) = our_routes(nodes[node])
            assert (route["gateway"], route["dev"]) == (PRIVATE[other], "eth1")
        pod_to_pod(tmp_path, nodes)


def test_without_a_selector_every_node_publishes_the_nat_address(tmp_path):
    """What the selectors prevent: the default route's interface wins, on every node."""
    with two_nodes(tmp_path, "vxlan", []) as (server, nodes, logs):
        for node in nodes:
            assert oh.node_annotations(server, node)["kubeweft.io/public-ip"] == NAT_ADDRESS
            assert "chosen by the default route" in logs[node].read_text()
