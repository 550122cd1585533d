"""Helpers of the tests that run the node agent as a process against a lab API server alone
(test_install_wheel.py, test_agent_deployed.py, test_overlay_underlay.py,
test_overlay_families.py): the API server's underlay in a scratch netns, nodes joined to it,
agents on those nodes (node_agents), the agent's health endpoints (an agent is stopped with
apiserver_proc.terminate).

Everything here is bounded in time and undoes what it made, also when the test fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from kubeweft.lab import netns
from kubeweft.lab.config import LabConfig
from kubeweft.proto import kubeweft_pb2

from .apiserver_proc import Server, terminate
from .services_helpers import http_get
from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
KUBEWEFT = ROOT / ".venv" / "bin" / "kubeweft"

UNDERLAY_ROUTER = "192.168.56.254"      # only a default route's gateway: nothing is ever sent there
HEALTH_PORT = 10256


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def lab_api(tmp_path: Path, name: str, ip_family: str = "ipv4") -> Iterator[tuple[Server, str, LabConfig]]:
    """A lab API server whose control-plane address is in a scratch netns (the lab's underlay:
    bridge lan0 with the control-plane address and a default route, no node or pod in it; its
    IPv6 address too when the lab has IPv6); yields (server, that netns, the lab's config)."""
    cfg = LabConfig(name=name, ip_family=ip_family)
    ns = cfg.underlay_netns
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=10)
    server = None
    try:
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "link", "add", "lan0", "type", "bridge")
        ip(ns, "addr", "add", f"{cfg.control_plane_ip}/24", "dev", "lan0")
        ip(ns, "link", "set", "lan0", "up")
        ip(ns, "route", "add", "default", "via", UNDERLAY_ROUTER)     # the overlay's underlay device
        if cfg.has_ipv6:
            ip(ns, "-6", "addr", "add", f"{cfg.control_plane_ip6}/64", "dev", "lan0", "nodad")
        server = Server(tmp_path, cfg.name, ip_family=None if ip_family == "ipv4" else ip_family)
        yield server, ns, cfg
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=20)


def join_underlay(underlay_ns: str, node_ns: str, dev: str, address: str) -> None:
    """A veth from the underlay's bridge into node_ns as `dev` with `address`/24; made inside the
    underlay netns with the peer moved straight into node_ns, so never in the root one."""
    port = f"v{node_ns[-6:]}"
    ip(underlay_ns, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", node_ns)
    ip(underlay_ns, "link", "set", port, "master", "lan0", "up")
    ip(node_ns, "addr", "add", f"{address}/24", "dev", dev)
    ip(node_ns, "link", "set", dev, "up")
    ip(node_ns, "link", "set", "lo", "up")


def health(ns: str, path: str) -> int:
    """The status of the agent's health endpoint `path`, asked from inside its netns (0: no answer)."""
    return http_get(ns, "127.0.0.1", HEALTH_PORT, path)[0]


def cni_add_request(container_id: str, namespace: str, name: str, bridge: str, data_dir: Path):
    """A CNI ADD as the shim hands it to the agent's gRPC handler (CniServicer), for a netns that
    does not exist: what runs before the wiring runs, then the ADD fails."""
    conf = {"cniVersion": "1.1.0", "name": "kubeweft", "type": "kubeweft", "bridge": bridge,
            "dataDir": str(data_dir)}
    return kubeweft_pb2.CniRequest(
        command="ADD", container_id=container_id, netns=f"/var/run/netns/{container_id}", ifname="eth0",
        args=f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container_id}",
        path="/opt/cni/bin", config=json.dumps(conf).encode())


@contextlib.contextmanager
def node_agents(tmp: Path, server: Server, nodes: dict[str, str], backend: str, args: list[str] = (),
                env_of: Callable[[str], dict] = lambda node: {},
                cluster_cidr: str = "10.244.0.0/16") -> Iterator[dict[str, Path]]:
    """An agent (overlay `backend`, no service proxy, no policy) in each node's netns
    ({node: netns}), with its socket and state under tmp/NODE; yields {node: log path} once every
    one is ready, and ends them (by PID) after."""
    agents: list[subprocess.Popen] = []
    logs = {node: tmp / f"agent-{node}.log" for node in nodes}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KUBE", "NODE_"))}
    try:
        for node, ns in nodes.items():
            with open(logs[node], "wb") as log:
                agents.append(subprocess.Popen(
                    [str(KUBEWEFT), "agent", "--kubeconfig", str(server.state / "kubeconfig-nodes"),
                     "--node-name", node, "--socket", str(tmp / node / "agent.sock"), "--state-dir",
                     str(tmp / node), "--cluster-cidr", cluster_cidr, "--overlay", backend,
                     "--no-proxy", "--no-policy", "--metrics-bind-address", "", *args],
                    env={**base_env, **env_of(node)}, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=netns.preexec(ns)))  # noqa: PLW1509 - the test's main thread
        for (node, ns), agent in zip(nodes.items(), agents, strict=True):
            wait_for(f"{node}'s agent ready", lambda a=agent, n=ns, node=node: (
                _alive(a, logs[node]) and health(n, "/readyz") == 200), timeout=60, interval=0.3)
        yield logs
    finally:
        for agent in agents:
            terminate(agent)


def _alive(agent: subprocess.Popen, log: Path) -> bool:
    assert agent.poll() is None, f"the agent exited {agent.returncode}:\n{log.read_text()[-3000:]}"
    return True
