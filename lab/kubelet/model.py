"""What the lab kubelet reads from and writes to the API about its Node, as pure functions;
pods are podspec.py's and status.py's.

Nodes arrive as plain dicts (the watch edge) and become frozen dataclasses here; the Node and
Lease documents the kubelet sends are rendered here. No I/O: no kubernetes, socket or time
imports; times are passed in as RFC 3339 strings.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from .podspec import Condition, Pod
from .status import render_condition

KUBELET_VERSION = "v1.35.0-kubeweft-lab"
# the Ready condition's message while the node's CNI conf dir holds no config, word for word
CNI_NOT_READY = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                 "message:Network plugin returns error: cni plugin not initialized")
NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}


# --- pods ----------------------------------------------------------------------------------------
def container_id(uid: str) -> str:
    """A stable sandbox id from the pod uid: the same after a kubelet restart."""
    return hashlib.sha256(f"lab-sandbox/{uid}".encode()).hexdigest()[:32]


def render_port_mappings(pod: Pod) -> list[dict]:
    """The runtimeConfig portMappings capability, from containers' hostPort entries."""
    return [{"hostPort": p.host_port, "containerPort": p.port, "protocol": p.protocol.lower()}
            for p in pod.ports if p.host_port]


def pick_pod_ip(result: dict) -> str | None:
    """The pod's IPv4 address from a CNI result: the first one on a sandbox interface."""
    interfaces = result.get("interfaces") or []
    ips = result.get("ips") or []

    def in_sandbox(ip: dict) -> bool:
        i = ip.get("interface")
        return isinstance(i, int) and 0 <= i < len(interfaces) and bool(interfaces[i].get("sandbox"))
    for candidates in ([ip for ip in ips if in_sandbox(ip)], ips):
        for ip in candidates:
            try:
                iface = ipaddress.ip_interface(ip.get("address", ""))
            except ValueError:
                continue
            if iface.version == 4:
                return str(iface.ip)
    return None


# --- nodes ---------------------------------------------------------------------------------------
def node_index(node: str) -> int:
    """'node3' -> 3."""
    digits = "".join(ch for ch in node if ch.isdigit())
    return int(digits) if digits else 1


def zone_for(index: int) -> str:
    return "zone-a" if index % 2 == 1 else "zone-b"


def render_node_labels(node: str) -> dict:
    return {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": zone_for(node_index(node))}


def render_node_status(node: str, node_ip: str, ready: Condition, heartbeat: str) -> dict:
    cond = render_condition(ready)
    cond.pop("lastProbeTime", None)
    cond["lastHeartbeatTime"] = heartbeat
    return {
        "conditions": [cond],
        "addresses": [{"type": "InternalIP", "address": node_ip}, {"type": "Hostname", "address": node}],
        "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                     "architecture": "amd64", "containerRuntimeVersion": "lab://0.1.0",
                     "osImage": "kubeweft lab", "kernelVersion": "", "machineID": "", "systemUUID": "",
                     "bootID": ""},
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    }


def render_node(node: str, node_ip: str, ready: Condition, heartbeat: str) -> dict:
    """The Node a kubelet registers: tainted not-ready until the node lifecycle controller sees
    it Ready (so nothing that does not tolerate it lands there first)."""
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": render_node_labels(node)},
            "spec": {"taints": [dict(NOT_READY_TAINT)]},
            "status": render_node_status(node, node_ip, ready, heartbeat)}


LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40               # the kubelet's nodeLeaseDurationSeconds; renewed every quarter of it


def render_lease(node: str, node_uid: str, renew_time: str) -> dict:
    """The node's heartbeat Lease in kube-node-lease, owned by its Node (renewTime is a MicroTime)."""
    meta: dict = {"name": node, "namespace": LEASE_NAMESPACE}
    if node_uid:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew_time}}


@dataclass(frozen=True)
class NodeAddr:
    name: str
    pod_cidr: str | None
    internal_ip: str | None


def parse_node(obj: dict) -> NodeAddr:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ip = next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"),
              None)
    return NodeAddr((obj.get("metadata") or {}).get("name", ""), spec.get("podCIDR") or None, ip)


def plan_pod_routes(own: str, nodes: list[NodeAddr]) -> dict[str, str]:
    """The cloud-route-controller's table for node `own`: each other node's podCIDR via its IP."""
    out: dict[str, str] = {}
    for n in nodes:
        if n.name == own or not n.pod_cidr or not n.internal_ip:
            continue
        try:
            cidr = str(ipaddress.ip_network(n.pod_cidr, strict=False))
            ipaddress.ip_address(n.internal_ip)
        except ValueError:
            continue
        if ipaddress.ip_network(cidr).version == 4:
            out[cidr] = n.internal_ip
    return out


def diff_routes(have: dict[str, str], want: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(routes to add or replace, destinations to remove)."""
    change = {dst: via for dst, via in want.items() if have.get(dst) != via}
    remove = sorted(dst for dst in have if dst not in want)
    return change, remove


def render_reference_conflist(pod_cidr: str, mtu: int, data_dir: str) -> dict:
    """The reference-mode network: bridge + host-local, then portmap. ipMasq is off: other
    nodes' pod CIDRs are routed (this kubelet's route controller), so traffic keeps pod IPs."""
    return {
        "cniVersion": "1.0.0", "name": "lab",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "mtu": mtu,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": f"{data_dir}/ipam"}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }
