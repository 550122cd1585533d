"""Names, addresses and paths of a lab. Pure: every other lab module asks here.

A lab has a short name (default "kw") that prefixes every network namespace it makes and
names its state directory, so several labs (one per test, say) can coexist on one machine.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

STATE_ROOT = Path(os.environ.get("KUBEWEFT_LAB_ROOT", "/run/kubeweft"))
DEFAULT_NAME = os.environ.get("KUBEWEFT_LAB", "kw")

API_PORT = 6443                   # on the control-plane address, inside the underlay netns
UNDERLAY_BRIDGE = "lan0"          # the "LAN" switch in the underlay netns
NODE_UPLINK = "eth0"              # a node's interface on the LAN
EXT_UPLINK = "eth0"               # the external host's interface

# Lab names: lowercase letters and digits only. No "-": `lab down` deletes every netns starting
# with "<name>-", so a name containing "-" could prefix (and remove) another lab's namespaces.
NAME_RE = re.compile(r"^[a-z0-9]{1,20}$")


def check_name(name: str) -> str:
    """Return `name` if it is a valid lab name, else raise ValueError saying why."""
    if not NAME_RE.match(name):
        raise ValueError(f"invalid lab name {name!r}: use 1-20 lowercase letters and digits")
    return name


@dataclass(frozen=True)
class LabConfig:
    name: str = DEFAULT_NAME
    nodes: int = 2
    cni: str = "kubeweft"            # "kubeweft" (install-cni + the agent), "reference" (bridge + host-local + portmap)
                                     # or "none" (no CNI: installed by the user, e.g. through a DaemonSet)
    backend: str = "vxlan"           # kubeweft's cross-node backend (agent --overlay): vxlan or host-gw
    node_subnet: str = "192.168.56.0/24"
    cluster_cidr: str = "10.244.0.0/16"   # pods; a /24 per node
    node_cidr_prefix: int = 24
    service_cidr: str = "10.96.0.0/12"
    nodeport_range: tuple[int, int] = (30000, 32767)
    external_subnet: str = "203.0.113.0/24"
    lb_subnet: str = "198.51.100.0/24"
    mtu: int = 1500                  # underlay MTU
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # LabConfig(**json.load(...)["config"]) gets a list here; keep the dataclass hashable.
        object.__setattr__(self, "nodeport_range", tuple(self.nodeport_range))

    # --- addresses -------------------------------------------------------------------------
    @property
    def control_plane_ip(self) -> str:
        """The underlay bridge's own address: the API server and the router to the outside."""
        return str(ipaddress.ip_network(self.node_subnet)[1])

    def node_ip(self, index: int) -> str:
        """Address of node number `index` (1-based) on the LAN: .11, .12, ..."""
        return str(ipaddress.ip_network(self.node_subnet)[10 + index])

    @property
    def external_gateway_ip(self) -> str:
        return str(ipaddress.ip_network(self.external_subnet)[1])

    @property
    def external_ip(self) -> str:
        return str(ipaddress.ip_network(self.external_subnet)[2])

    @property
    def api_url_for_nodes(self) -> str:
        return f"https://{self.control_plane_ip}:{API_PORT}"

    # --- names -----------------------------------------------------------------------------
    def node_name(self, index: int) -> str:
        return f"node{index}"

    @property
    def underlay_netns(self) -> str:
        return f"{self.name}-underlay"

    @property
    def external_netns(self) -> str:
        return f"{self.name}-ext"

    def node_netns(self, node: str) -> str:
        return f"{self.name}-{node}"

    def pod_netns(self, namespace: str, pod: str, uid: str = "") -> str:
        """Pod netns name: readable, unique (uid hash), and always carrying the lab prefix."""
        digest = hashlib.sha1(f"{namespace}/{pod}/{uid}".encode()).hexdigest()[:8]
        return f"{self.name}-pod-{namespace}-{pod}"[:200] + f"-{digest}"

    @property
    def netns_prefix(self) -> str:
        return f"{self.name}-"

    # --- paths -----------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.name

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        """For the host (root netns): the API server on 127.0.0.1."""
        return self.state_dir / "kubeconfig"

    @property
    def node_kubeconfig(self) -> Path:
        """For kubelets and agents inside node namespaces: the API server on the LAN."""
        return self.state_dir / "kubeconfig-nodes"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def node_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node

    def cni_conf_dir(self, node: str) -> Path:
        return self.node_dir(node) / "cni" / "net.d"

    def cni_bin_dir(self, node: str) -> Path:
        return self.node_dir(node) / "cni" / "bin"

    def cni_data_dir(self, node: str) -> Path:
        """IPAM stores and cached results live here, never in /var/lib/cni."""
        return self.node_dir(node) / "cni" / "data"

    def node_host_dir(self, node: str) -> Path:
        """The node's own filesystem: a path P on the node is node_host_dir / P (kubelet/layout.py)."""
        return self.node_dir(node) / "host"

    def agent_socket(self, node: str) -> Path:
        """The agent's socket: /run/kubeweft/agent.sock on the node (deploy/'s hostPath)."""
        return self.node_host_dir(node) / "run" / "kubeweft" / "agent.sock"
