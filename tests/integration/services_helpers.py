"""Shared helpers of the service-proxy lab tests (tests/integration/test_services_*.py).

Every test module gets a `Cluster` on a shared kubeweft lab (3 nodes, kubeweft CNI + agent:
`labk`, or `klab` to run in every IP family), bound to a Kubernetes namespace of its own
("h10-<topic>") that it creates and always removes:

    c = Cluster(labk, "h10-clusterip")
    c.start_pods(web={"web-1": "node1"}, clients={"client": "node2"})    # app=web pods on 8080
    svc = c.service("web", ports=[svc_port(80, "http")], selector={"app": "web"})
    c.wait_answer("h10-clusterip/client", svc.ip, 80)           # the agents synced
    c.who("node:node2", svc.ip, 80, n=20) -> [ProbeResult, ...]

Traffic goes through lab.probe.probe_once (a socket made inside the source netns: a pod
"NS/NAME", "node:NODE" or "external"), so the outcome is what the kernel did to real packets:
connected (with the endpoint's pod name and the client address it saw), refused or timeout.
Sources run on a worker thread, never the main one (lab.netns.entered moves the thread).

The Cluster speaks the lab's `version` (4 on labk, 6 on labk6 and labkd): node_ip, external_ip,
pod IPs, a Service's ip and LoadBalancer address are that family's. On a dual-stack lab the
Services it creates are RequireDualStack (both ClusterIPs, both ingress addresses), so the
IPv6 half of a dual-stack Service is what the traffic exercises.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import json
import socket
import subprocess
import time
from dataclasses import dataclass

from kubeweft.lab import lifecycle
from kubeweft.lab import netns as lab_netns
from kubeweft.lab import probe as lab_probe
from kubeweft.lab.probe import CONNECTED, REFUSED, TIMEOUT

from .waiting import wait_for

EXTERNAL = "external"
SYNC_TIMEOUT = 30.0           # how long an agent may take to program a new Service
ZONE = "topology.kubernetes.io/zone"
# A route the tests pin an address with beats the lab announcer's (metric 100). Not metric 0:
# IPv6 reads 0 as 1024 (IP6_RT_PRIO_USER), which lost to the announcer's ECMP route.
PIN_METRIC = "1"

_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="h10-probe")


# --- small pure builders --------------------------------------------------------------------
def port(number: int, proto: str = "TCP", name: str | None = None) -> dict:
    """A containerPort."""
    p = {"containerPort": number, "protocol": proto}
    if name:
        p["name"] = name
    return p


def svc_port(number: int, target: int | str | None = None, proto: str = "TCP",
             name: str | None = None, node_port: int | None = None) -> dict:
    """A Service port; several ports need names."""
    p: dict = {"port": number, "protocol": proto, "targetPort": target if target is not None else number}
    if name:
        p["name"] = name
    if node_port:
        p["nodePort"] = node_port
    return p


def web_ports() -> list[dict]:
    """A Service's ports for the app=web pods: 80/TCP to their http port, 80/UDP to 8080."""
    return [svc_port(80, "http", name="http"), svc_port(80, 8080, "UDP", name="udp")]


@dataclass
class ProbeResult:
    outcome: str
    pod: str | None          # "NS/NAME" of the endpoint that answered
    client: str | None       # the client address the endpoint saw, without the port
    ms: float
    raw: dict

    @property
    def name(self) -> str | None:
        return self.pod.rpartition("/")[2] if self.pod else None


def to_result(raw: dict) -> ProbeResult:
    client = raw.get("client")
    if client:
        client = client.rpartition(":")[0].strip("[]")
    return ProbeResult(raw["outcome"], raw.get("pod"), client, raw.get("ms", 0.0), raw)


def outcomes(results: list[ProbeResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        out[r.outcome] = out.get(r.outcome, 0) + 1
    return out


# --- netns I/O -----------------------------------------------------------------------------
def in_thread(fn, *args, **kwargs):
    return _pool.submit(fn, *args, **kwargs).result(timeout=120)


def family_of(host: str) -> socket.AddressFamily:
    """The socket family of an address: AF_INET6 for IPv6, else AF_INET."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def http_get(netns_name: str, host: str, port_: int, path: str = "/", timeout: float = 3.0
             ) -> tuple[int, str]:
    """GET http://host:port/path from inside `netns_name` -> (status, body); (0, error) when no
    answer. HTTP/1.0 with the socket made inside the netns."""
    def run() -> tuple[int, str]:
        with lab_netns.entered(netns_name):
            sock = socket.socket(family_of(host), socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port_))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{port_}\r\n\r\n".encode())
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            return 0, f"{type(e).__name__}: {e}"
        finally:
            sock.close()
        head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
        parts = head.split(None, 2)
        return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body
    return in_thread(run)


def netns_addresses(netns_name: str, version: int = 4) -> set[str]:
    """Every address of IP version `version` configured in a netns (a node: eth0, the bridge,
    the VXLAN device)."""
    out = lab_netns.run(netns_name, ["ip", "-j", f"-{version}", "addr", "show"], capture_output=True,
                        text=True, timeout=10, check=False).stdout
    return {a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])}


# --- the cluster -----------------------------------------------------------------------------
@dataclass
class Service:
    name: str
    ip: str | None
    node_ports: dict[str, int]      # port name (or str(port)) -> nodePort
    obj: dict


class Cluster:
    """One test module's view of the shared lab: its own namespace, pods, Services, slices."""

    def __init__(self, lab, namespace: str) -> None:
        from kubernetes import client as k8s

        self.lab, self.cfg, self.ns = lab, lab.cfg, namespace
        self.version: int = getattr(lab, "version", 4)
        six = self.version == 6
        self.external_ip = self.cfg.external_ip6 if six else self.cfg.external_ip
        self.external_subnet = self.cfg.external_subnet6 if six else self.cfg.external_subnet
        self.lb_subnet = self.cfg.lb_subnet6 if six else self.cfg.lb_subnet
        self.api_client = lab.client()
        self.core = k8s.CoreV1Api(self.api_client)
        self.disco = k8s.DiscoveryV1Api(self.api_client)
        self.node_ip = {f"node{i}": self.cfg.node_ip6(i) if six else self.cfg.node_ip(i)
                        for i in range(1, self.cfg.nodes + 1)}
        self._routes: list[str] = []
        with contextlib.suppress(Exception):
            self.core.delete_namespace(namespace, _request_timeout=10)
        self._delete_contents()
        self.core.create_namespace({"metadata": {"name": namespace}}, _request_timeout=10)

    # --- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Remove everything this module made: routes, slices, Services, pods, the namespace."""
        for cidr in self._routes:
            subprocess.run(["ip", "-n", self.cfg.underlay_netns, "route", "del", cidr, "metric", PIN_METRIC],
                           capture_output=True, timeout=10, check=False)
        self._routes.clear()
        try:
            self._delete_contents()
            wait_for("pods of the namespace gone", lambda: not self._raw(
                self.core.list_namespaced_pod, self.ns)["items"], timeout=30)
            with contextlib.suppress(Exception):
                self.core.delete_namespace(self.ns, _request_timeout=10)
        finally:
            self.api_client.close()

    def _delete_contents(self) -> None:
        for fn in (self.disco.delete_collection_namespaced_endpoint_slice,
                   self.core.delete_collection_namespaced_service,
                   self.core.delete_collection_namespaced_pod):
            with contextlib.suppress(Exception):
                kw = {"grace_period_seconds": 0} if fn == self.core.delete_collection_namespaced_pod else {}
                fn(self.ns, _request_timeout=10, **kw)
        # delete_collection on services may be refused by older servers: one by one as well
        with contextlib.suppress(Exception):
            for s in self._raw(self.core.list_namespaced_service, self.ns)["items"]:
                self.core.delete_namespaced_service(s["metadata"]["name"], self.ns, _request_timeout=10)

    def pick(self, ips: list[str]) -> str | None:
        """This Cluster's family's address among `ips`, or None."""
        return next((ip for ip in ips if (":" in ip) == (self.version == 6)), None)

    @staticmethod
    def _raw(fn, *args, **kwargs) -> dict:
        return json.loads(fn(*args, _preload_content=False, _request_timeout=10, **kwargs).data)

    # --- pods ------------------------------------------------------------------------------
    def pod(self, name: str, node: str, ports: list[dict] | None = None,
            labels: dict | None = None, env: dict | None = None, grace: int | None = None) -> None:
        container: dict = {"name": "main", "image": "lab", "ports": ports or [port(8080)]}
        if env:
            container["env"] = [{"name": k, "value": str(v)} for k, v in env.items()]
        spec: dict = {"nodeName": node, "containers": [container]}
        if grace is not None:
            spec["terminationGracePeriodSeconds"] = grace
        self.core.create_namespaced_pod(self.ns, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns, "labels": labels or {}},
            "spec": spec}, _request_timeout=10)

    def web_pod(self, name: str, node: str) -> None:
        """A pod of the app=web set: the lab workload on 8080, the containerPort named http."""
        self.pod(name, node, ports=[port(8080, name="http")], labels={"app": "web"})

    def start_pods(self, web: dict[str, str], clients: dict[str, str] | None = None) -> dict[str, str]:
        """app=web pods and plain client pods (name -> node), all Ready -> name: IP."""
        for name, node in web.items():
            self.web_pod(name, node)
        for name, node in (clients or {}).items():
            self.pod(name, node)
        return self.wait_ready(*web, *(clients or {}))

    def wait_ready(self, *names: str, timeout: float = 60.0) -> dict[str, str]:
        """Wait until every named pod is Ready with an IP and a netns to probe from -> name: IP."""
        def ready() -> dict[str, str] | None:
            pods = {p["metadata"]["name"]: p for p in self._raw(self.core.list_namespaced_pod, self.ns)["items"]}
            local = lab_probe.read_pods(self.cfg)
            out = {}
            for n in names:
                p = pods.get(n)
                if not p:
                    return None
                conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions") or []}
                ip = self._pod_ip(p)
                if conds.get("Ready") != "True" or not ip or f"{self.ns}/{n}" not in local:
                    return None
                out[n] = ip
            return out
        return wait_for(f"pods {', '.join(names)} Ready", ready, timeout=timeout, interval=0.3)

    def _pod_ip(self, pod: dict) -> str | None:
        status = pod.get("status") or {}
        return self.pick([i["ip"] for i in status.get("podIPs") or []] or [status.get("podIP") or ""])

    def delete_pod(self, name: str, grace: int | None = 0) -> None:
        kw = {} if grace is None else {"grace_period_seconds": grace}
        self.core.delete_namespaced_pod(name, self.ns, _request_timeout=10, **kw)

    # --- Services and slices ----------------------------------------------------------------
    def service(self, name: str, ports: list[dict], selector: dict | None = None,
                type_: str = "ClusterIP", labels: dict | None = None, annotations: dict | None = None,
                **spec_extra) -> Service:
        spec: dict = {"type": type_, "ports": ports, **self.family_spec(), **spec_extra}
        if selector is not None:
            spec["selector"] = selector
        obj = self._raw(self.core.create_namespaced_service, self.ns, {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": self.ns, "labels": labels or {},
                         "annotations": annotations or {}}, "spec": spec})
        return self._to_service(obj)

    def family_spec(self) -> dict:
        """What a Service needs to have an address of this Cluster's family: nothing on a
        single-stack lab (its one family is the default); both families on a dual-stack lab,
        whose default is SingleStack of the primary (IPv4)."""
        if self.cfg.ip_family == "dual":
            return {"ipFamilyPolicy": "RequireDualStack"}
        return {}

    def patch_service(self, name: str, spec: dict) -> Service:
        return self._to_service(self._raw(self.core.patch_namespaced_service, name, self.ns,
                                          {"spec": spec}))

    def delete_service(self, name: str) -> None:
        self.core.delete_namespaced_service(name, self.ns, _request_timeout=10)

    def get_service(self, name: str) -> Service:
        return self._to_service(self._raw(self.core.read_namespaced_service, name, self.ns))

    def _to_service(self, obj: dict) -> Service:
        spec = obj.get("spec") or {}
        ip = self.pick(spec.get("clusterIPs") or [spec.get("clusterIP") or ""])
        nps = {(p.get("name") or str(p["port"])): p["nodePort"] for p in spec.get("ports") or []
               if p.get("nodePort")}
        return Service(obj["metadata"]["name"], ip if ip and ip != "None" else None, nps, obj)

    def lb_ip(self, name: str, timeout: float = 20.0) -> str:
        """The LoadBalancer ingress IP of this Cluster's family the lab's allocator gave the Service."""
        def ingress():
            lb = (self._raw(self.core.read_namespaced_service, name, self.ns).get("status") or {}).get(
                "loadBalancer") or {}
            return self.pick([i["ip"] for i in lb.get("ingress") or [] if i.get("ip")])
        return wait_for(f"a LoadBalancer IP for {name}", ingress, timeout=timeout)

    def endpoint_slice(self, name: str, service: str, endpoints: list[dict], ports: list[dict],
                       labels: dict | None = None) -> None:
        """Create or replace an EndpointSlice we write ourselves (for a selectorless Service).
        endpoints: [{"addresses": [ip], "conditions": {...}, "nodeName": ..., "zone": ...}]"""
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "addressType": f"IPv{self.version}",
                "metadata": {"name": name, "namespace": self.ns,
                             "labels": {"kubernetes.io/service-name": service,
                                        "endpointslice.kubernetes.io/managed-by": "h10-tests",
                                        **(labels or {})}},
                "endpoints": endpoints, "ports": ports}
        try:
            current = self._raw(self.disco.read_namespaced_endpoint_slice, name, self.ns)
        except Exception:  # noqa: BLE001 - not there yet
            self.disco.create_namespaced_endpoint_slice(self.ns, body, _request_timeout=10)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.disco.replace_namespaced_endpoint_slice(name, self.ns, body, _request_timeout=10)

    def slice_endpoints(self, service: str) -> list[dict]:
        """The endpoints of the Service's EndpointSlices of this Cluster's address type (a
        dual-stack Service has a slice per family)."""
        items = self._raw(self.disco.list_namespaced_endpoint_slice, self.ns,
                          label_selector=f"kubernetes.io/service-name={service}")["items"]
        return [ep for s in items if s.get("addressType") == f"IPv{self.version}"
                for ep in s.get("endpoints") or []]

    def wait_endpoints(self, service: str, count: int, timeout: float = 30.0) -> list[dict]:
        return wait_for(f"{count} ready endpoints of {service}", lambda: (
            eps if len(eps := [e for e in self.slice_endpoints(service)
                               if (e.get("conditions") or {}).get("ready")]) == count else None),
            timeout=timeout)

    # --- the lab's wires --------------------------------------------------------------------
    def route(self, cidr: str, node: str) -> None:
        """Route `cidr` (an LB IP or externalIP: /32, /128) from the underlay (the external
        host's router) to `node`'s address of the same family; removed by close()."""
        if "/" not in cidr:
            cidr += "/128" if ":" in cidr else "/32"
        subprocess.run(["ip", "-n", self.cfg.underlay_netns, "route", "replace", cidr, "via", self.node_ip[node],
                        "metric", PIN_METRIC], capture_output=True, timeout=10, check=True)
        if cidr not in self._routes:
            self._routes.append(cidr)

    def source_netns(self, source: str) -> str:
        if source == EXTERNAL:
            return self.cfg.external_netns
        if source.startswith("node:"):
            return self.cfg.node_netns(source[5:])
        key = source if "/" in source else f"{self.ns}/{source}"
        entry = lab_probe.read_pods(self.cfg).get(key)
        if not entry or not entry.get("netns"):
            raise AssertionError(f"pod {key} is not running (no netns in pods.json)")
        return entry["netns"]

    def node_addresses(self, node: str) -> set[str]:
        return netns_addresses(self.cfg.node_netns(node), self.version)

    def pod_ip(self, name: str) -> str:
        return self._pod_ip(self._raw(self.core.read_namespaced_pod, name, self.ns))

    # --- traffic ---------------------------------------------------------------------------
    def probe(self, source: str, host: str, port_: int, udp: bool = False,
              timeout: float = 2.0) -> ProbeResult:
        ns = self.source_netns(source)
        return to_result(in_thread(lab_probe.probe_once, ns, host, port_, udp=udp, timeout=timeout))

    def who(self, source: str, host: str, port_: int, n: int = 12, udp: bool = False,
            timeout: float = 2.0) -> list[ProbeResult]:
        """n separate connections (n new sockets, so n new conntrack flows)."""
        ns = self.source_netns(source)
        futs = [_pool.submit(lab_probe.probe_once, ns, host, port_, udp=udp, timeout=timeout)
                for _ in range(n)]
        return [to_result(f.result(timeout=120)) for f in futs]

    def wait_answer(self, source: str, host: str, port_: int, udp: bool = False,
                    pods: set[str] | None = None, timeout: float = SYNC_TIMEOUT) -> ProbeResult:
        """Probe until a connection succeeds (and, with `pods`, lands on one of those pod names):
        the agents have programmed the Service."""
        seen: list[ProbeResult] = []

        def once():
            r = self.probe(source, host, port_, udp=udp, timeout=1.0)
            seen[:] = [r]
            return r if r.outcome == CONNECTED and (pods is None or r.name in pods) else None
        try:
            return wait_for(f"{source} -> {host}:{port_}{'/udp' if udp else ''} answering", once,
                            timeout=timeout, interval=0.3)
        except AssertionError as e:
            raise AssertionError(f"{e}; last probe: {seen[0].raw if seen else None}") from None

    def wait_outcome(self, source: str, host: str, port_: int, outcome: str, udp: bool = False,
                     timeout: float = SYNC_TIMEOUT) -> ProbeResult:
        seen: list[ProbeResult] = []

        def once():
            r = self.probe(source, host, port_, udp=udp, timeout=1.0)
            seen[:] = [r]
            return r if r.outcome == outcome else None
        try:
            return wait_for(f"{source} -> {host}:{port_}{'/udp' if udp else ''} {outcome}", once,
                            timeout=timeout, interval=0.3)
        except AssertionError as e:
            raise AssertionError(f"{e}; last probe: {seen[0].raw if seen else None}") from None


def unused_service_ip(cluster: Cluster) -> str:
    """An address in the service range of the Cluster's family that no Service holds (the top
    of the range)."""
    specs = [s.get("spec") or {} for s in Cluster._raw(cluster.core.list_service_for_all_namespaces)["items"]]
    used = {ip for spec in specs for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]}
    net = ipaddress.ip_network(cluster.cfg.service_cidr6 if cluster.version == 6 else cluster.cfg.service_cidr)
    for offset in range(net.num_addresses - 10, net.num_addresses - 200, -1):
        ip = str(net[offset])
        if ip not in used:
            return ip
    raise AssertionError("no free address in the service range")


@contextlib.contextmanager
def cluster(lab, namespace: str):
    """A Cluster for one test module, always closed (pods, Services, routes, namespace gone)."""
    c = Cluster(lab, namespace)
    try:
        yield c
    finally:
        c.close()


def names(results: list[ProbeResult]) -> set[str | None]:
    """The endpoint pod names that answered (None for a failed attempt)."""
    return {r.name for r in results}


def clients(results: list[ProbeResult]) -> set[str | None]:
    return {r.client for r in results}


def used_node_ports(cluster: Cluster) -> set[int]:
    """Every nodePort allocated in the lab (all namespaces: the lab is shared)."""
    return {p["nodePort"] for s in Cluster._raw(cluster.core.list_service_for_all_namespaces)["items"]
            for p in (s.get("spec") or {}).get("ports") or [] if p.get("nodePort")}


def udp_outcome(netns_name: str, host: str, port_: int, timeout: float = 1.0) -> str:
    """A UDP "whoami" on a connected socket -> CONNECTED, REFUSED or TIMEOUT (udp_exchange)."""
    return udp_exchange(netns_name, host, port_, timeout)[0]


def udp_exchange(netns_name: str, host: str, port_: int, timeout: float = 1.0) -> tuple[str, bytes]:
    """A UDP "whoami" on a connected socket -> (CONNECTED, the answer), (REFUSED, b"") or
    (TIMEOUT, b"").

    Unlike lab.probe, a send() failing with EPERM is not the end: a netfilter reject on the
    sender's own OUTPUT hook drops the datagram (EPERM) AND sends an ICMP port unreachable to
    the socket, which the next recv() reports as ECONNREFUSED; a plain drop leaves recv() to
    time out. So node-sourced refused and dropped stay apart."""
    import errno

    def run() -> tuple[str, bytes]:
        with lab_netns.entered(netns_name):
            sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
        try:
            sock.connect((host, port_))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    sock.send(b"whoami")
                except PermissionError:
                    pass
                except ConnectionRefusedError:
                    return REFUSED, b""
                sock.settimeout(max(0.01, min(0.3, deadline - time.monotonic())))
                try:
                    if data := sock.recv(2048):
                        return CONNECTED, data
                except TimeoutError:
                    continue
                except OSError as e:
                    if e.errno == errno.ECONNREFUSED:
                        return REFUSED, b""
                    raise
            return TIMEOUT, b""
        finally:
            sock.close()
    return in_thread(run)


# ---- shared by the UDP, affinity and restart tests -------------------------------------------

class UdpClient:
    """One connected UDP socket made inside a netns, reused for every query."""

    def __init__(self, netns_name: str, host: str, port_: int) -> None:
        def make() -> socket.socket:
            with lab_netns.entered(netns_name):
                s = socket.socket(family_of(host), socket.SOCK_DGRAM)
            s.connect((host, port_))
            return s
        self.sock = in_thread(make)

    def ask(self, timeout: float = 0.5) -> str | None:
        """'whoami' -> the pod name that answered, or None (no answer in time, or an ICMP error)."""
        self.sock.settimeout(timeout)
        try:
            self.sock.send(b"whoami")
            data = self.sock.recv(2048)
        except OSError:
            return None
        return json.loads(data)["pod"].rpartition("/")[2]

    def ask_until(self, want: str, within: float) -> tuple[str | None, float]:
        """Ask until `want` answers or `within` seconds pass: (the last answer, the seconds it took)."""
        t0 = time.monotonic()
        got = None
        while time.monotonic() - t0 < within:
            got = self.ask(timeout=0.2)
            if got == want:
                break
        return got, time.monotonic() - t0

    def close(self) -> None:
        self.sock.close()


def keepalive_socket(netns_name: str, host: str, port_: int) -> socket.socket:
    def make():
        with lab_netns.entered(netns_name):
            s = socket.socket(family_of(host), socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect((host, port_))
        return s
    return in_thread(make)


def whoami(sock: socket.socket) -> str:
    """One keep-alive HTTP request on an open connection -> the pod that answered."""
    sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return lab_probe.parse_answer(data)[0] or ""


def agent_pid(c, node: str) -> int:
    """The running agent of `node` in lab c."""
    pid = lifecycle.find_agent(c.cfg.name, json.loads(c.cfg.state_file.read_text())["token"], node)
    assert pid is not None, f"no agent process for {node}"
    return pid
