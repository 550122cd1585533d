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
IP_FAMILIES: dict[str, tuple[int, ...]] = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}

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
    # IP families, as kind's networking.ipFamily: "ipv4", "ipv6" or "dual" (IPv4 primary, as kind's
    # dual). The IPv6 ranges below are used only when the family includes IPv6. The underlay keeps
    # its IPv4 addresses in every mode (kind's node containers have both on docker's network); an
    # "ipv6" lab's Nodes report only their IPv6 InternalIP.
    ip_family: str = "ipv4"
    node_subnet6: str = "2001:db8:56::/64"
    cluster_cidr6: str = "fd00:10:244::/56"   # pods; a /64 per node
    node_cidr_prefix6: int = 64
    service_cidr6: str = "fd00:10:96::/112"
    external_subnet6: str = "2001:db8:113::/64"
    lb_subnet6: str = "2001:db8:100::/64"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # LabConfig(**json.load(...)["config"]) gets a list here; keep the dataclass hashable.
        object.__setattr__(self, "nodeport_range", tuple(self.nodeport_range))
        if self.ip_family not in IP_FAMILIES:
            raise ValueError(f"invalid ip family {self.ip_family!r}: use one of {', '.join(IP_FAMILIES)}")

    # --- families ---------------------------------------------------------------------------
    @property
    def families(self) -> tuple[int, ...]:
        """The cluster's IP versions, primary first: (4,), (6,) or (4, 6)."""
        return IP_FAMILIES[self.ip_family]

    @property
    def has_ipv6(self) -> bool:
        return 6 in self.families

    @property
    def cluster_cidrs(self) -> tuple[str, ...]:
        """Pod ranges, primary family first (the controller manager's --cluster-cidr)."""
        return tuple(self.cluster_cidr if v == 4 else self.cluster_cidr6 for v in self.families)

    @property
    def service_cidrs(self) -> tuple[str, ...]:
        """Service ranges, primary family first (the API server's --service-cluster-ip-range)."""
        return tuple(self.service_cidr if v == 4 else self.service_cidr6 for v in self.families)

    @property
    def lb_subnets(self) -> tuple[str, ...]:
        return tuple(self.lb_subnet if v == 4 else self.lb_subnet6 for v in self.families)

    @property
    def cluster_dns_ip(self) -> str:
        """The DNS Service's ClusterIP: the tenth address of the primary service range, as kubeadm
        (10.96.0.10; fd00:10:96::a on an IPv6 lab, as kind's)."""
        return str(ipaddress.ip_network(self.service_cidrs[0])[10])

    def node_cidr_prefix_for(self, version: int) -> int:
        return self.node_cidr_prefix if version == 4 else self.node_cidr_prefix6

    # --- addresses -------------------------------------------------------------------------
    @property
    def control_plane_ip(self) -> str:
        """The underlay bridge's own address: the API server and the router to the outside."""
        return str(ipaddress.ip_network(self.node_subnet)[1])

    def node_ip(self, index: int) -> str:
        """Address of node number `index` (1-based) on the LAN: .11, .12, ..."""
        return str(ipaddress.ip_network(self.node_subnet)[10 + index])

    def node_ip6(self, index: int) -> str:
        """IPv6 address of node number `index` on the LAN: ::11, ::12, ... (hex, like the IPv4 .11)."""
        return str(ipaddress.ip_network(self.node_subnet6)[0x10 + index])

    def node_internal_ips(self, index: int) -> tuple[str, ...]:
        """The Node's InternalIP addresses, primary family first."""
        return tuple(self.node_ip(index) if v == 4 else self.node_ip6(index) for v in self.families)

    @property
    def control_plane_ip6(self) -> str:
        return str(ipaddress.ip_network(self.node_subnet6)[1])

    @property
    def external_gateway_ip6(self) -> str:
        return str(ipaddress.ip_network(self.external_subnet6)[1])

    @property
    def external_ip6(self) -> str:
        return str(ipaddress.ip_network(self.external_subnet6)[2])

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
