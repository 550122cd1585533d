"""What the lab kubelet reads from and writes to the API, as pure functions.

Pods and Nodes arrive as plain dicts (the watch edge) and become frozen dataclasses here; the
status documents the kubelet sends are rendered here. No I/O: no kubernetes, socket or time
imports; times are passed in as RFC 3339 strings.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

KUBELET_VERSION = "v1.35.0-kubeweft-lab"
CNI_NOT_READY = "container runtime network not ready: cni config uninitialized"
DEFAULT_GRACE = 30
RUNTIME_PREFIX = "lab://"


# --- pods ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Port:
    port: int
    protocol: str = "TCP"
    name: str = ""
    host_port: int = 0


@dataclass(frozen=True)
class Probe:
    kind: str                    # "http" or "tcp"
    port: int
    path: str = "/"
    period: float = 10.0
    initial_delay: float = 0.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


@dataclass(frozen=True)
class Pod:
    uid: str
    namespace: str
    name: str
    node_name: str
    containers: tuple[str, ...]
    ports: tuple[Port, ...]
    probe: Probe | None
    host_network: bool
    grace_seconds: int
    deleting: bool
    phase: str
    resource_version: str = ""
    start_time: str = ""
    conditions: tuple[Condition, ...] = ()      # as the API holds them (kept on adoption)
    env: tuple[tuple[str, str], ...] = ()       # the containers' literal env values

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _int(v, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def parse_probe(raw: dict | None, ports: tuple[Port, ...]) -> Probe | None:
    """A container's readinessProbe (httpGet or tcpSocket); named ports resolve against the
    pod's declared ports. Other kinds (exec, grpc) are not supported: no probe."""
    if not raw:
        return None
    if "httpGet" in raw:
        kind, target = "http", raw["httpGet"] or {}
    elif "tcpSocket" in raw:
        kind, target = "tcp", raw["tcpSocket"] or {}
    else:
        return None
    port = target.get("port")
    if isinstance(port, str) and not port.isdigit():
        port = next((p.port for p in ports if p.name == port), 0)
    port = _int(port)
    if not port:
        return None
    return Probe(kind=kind, port=port, path=target.get("path") or "/",
                 period=max(1.0, float(raw.get("periodSeconds") or 10)),
                 initial_delay=float(raw.get("initialDelaySeconds") or 0),
                 timeout=max(0.2, float(raw.get("timeoutSeconds") or 1)),
                 failure_threshold=max(1, _int(raw.get("failureThreshold"), 3)),
                 success_threshold=max(1, _int(raw.get("successThreshold"), 1)))


def parse_pod(obj: dict) -> Pod:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    containers = spec.get("containers") or []
    ports: list[Port] = []
    for c in containers:
        for p in c.get("ports") or []:
            if _int(p.get("containerPort")):
                ports.append(Port(_int(p["containerPort"]), (p.get("protocol") or "TCP").upper(),
                                  p.get("name") or "", _int(p.get("hostPort"))))
    ports_t = tuple(ports)
    probe = next((pr for pr in (parse_probe(c.get("readinessProbe"), ports_t) for c in containers)
                  if pr is not None), None)
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds")
    return Pod(uid=meta.get("uid", ""), namespace=meta.get("namespace", "default"),
               name=meta.get("name", ""), node_name=spec.get("nodeName") or "",
               containers=tuple(c.get("name", f"c{i}") for i, c in enumerate(containers)) or ("main",),
               ports=ports_t, probe=probe, host_network=bool(spec.get("hostNetwork")),
               grace_seconds=max(0, _int(grace, DEFAULT_GRACE)),
               deleting=bool(meta.get("deletionTimestamp")), phase=status.get("phase") or "Pending",
               resource_version=meta.get("resourceVersion", ""), start_time=status.get("startTime") or "",
               conditions=tuple(parse_conditions(status.get("conditions"))),
               env=tuple((e["name"], str(e.get("value", ""))) for c in containers for e in c.get("env") or []
                         if isinstance(e, dict) and e.get("name") and "valueFrom" not in e))


def parse_conditions(raw: list | None) -> list[Condition]:
    out = []
    for c in raw or []:
        if isinstance(c, dict) and c.get("type"):
            out.append(Condition(c["type"], c.get("status") == "True", c.get("lastTransitionTime") or "",
                                 c.get("reason") or "", c.get("message") or ""))
    return out


def pod_from_record(uid: str, entry: dict, node: str) -> Pod:
    """A stand-in Pod for a pods.json entry whose API object is gone: enough to tear it down."""
    return Pod(uid=uid, namespace=entry.get("namespace", ""), name=entry.get("name", ""), node_name=node,
               containers=("main",), ports=(), probe=None, host_network=bool(entry.get("hostNetwork")),
               grace_seconds=2, deleting=False, phase="Running")


def container_id(uid: str) -> str:
    """A stable sandbox id from the pod uid: the same after a kubelet restart."""
    return hashlib.sha256(f"lab-sandbox/{uid}".encode()).hexdigest()[:32]


def render_ports_arg(pod: Pod) -> str:
    """The workload's --ports: '80/TCP,81/UDP' (empty: the workload picks 8080)."""
    seen: list[str] = []
    for p in pod.ports:
        item = f"{p.port}/{p.protocol}"
        if item not in seen:
            seen.append(item)
    return ",".join(seen)


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


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    since: str                   # lastTransitionTime
    reason: str = ""
    message: str = ""


def next_condition(old: Condition | None, type_: str, status: bool, now: str, reason: str = "",
                   message: str = "") -> Condition:
    """The condition with lastTransitionTime kept unless its status flips."""
    since = old.since if old is not None and old.status == status else now
    return Condition(type_, status, since, reason, message)


def _render_condition(c: Condition, **extra: str) -> dict:
    out = {"type": c.type, "status": "True" if c.status else "False", "lastTransitionTime": c.since,
           "lastProbeTime": None}
    if c.reason:
        out["reason"] = c.reason
    if c.message:
        out["message"] = c.message
    out.update(extra)
    return out


def render_pod_status(pod: Pod, *, phase: str, host_ip: str, pod_ip: str | None, started: str,
                      scheduled: Condition, initialized: Condition, ready: Condition,
                      running_since: str | None, restart_count: int = 0, sandbox_id: str = "") -> dict:
    """The status a kubelet reports: ready is both Ready and ContainersReady (one workload)."""
    containers_ready = Condition("ContainersReady", ready.status, ready.since, ready.reason, ready.message)
    status: dict = {
        "phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "startTime": started,
        "conditions": [_render_condition(c) for c in (initialized, ready, containers_ready, scheduled)],
        "containerStatuses": [],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    for name in pod.containers:
        cs: dict = {"name": name, "ready": bool(ready.status and running_since), "restartCount": restart_count,
                    "image": "kubeweft/lab-workload", "imageID": "", "started": bool(running_since)}
        if running_since:
            cs["state"] = {"running": {"startedAt": running_since}}
            cs["containerID"] = RUNTIME_PREFIX + sandbox_id
        else:
            cs["state"] = {"waiting": {"reason": ready.reason or "ContainerCreating",
                                       **({"message": ready.message} if ready.message else {})}}
        status["containerStatuses"].append(cs)
    return status


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
    cond = _render_condition(ready, lastHeartbeatTime=heartbeat)
    cond.pop("lastProbeTime", None)
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
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": render_node_labels(node)},
            "spec": {}, "status": render_node_status(node, node_ip, ready, heartbeat)}


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
