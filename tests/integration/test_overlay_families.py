"""The overlay in each IP family, with the real agent in scratch namespaces: two nodes on one
bridge with IPv4 and IPv6 underlay addresses (the lab's underlay keeps its IPv4 addresses in
every mode, as kind's node containers do), the lab API server alone, an agent on each node.

Parametrized over the lab's ip_family values and both backends:
- each node publishes its underlay address and VTEP MAC per family (`-v6` for IPv6), and has a
  VXLAN device per family whose local address is its underlay address of that family;
- a pod on one node reaches a pod on the other in every family the cluster has, over VXLAN and
  host-gw (whose IPv6 next hop is the peer's IPv6 InternalIP);
- pods get the smallest MTU of the families': exactly that passes pod to pod with DF, one byte
  more fails loudly;
- a too-big packet with DF that a node forwards into its tunnel gets ICMP "fragmentation
  needed" (IPv4) or ICMPv6 Packet Too Big (IPv6) back from that node;
- the Node deleted: the routes, neighbours and FDB entries of both families go.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import uuid
from pathlib import Path

import pytest

from . import agent_helpers
from . import overlay_helpers as oh
from .agent_helpers import ip, join_underlay
from .netns_helpers import scratch_netns
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

UNDERLAY_MTU = 1500
V4 = {"node1": "192.168.56.11", "node2": "192.168.56.12"}
V6 = {"node1": "2001:db8:56::11", "node2": "2001:db8:56::12"}
POD_CIDRS = {4: {"node1": "10.244.1.0/24", "node2": "10.244.2.0/24"},
             6: {"node1": "fd00:10:244:1::/64", "node2": "fd00:10:244:2::/64"}}
FAMILIES = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}     # LabConfig.families, primary first
EXTERNAL = {4: "192.168.56.50", 6: "2001:db8:56::50"}
HEADERS = {4: 28, 6: 48}                 # IP header (20 or 40) + ICMP 8
VXLAN_OVERHEAD = {4: 50, 6: 70}          # by the underlay's family
DEVICES = {4: "kw.1", 6: "kw-v6.1"}
ANNOTATIONS = {4: ("kubeweft.io/public-ip", "kubeweft.io/vtep-mac"),
               6: ("kubeweft.io/public-ip-v6", "kubeweft.io/vtep-mac-v6")}


def address(family: int, node: str) -> str:
    return (V4 if family == 4 else V6)[node]


def pod_mtu(backend: str, families: tuple[int, ...]) -> int:
    return min(UNDERLAY_MTU - (VXLAN_OVERHEAD[f] if backend == "vxlan" else 0) for f in families)


def node_doc(node: str, families: tuple[int, ...]) -> dict:
    cidrs = [POD_CIDRS[f][node] for f in families]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
            "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}}


def add_v6(ns: str, dev: str, addr: str) -> None:
    ip(ns, "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad")


@contextlib.contextmanager
def cluster(tmp: Path, ip_family: str, backend: str):
    """The API server, two nodes and an external host on the underlay (both families on every
    interface), Nodes with podCIDRs and InternalIPs of the lab's families, an agent on each
    node; yields (server, {node: netns}, external netns, {node: agent log})."""
    families = FAMILIES[ip_family]
    cluster_cidr = ",".join({4: "10.244.0.0/16", 6: "fd00:10:244::/56"}[f] for f in families)
    with agent_helpers.lab_api(tmp, f"h13o{uuid.uuid4().hex[:5]}") as (server, underlay, _), \
            scratch_netns("h13n", 3) as namespaces:
        add_v6(underlay, "lan0", "2001:db8:56::1")
        nodes = dict(zip(V4, namespaces[:2], strict=True))
        ext = namespaces[2]
        join_underlay(underlay, ext, "eth1", EXTERNAL[4])
        add_v6(ext, "eth1", EXTERNAL[6])
        for node, ns in nodes.items():
            join_underlay(underlay, ns, "eth1", V4[node])
            add_v6(ns, "eth1", V6[node])
            server.kubectl("create", "-f", "-", input=json.dumps(node_doc(node, families)))
            server.kubectl("patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(
                {"status": {"addresses": [{"type": "InternalIP", "address": address(f, node)} for f in families]}}))
        for ns in (*nodes.values(), ext):
            # an underlay that is up: a fresh interface's link-local address is tentative for
            # ~1 s (DAD), and neighbour discovery on it waits for that (measured: the first
            # ping between two fresh nodes took 984 ms)
            wait_for("the underlay's DAD done", lambda n=ns: not oh.ip_json(n, "-6", "addr", "show", "tentative"),
                     timeout=10, interval=0.1)
        with agent_helpers.node_agents(tmp, server, nodes, backend, cluster_cidr=cluster_cidr) as logs:
            yield server, nodes, ext, logs


def our_routes(ns: str, family: int) -> list[dict]:
    return oh.ip_json(ns, f"-{family}", "route", "show", "proto", "175")


def fdb_dsts(ns: str, dev: str) -> list[str]:
    return [f["dst"] for f in oh.ip_json(ns, "fdb", "show", "dev", dev, tool="bridge") if f.get("dst")]


def of_family(addresses: list[str], family: int) -> str:
    return next(a for a in addresses if ipaddress.ip_address(a).version == family)


def link_mtu(ns: str, dev: str) -> int:
    return oh.ip_json(ns, "link", "show", dev)[0]["mtu"]


def ping(ns: str, dst: str, size: int, df: bool = True) -> tuple[int, str]:
    proc = oh.ping(ns, dst, size=size, df=df)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("backend", ["vxlan", "host-gw"])
@pytest.mark.parametrize("ip_family", ["ipv4", "ipv6", "dual"])
def test_pods_reach_across_nodes_in_every_family(tmp_path, ip_family, backend):
    families = FAMILIES[ip_family]
    mtu = pod_mtu(backend, families)
    with cluster(tmp_path, ip_family, backend) as (server, nodes, ext, logs):
        for node, ns in nodes.items():
            other = "node2" if node == "node1" else "node1"
            assert f"overlay {backend} up: pod MTU {mtu}" in logs[node].read_text()
            ann = oh.node_annotations(server, node)
            for family in (4, 6):
                public_ip, vtep_mac = ANNOTATIONS[family]
                used = family in families
                assert ann.get(public_ip) == (address(family, node) if used else None), (family, ann)
                assert bool(ann.get(vtep_mac)) == (used and backend == "vxlan"), (family, ann)
                devices = oh.ip_json(ns, "-d", "link", "show", DEVICES[family]) if oh.run_in(
                    ns, ["ip", "link", "show", DEVICES[family]]).returncode == 0 else []
                assert bool(devices) == (used and backend == "vxlan"), family
                if not used:
                    assert our_routes(ns, family) == []
                    continue
                wait_for(f"{node} routes IPv{family} to {other}'s pods",
                         lambda n=ns, f=family: len(our_routes(n, f)) == 1, timeout=30)
                (route,) = our_routes(ns, family)
                assert route["dst"] == POD_CIDRS[family][other]
                if backend == "vxlan":
                    info = devices[0]["linkinfo"]["info_data"]
                    assert info["local6" if family == 6 else "local"] == address(family, node)
                    assert devices[0]["mtu"] == UNDERLAY_MTU - VXLAN_OVERHEAD[family]
                    assert route["dev"] == DEVICES[family]
                    assert route["gateway"] == POD_CIDRS[family][other].split("/")[0]
                    assert fdb_dsts(ns, DEVICES[family]) == [address(family, other)]
                    (neigh,) = oh.ip_json(ns, f"-{family}", "neigh", "show", "dev", DEVICES[family], "nud", "permanent")
                    assert neigh["lladdr"] == oh.node_annotations(server, other)[ANNOTATIONS[family][1]]
                else:
                    assert (route["gateway"], route["dev"]) == (address(family, other), "eth1")

        with scratch_netns("h13p", 2) as pods:
            addrs = [oh.add_pod(tmp_path, nodes[node], pod, node) for node, pod in zip(nodes, pods, strict=True)]
            assert [len(a) for a in addrs] == [len(families)] * 2
            for p in pods:
                assert link_mtu(p, "eth0") == mtu
            for family in families:
                a, b = of_family(addrs[0], family), of_family(addrs[1], family)
                rc, out = ping(pods[0], b, size=mtu - HEADERS[family])
                assert rc == 0, out
                rc, out = ping(pods[1], a, size=mtu - HEADERS[family])
                assert rc == 0, out
                rc, out = ping(pods[0], b, size=mtu - HEADERS[family] + 1)
                assert rc != 0 and "message too long" in out and f"{mtu}" in out, out

            # the external host's packets for node2's pods go via node1, which must forward a
            # full-size DF packet into its tunnel (host-gw: into its 1500-byte uplink)
            for family in families:
                target = of_family(addrs[1], family)
                ip(ext, f"-{family}", "route", "replace", POD_CIDRS[family]["node2"], "via", address(family, "node1"))
                rc, out = ping(ext, target, size=56)
                assert rc == 0, out
                full = UNDERLAY_MTU - HEADERS[family]
                rc, out = ping(ext, target, size=full)
                if backend == "vxlan":
                    tunnel = UNDERLAY_MTU - VXLAN_OVERHEAD[family]
                    assert rc != 0, out
                    said = (f"Frag needed and DF set (mtu = {tunnel})" if family == 4
                            else f"Packet too big: mtu={tunnel}")
                    assert f"From {address(family, 'node1')}" in out and said in out, out
                    rc, out = ping(ext, target, size=full)       # the sender learnt it
                    assert rc != 0 and "message too long" in out and f"{tunnel}" in out, out
                    rc, out = ping(ext, target, size=mtu - HEADERS[family])    # the pod's own MTU fits
                    assert rc == 0, out
                else:
                    assert rc == 0, out

        # node2 goes: node1 keeps nothing of it, in any family
        server.kubectl("delete", "node", "node2")
        n1 = nodes["node1"]
        for family in families:
            wait_for(f"node1's IPv{family} route to node2's pods gone",
                     lambda f=family: our_routes(n1, f) == [], timeout=30)
            if backend == "vxlan":
                assert oh.ip_json(n1, f"-{family}", "neigh", "show", "dev", DEVICES[family], "nud", "permanent") == []
                assert fdb_dsts(n1, DEVICES[family]) == []
