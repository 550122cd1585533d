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
import subprocess
from pathlib import Path

import pytest
from kubeweft.lab import netns

from . import agent_helpers
from .agent_helpers import health, ip, join_underlay
from .apiserver_proc import terminate
from .netns_helpers import scratch_netns
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
KUBEWEFT = ROOT / ".venv" / "bin" / "kubeweft"
SHIM = ROOT / ".venv" / "bin" / "kubeweft-cni"
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


def ip_json(ns: str, *args: str) -> list:
    out = netns.run(ns, ["ip", "-j", *args], capture_output=True, text=True, timeout=10).stdout.strip()
    return json.loads(out) if out else []


def our_routes(ns: str) -> list[dict]:
    return ip_json(ns, "-4", "route", "show", "proto", "175")


@contextlib.contextmanager
def two_nodes(tmp: Path, backend: str, args: list[str], env_of=lambda node: {}, internal_ip: bool = False):
    """The lab API server, two multi-homed nodes with their Node objects (podCIDRs from the lab's
    node IPAM; InternalIP in the status when asked), an agent on each; yields (server,
    {node: netns}, {node: agent log path})."""
    with agent_helpers.lab_api(tmp, f"h12u{os.getpid() % 100000}") as (server, underlay, _), \
            scratch_netns("h12n", 4) as namespaces:
        nodes = dict(zip(PRIVATE, namespaces[:2], strict=True))
        nat = dict(zip(PRIVATE, namespaces[2:], strict=True))
        agents: list[subprocess.Popen] = []
        try:
            for node, ns in nodes.items():
                join_underlay(underlay, ns, "eth1", PRIVATE[node])
                nat_interface(ns, nat[node])
                server.kubectl("create", "-f", "-", input=json.dumps(
                    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}))
                if internal_ip:
                    server.kubectl("patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(
                        {"status": {"addresses": [{"type": "InternalIP", "address": PRIVATE[node]}]}}))
            logs = {node: tmp / f"agent-{node}.log" for node in nodes}
            base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KUBE", "NODE_"))}
            for node, ns in nodes.items():
                with open(logs[node], "wb") as log:
                    agents.append(subprocess.Popen(
                        [str(KUBEWEFT), "agent", "--kubeconfig", str(server.state / "kubeconfig-nodes"),
                         "--node-name", node, "--socket", str(tmp / node / "agent.sock"), "--state-dir",
                         str(tmp / node), "--cluster-cidr", "10.244.0.0/16", "--overlay", backend,
                         "--no-proxy", "--no-policy", "--metrics-bind-address", "", *args],
                        env={**base_env, **env_of(node)}, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                        preexec_fn=netns.preexec(ns)))  # noqa: PLW1509 - the test's main thread
            for (node, ns), agent in zip(nodes.items(), agents, strict=True):
                wait_for(f"{node}'s agent ready", lambda a=agent, n=ns, node=node: (
                    _alive(a, logs[node]) and health(n, "/readyz") == 200), timeout=60, interval=0.3)
            yield server, nodes, logs
        finally:
            for agent in agents:
                terminate(agent)


def _alive(agent: subprocess.Popen, log: Path) -> bool:
    assert agent.poll() is None, f"the agent exited {agent.returncode}:\n{log.read_text()[-3000:]}"
    return True


def annotations(server, node: str) -> dict:
    return json.loads(server.kubectl("get", "node", node, "-o", "json").stdout)["metadata"].get("annotations") or {}


def add_pod(tmp: Path, node_ns: str, pod_ns: str, node: str) -> str:
    """A CNI ADD through the executable runtimes run, into pod_ns; the pod's address."""
    conf = {"cniVersion": "1.0.0", "name": "kubeweft", "type": "kubeweft", "socket": str(tmp / node / "agent.sock")}
    proc = netns.run(node_ns, [str(SHIM)], input=json.dumps(conf), capture_output=True, text=True, timeout=60,
                     env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"c-{pod_ns}", "CNI_IFNAME": "eth0",
                          "CNI_NETNS": str(netns.path(pod_ns)), "CNI_PATH": str(SHIM.parent),
                          "PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["ips"][0]["address"].split("/")[0]


def pod_to_pod(tmp: Path, nodes: dict[str, str]) -> None:
    """A pod on each node; node1's pod pings node2's."""
    with scratch_netns("h12p", 2) as pods:
        addresses = [add_pod(tmp, nodes[node], pod, node) for node, pod in zip(nodes, pods, strict=True)]
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
            assert annotations(server, node)["kubeweft.io/public-ip"] == PRIVATE[node]
            assert f"underlay eth1 {PRIVATE[node]} (mtu 1500), chosen by {why}" in logs[node].read_text()
        wait_routed(nodes)
        for node, other in (("node1", "node2"), ("node2", "node1")):
            (link,) = ip_json(nodes[node], "-d", "link", "show", "kw.1")
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
            assert annotations(server, node)["kubeweft.io/public-ip"] == PRIVATE[node]
            (route,) = our_routes(nodes[node])
            assert (route["gateway"], route["dev"]) == (PRIVATE[other], "eth1")
        pod_to_pod(tmp_path, nodes)


def test_without_a_selector_every_node_publishes_the_nat_address(tmp_path):
    """What the selectors prevent: the default route's interface wins, on every node."""
    with two_nodes(tmp_path, "vxlan", []) as (server, nodes, logs):
        for node in nodes:
            assert annotations(server, node)["kubeweft.io/public-ip"] == NAT_ADDRESS
            assert "chosen by the default route" in logs[node].read_text()
