"""Helpers of the overlay tests (test_overlay_lab.py, test_pmtu.py) and bench/overlay.py:
labs with a chosen backend, pods pinned to nodes, servers in lab namespaces, kernel snapshots.

Everything here is bounded in time and undoes what it made (context managers with finally).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from kubeweft.lab import netns
from kubeweft.lab.config import LabConfig

ROOT = Path(__file__).resolve().parents[2]
KUBEWEFT = str(ROOT / ".venv" / "bin" / "kubeweft")
SHIM = ROOT / ".venv" / "bin" / "kubeweft-cni"


# --- labs -------------------------------------------------------------------------------------

def lab_cli(name: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([KUBEWEFT, "lab", "--name", name, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubeweft lab {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextlib.contextmanager
def backend_lab(name: str, nodes: int = 2, backend: str = "vxlan", timeout: float = 120,
                on_name: Callable[[str], None] | None = None, ip_family: str = "ipv4") -> Iterator[LabConfig]:
    """`kubeweft lab up --cni kubeweft --backend B --ip-family F` through the real CLI; always
    `down` after. `on_name` is told the name first (the test session's left-over check registers it)."""
    if on_name:
        on_name(name)
    try:
        proc = subprocess.run([KUBEWEFT, "lab", "--name", name, "up", "--nodes", str(nodes), "--cni",
                               "kubeweft", "--backend", backend, "--ip-family", ip_family, "--timeout", str(timeout)],
                              capture_output=True, text=True, timeout=timeout + 60, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"lab up {name} ({backend}) failed:\n{proc.stdout}\n{proc.stderr}")
        yield LabConfig(**json.loads(LabConfig(name=name).state_file.read_text())["config"])
    finally:
        subprocess.run([KUBEWEFT, "lab", "--name", name, "down"], capture_output=True, text=True,
                       timeout=90, check=False)


def api(cfg: LabConfig):
    from kubernetes import client, config
    return client.CoreV1Api(config.new_client_from_config(config_file=str(cfg.kubeconfig)))


def lab_state(cfg: LabConfig) -> dict:
    return json.loads(cfg.state_file.read_text())


# --- pods ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    node: str
    ip: str
    netns: str
    ips: tuple[str, ...] = ()      # status.podIPs, the primary family first

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def ip_of(self, version: int) -> str:
        """The pod's address of IP `version`."""
        return next(i for i in self.ips if (":" in i) == (version == 6))


def pod_doc(ns: str, name: str, node: str, port: int = 8080) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "lab", "ports": [
                {"containerPort": port}, {"containerPort": port, "protocol": "UDP"}]}]}}


def create_pods(cfg: LabConfig, ns: str, placement: dict[str, str], timeout: float = 90,
                create_namespace: bool = True) -> dict[str, Pod]:
    """Pods name -> node in namespace `ns` (made first unless told not to); returns them Ready,
    with their IP and netns (from the kubelets' pods.json)."""
    from kubernetes.client import ApiException
    from kubeweft.lab.probe import read_pods

    core = api(cfg)
    try:
        if create_namespace:
            try:
                core.create_namespace({"metadata": {"name": ns}}, _request_timeout=10)
            except ApiException as e:
                if e.status != 409:
                    raise
        for name, node in placement.items():
            core.create_namespaced_pod(ns, pod_doc(ns, name, node), _request_timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            items = core.list_namespaced_pod(ns, _request_timeout=10).items
            ready = {p.metadata.name: p for p in items if p.metadata.name in placement and any(
                c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))}
            local = read_pods(cfg)
            if len(ready) == len(placement) and all(local.get(f"{ns}/{n}", {}).get("netns") for n in ready):
                return {n: Pod(n, ns, p.spec.node_name, p.status.pod_ip, local[f"{ns}/{n}"]["netns"],
                               tuple(i.ip for i in p.status.pod_ips or []) or (p.status.pod_ip,))
                        for n, p in ready.items()}
            if time.monotonic() > deadline:
                raise AssertionError(f"pods not Ready in {timeout}s: {sorted(set(placement) - set(ready))}")
            time.sleep(0.3)
    finally:
        core.api_client.close()


def delete_namespace(cfg: LabConfig, ns: str) -> None:
    """Delete the namespace's pods (at once) and the namespace; best effort, bounded."""
    from kubernetes.client import ApiException

    core = api(cfg)
    try:
        for p in core.list_namespaced_pod(ns, _request_timeout=10).items:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(p.metadata.name, ns, grace_period_seconds=0, _request_timeout=10)
        with contextlib.suppress(ApiException):
            core.delete_namespace(ns, _request_timeout=10)
    except Exception as e:  # noqa: BLE001 - cleanup must not mask the test's own failure
        print(f"cleanup of namespace {ns}: {e}", file=sys.stderr)
    finally:
        core.api_client.close()


def add_pod(tmp: Path, node_ns: str, pod_ns: str, node: str) -> list[str]:
    """A CNI ADD through the executable runtimes run, into pod_ns, against the agent serving
    tmp/NODE/agent.sock; the pod's addresses (one per IP family, the primary first)."""
    conf = {"cniVersion": "1.0.0", "name": "kubeweft", "type": "kubeweft", "socket": str(tmp / node / "agent.sock")}
    proc = netns.run(node_ns, [str(SHIM)], input=json.dumps(conf), capture_output=True, text=True, timeout=60,
                     env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"c-{pod_ns}", "CNI_IFNAME": "eth0",
                          "CNI_NETNS": str(netns.path(pod_ns)), "CNI_PATH": str(SHIM.parent),
                          "PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [ip["address"].split("/")[0] for ip in json.loads(proc.stdout)["ips"]]


def node_annotations(server, node: str) -> dict:
    """The Node's annotations, read with kubectl from the API server `server` (apiserver_proc)."""
    return json.loads(server.kubectl("get", "node", node, "-o", "json").stdout)["metadata"].get("annotations") or {}


# --- commands and servers in lab namespaces ---------------------------------------------------

def run_in(ns: str, argv: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    return netns.run(ns, argv, capture_output=True, text=True, timeout=timeout, check=False)


def ping(ns: str, dst: str, size: int = 56, df: bool = True, count: int = 1,
         wait: float = 1.0) -> subprocess.CompletedProcess:
    argv = ["ping", "-n", "-c", str(count), "-W", str(wait), "-s", str(size)]
    if df:
        argv += ["-M", "do"]
    return run_in(ns, argv + [dst], timeout=count * (wait + 1) + 5)


@contextlib.contextmanager
def workload_in(ns: str, port: int, who: str = "server/x") -> Iterator[subprocess.Popen]:
    """The lab's workload (TCP and UDP whoami on `port`) inside netns `ns`, ended by PID after."""
    proc = subprocess.Popen([sys.executable, "-m", "kubeweft.lab.workload", "--pod", who, "--ports", f"{port}/TCP"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                            preexec_fn=netns.preexec(ns))  # noqa: PLW1509
    try:
        ready = concurrent.futures.ThreadPoolExecutor(1).submit(proc.stdout.readline)
        assert "ready" in ready.result(timeout=10), f"workload in {ns} did not start"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=5)


def probe(src_ns: str, host: str, port: int, udp: bool = False, timeout: float = 2.0) -> dict:
    """kubeweft.lab.probe.probe_once from a worker thread (it enters the netns on that thread)."""
    from kubeweft.lab.probe import probe_once
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(probe_once, src_ns, host, port, udp=udp, timeout=timeout).result(timeout + 5)


# --- the overlay's kernel state -----------------------------------------------------------------

def ip_json(ns: str, *args: str, tool: str = "ip") -> list:
    """`ip -j ARGS` (or another iproute2 tool's) in netns `ns`, parsed."""
    out = run_in(ns, [tool, "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


# the VXLAN device of each underlay family
VXLAN_DEVICES = {4: "kw.1", 6: "kw-v6.1"}


def kernel_overlay(ns: str, version: int = 4) -> dict:
    """kubeweft's routes (protocol 175) of IP `version`, the permanent neighbours and FDB entries
    on that family's VXLAN device, and its ifindex: what an agent restart must leave exactly as
    it was."""
    dev, fam = VXLAN_DEVICES[version], f"-{version}"
    routes = sorted(json.dumps(r, sort_keys=True) for r in ip_json(ns, fam, "route", "show", "proto", "175"))
    neigh = sorted(json.dumps({k: n.get(k) for k in ("dst", "lladdr", "state")}, sort_keys=True)
                   for n in ip_json(ns, fam, "neigh", "show", "dev", dev, "nud", "permanent"))
    fdb = sorted(json.dumps({k: f.get(k) for k in ("mac", "dst", "state")}, sort_keys=True)
                 for f in ip_json(ns, "fdb", "show", "dev", dev, tool="bridge") if f.get("dst"))
    link = ip_json(ns, "link", "show", dev)
    return {"routes": routes, "neighbours": neigh, "fdb": fdb,
            "ifindex": link[0]["ifindex"] if link else None}


def route_dsts(ns: str, version: int = 4) -> set[str]:
    """Destinations of kubeweft's routes of IP `version` in netns `ns`."""
    return {r["dst"] for r in ip_json(ns, f"-{version}", "route", "show", "proto", "175")}


def first_time(pred: Callable[[], bool], timeout: float, interval: float = 0.02) -> float | None:
    """time.monotonic() of the first poll where pred() holds, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(interval)
    return None


@dataclass
class ProbeLoop:
    """Probes src -> host:port (TCP) every `interval` seconds on a thread until stopped;
    counts every attempt and keeps the failures."""
    src_ns: str
    host: str
    port: int
    interval: float = 0.05
    udp: bool = False
    attempts: int = 0
    failures: list[dict] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        from kubeweft.lab.probe import probe_once
        while not self._stop.is_set():
            r = probe_once(self.src_ns, self.host, self.port, udp=self.udp, timeout=1.0)
            self.attempts += 1
            if r["outcome"] != "connected":
                self.failures.append(dict(r, at=time.monotonic()))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="probe-loop", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)


def kill9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
