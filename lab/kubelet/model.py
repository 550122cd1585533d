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


def pick_pod_ips(result: dict, families: tuple[int, ...] = (4,)) -> tuple[str, ...]:
    """The pod's addresses from a CNI result, one per IP version of `families` in that order
    (primary first): the first address of each version on a sandbox interface, else anywhere."""
    interfaces = result.get("interfaces") or []
    ips = result.get("ips") or []

    def in_sandbox(ip: dict) -> bool:
        i = ip.get("interface")
        return isinstance(i, int) and 0 <= i < len(interfaces) and bool(interfaces[i].get("sandbox"))
    found: dict[int, str] = {}
    for candidates in ([ip for ip in ips if in_sandbox(ip)], ips):
        for ip in candidates:
            try:
                iface = ipaddress.ip_interface(ip.get("address", ""))
            except (ValueError, AttributeError):
                continue
            found.setdefault(iface.version, str(iface.ip))
        if all(v in found for v in families):
            break
    return tuple(found[v] for v in families if v in found)


def pick_pod_ip(result: dict) -> str | None:
    """The pod's IPv4 address from a CNI result: the first one on a sandbox interface."""
    return next(iter(pick_pod_ips(result, (4,))), None)


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


def render_node_status(node: str, node_ips: str | tuple[str, ...], ready: Condition, heartbeat: str) -> dict:
    """`node_ips`: the InternalIP addresses, primary family first (one address: a str)."""
    cond = render_condition(ready)
    cond.pop("lastProbeTime", None)
    cond["lastHeartbeatTime"] = heartbeat
    ips = (node_ips,) if isinstance(node_ips, str) else node_ips
    return {
        "conditions": [cond],
        "addresses": [{"type": "InternalIP", "address": ip} for ip in ips]
                     + [{"type": "Hostname", "address": node}],
        "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                     "architecture": "amd64", "containerRuntimeVersion": "lab://0.1.0",
                     "osImage": "kubeweft lab", "kernelVersion": "", "machineID": "", "systemUUID": "",
                     "bootID": ""},
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    }


def render_node(node: str, node_ip: str | tuple[str, ...], ready: Condition, heartbeat: str) -> dict:
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
    pod_cidrs: tuple[str, ...] = ()         # spec.podCIDRs: one per family, primary first
    internal_ips: tuple[str, ...] = ()      # every InternalIP, primary family first


def parse_node(obj: dict) -> NodeAddr:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ips = tuple(a.get("address") for a in status.get("addresses") or []
                if isinstance(a, dict) and a.get("type") == "InternalIP" and isinstance(a.get("address"), str))
    cidrs = spec.get("podCIDRs") if isinstance(spec.get("podCIDRs"), list) else []
    cidrs = tuple(c for c in cidrs if isinstance(c, str)) or ((spec["podCIDR"],) if spec.get("podCIDR") else ())
    return NodeAddr((obj.get("metadata") or {}).get("name", ""), spec.get("podCIDR") or None,
                    ips[0] if ips else None, cidrs, ips)


def plan_pod_routes(own: str, nodes: list[NodeAddr]) -> dict[str, str]:
    """The cloud-route-controller's table for node `own`: each other node's podCIDRs, each via
    that node's InternalIP of the same family (a family it has no address of is skipped)."""
    out: dict[str, str] = {}
    for n in nodes:
        if n.name == own:
            continue
        via: dict[int, str] = {}
        for ip in n.internal_ips:
            try:
                via.setdefault(ipaddress.ip_address(ip).version, ip)
            except ValueError:
                continue
        for cidr in n.pod_cidrs:
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                continue
            if net.version in via:
                out[str(net)] = via[net.version]
    return out


def diff_routes(have: dict[str, str], want: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(routes to add or replace, destinations to remove)."""
    change = {dst: via for dst, via in want.items() if have.get(dst) != via}
    remove = sorted(dst for dst in have if dst not in want)
    return change, remove


def render_reference_conflist(pod_cidrs: str | tuple[str, ...], mtu: int, data_dir: str) -> dict:
    """The reference-mode network: bridge + host-local, then portmap. ipMasq is off: other
    nodes' pod CIDRs are routed (this kubelet's route controller), so traffic keeps pod IPs.
    One host-local range set per podCIDR (one per family): the pod gets an address of each."""
    cidrs = (pod_cidrs,) if isinstance(pod_cidrs, str) else pod_cidrs
    defaults = {4: "0.0.0.0/0", 6: "::/0"}
    versions = [ipaddress.ip_network(c, strict=False).version for c in cidrs]
    return {
        "cniVersion": "1.0.0", "name": "lab",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "mtu": mtu,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": c}] for c in cidrs],
                      "routes": [{"dst": defaults[v]} for v in dict.fromkeys(versions)],
                      "dataDir": f"{data_dir}/ipam"}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }
