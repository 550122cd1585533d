"""The service proxy at scale: full sync time and agent memory at 1k, 10k and 30k Services
(3 endpoints each), one EndpointSlice change to the kernel at 30k, and ClusterIP connect
latency against the same backend dialled directly at 10 and at 30k Services.

It brings up a lab of its own (`h10b<pid>`, 2 nodes, kubeweft CNI + agent) and always removes
it. Services are created without selectors, with EndpointSlices written here (fake endpoint
addresses, never dialled), straight through the API with many requests in flight.

- full sync: after each scale step the table `ip kubeweft` of node1 is deleted and node1's
  agent restarted (by its pod's kubelet), so its first sync loads everything from nothing;
  its duration is the agent's own kubeproxy_sync_proxy_rules_duration_seconds (first sample)
  and, from outside, the time from the agent's start until the last Service is in the kernel
  (the agent's kubeproxy_sync_proxy_rules_last_timestamp_seconds, confirmed by one `nft get
  element`). The bench waits on the agent's /metrics (every 0.5 s), not on nft: an nft read of
  the table costs seconds of CPU at 30k and would slow the sync it measures.
  Agent memory: VmRSS (and the peak, VmHWM) of that agent process once synced. agent_log:
  the agent's own lines for that sync (read back, render, diff, apply in ms).
- restart with the table in place (at the last scale): node1's agent killed (-9) and started
  again without deleting its table, as after a crash: the first sync reads the table back over
  netlink and reconciles (its duration, memory and log lines as above).
- one change: an EndpointSlice's endpoint replaced; the time from the API write to the new
  endpoint being in the kernel map, seen by a netlink socket in node1's netns subscribed to the
  nftables multicast group (bench/nft_events.py: the kernel's NEWSETELEM notification of the
  commit, the address read from the backends map element's data). Neither `nft monitor` (it
  reads the whole ruleset, ~180k elements at 30k, before it subscribes: not within 120 s) nor
  polling with `nft get element` (re-reads every element after each agent transaction, 0.6-12 s
  per read at 30k, and measures itself) can time this. Also the agent's
  kubeproxy_network_programming_duration_seconds over those changes. The new endpoint is
  checked once with `nft get element` after the timed rounds.
- latency: TCP connect time (SYN to SYN-ACK, through the kernel) from a pod on node1 to a
  backend pod on node2, via its ClusterIP and directly, interleaved; median and p90.
- reference (same run): kube-proxy-style per-Service and per-endpoint chains for the same
  Services, loaded with `nft -f` into a scratch netns (h10b<pid>-ref) at 1k and 10k.

    .venv/bin/python bench/services.py [--scales 1000,10000,30000] [--timeout 600]

Prints one JSON document on stdout; a small text chart of the latencies on stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeweft.lab import install, lifecycle, topology
from kubeweft.lab import netns as lab_netns
from kubeweft.lab.config import LabConfig
from kubeweft.proxy.metrics import parse_samples

from bench.nft_events import ElementMonitor

# One lab per run (pid in the name): two runs at once (a developer's and `make bench`) must not
# take each other's lab down.
LAB = f"h10b{os.getpid()}"
NS = "h10-bench"
REF_NETNS = f"{LAB}-ref"
KUBEWEFT = str(ROOT / ".venv" / "bin" / "kubeweft")
NODE = "node1"
TARGETS = {"full_sync_30k_s": 2.0, "change_ms": 50.0, "agent_rss_mb": 400.0, "clusterip_vs_direct": 1.10}
IN_FLIGHT = 16


def say(msg: str) -> None:
    print(f"[bench/services] {msg}", file=sys.stderr, flush=True)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the benchmark ran out of time")
        return left


def pctl(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def endpoint_ip(i: int, k: int) -> str:
    """A fake endpoint address for Service i, endpoint k (10.250.0.0/16, never dialled)."""
    n = i * 3 + k
    return f"10.{250 + n // 62500}.{(n // 250) % 250}.{n % 250 + 1}"


def service_body(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def slice_body(i: int, ips: list[str], rv: str | None = None) -> dict:
    meta = {"name": f"s{i}-1", "namespace": NS,
            "labels": {"kubernetes.io/service-name": f"s{i}",
                       "endpointslice.kubernetes.io/managed-by": "h10-bench"}}
    if rv:
        meta["resourceVersion"] = rv
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": meta, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": "node2"} for ip in ips]}


# --- the API, fast ----------------------------------------------------------------------------
class Api:
    """aiohttp against the lab API server (the kubernetes client manages ~40 writes/s here;
    this does ~700)."""

    def __init__(self, cfg: LabConfig) -> None:
        import yaml
        kc = yaml.safe_load(cfg.kubeconfig.read_text())
        self.server = kc["clusters"][0]["cluster"]["server"]
        self.token = kc["users"][0]["user"]["token"]
        self.ctx = ssl.create_default_context(cafile=str(cfg.pki_dir / "ca.crt"))

    async def _run(self, jobs: list[tuple[str, str, dict | None]]) -> list[dict]:
        import aiohttp
        hdr = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        out: list[dict] = [{}] * len(jobs)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(headers=hdr, timeout=timeout,
                                         connector=aiohttp.TCPConnector(ssl=self.ctx, limit=IN_FLIGHT)) as s:
            sem = asyncio.Semaphore(IN_FLIGHT)

            async def one(n: int, method: str, path: str, body: dict | None) -> None:
                async with sem, s.request(method, self.server + path, json=body) as r:
                    text = await r.text()
                    if r.status >= 300 and not (method == "POST" and r.status == 409):
                        raise RuntimeError(f"{method} {path}: {r.status} {text[:300]}")
                    out[n] = json.loads(text) if text else {}
            await asyncio.gather(*(one(n, *job) for n, job in enumerate(jobs)))
        return out

    def run(self, jobs: list[tuple[str, str, dict | None]]) -> list[dict]:
        return asyncio.run(self._run(jobs))

    def get(self, path: str) -> dict:
        return self.run([("GET", path, None)])[0]


SVC_PATH = f"/api/v1/namespaces/{NS}/services"
SLICE_PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"


def create_services(api: Api, start: int, stop: int) -> dict[int, str]:
    """Services s<start>..s<stop-1> and their slices -> {i: clusterIP}."""
    ips: dict[int, str] = {}
    step = 2000
    for lo in range(start, stop, step):
        hi = min(stop, lo + step)
        svcs = api.run([("POST", SVC_PATH, service_body(i)) for i in range(lo, hi)])
        api.run([("POST", SLICE_PATH, slice_body(i, [endpoint_ip(i, k) for k in range(3)])) for i in range(lo, hi)])
        for i, svc in zip(range(lo, hi), svcs):
            ip = svc.get("spec", {}).get("clusterIP")
            if not ip:
                raise RuntimeError(f"Service s{i} has no clusterIP: {str(svc)[:200]}")
            ips[i] = ip
    return ips


# --- the kernel, from inside node1 --------------------------------------------------------------
class NodeNft:
    """A libnftables context made on a thread inside node1's netns (it stays bound there)."""

    def __init__(self, netns_name: str) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.pool.submit(self._init, netns_name).result(timeout=30)

    def _init(self, netns_name: str) -> None:
        import nftables
        lab_netns.setns(netns_name)          # this pool's only thread lives in the node's netns
        self.nft = nftables.Nftables()

    def cmd(self, text: str) -> tuple[int, str, str]:
        return self.pool.submit(self.nft.cmd, text).result(timeout=60)

    def close(self) -> None:
        self.pool.shutdown()


def has_service(nft: NodeNft, ip: str) -> bool:
    rc, out, _ = nft.cmd(f"get element ip kubeweft service-ips {{ {ip} . tcp . 80 }}")
    return rc == 0 and ip in out


# The endpoints map's name and key have had several shapes (one map; one per endpoint count;
# one per protocol and count): the first candidate that holds a known Service's endpoint wins.
BACKEND_FORMS = [("backends-tcp-3", "{vip} . 80 . {k}"), ("backends-3", "{vip} . tcp . 80 . {k}"),
                 ("backends", "{vip} . tcp . 80 . {k}")]


def backend_form(nft: NodeNft, vip: str, endpoint: str) -> tuple[str, str]:
    for form in BACKEND_FORMS:
        if backend_has(nft, vip, endpoint, form):
            return form
    _, out, _ = nft.cmd("list maps table ip kubeweft")
    names = re.findall(r"map (\S+) \{", out)
    raise RuntimeError(f"cannot find {vip}'s endpoint {endpoint} in any of {BACKEND_FORMS}; maps: {names}")


def backend_has(nft: NodeNft, vip: str, endpoint: str, form: tuple[str, str]) -> bool:
    name, key = form
    keys = ", ".join(key.format(vip=vip, k=k) for k in range(3))
    rc, out, _ = nft.cmd(f"get element ip kubeweft {name} {{ {keys} }}")
    return rc == 0 and endpoint in out


class SliceWatch:
    """A watch on the bench's EndpointSlices from the host (127.0.0.1), as the agent has one: the
    arrival time of each endpoint address, to split API write -> kernel into the API server's
    delivery and the agent's part."""

    def __init__(self, api: Api, rv: str) -> None:
        import http.client
        host, _, port = api.server.removeprefix("https://").partition(":")
        self.conn = http.client.HTTPSConnection(host, int(port), context=api.ctx, timeout=300)
        self.conn.request("GET", f"{SLICE_PATH}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true",
                          headers={"Authorization": f"Bearer {api.token}"})
        self.resp = self.conn.getresponse()
        self.seen: dict[str, float] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.resp:
                t = time.monotonic()
                for ip in re.findall(rb'"(10\.253\.[0-9.]+)"', line):
                    self.seen.setdefault(ip.decode(), t)
        except Exception:  # noqa: BLE001 - closed under us (IncompleteRead, OSError): done
            return

    def close(self) -> None:
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


# --- the agent -------------------------------------------------------------------------------
def http_get(netns_name: str, host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    def run() -> tuple[int, str]:
        s = socket.socket()
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        except OSError as e:
            return 0, str(e)
        finally:
            s.close()
        head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
        parts = head.split()
        return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body
    return lab_netns.call_in(netns_name, run, timeout=timeout + 5)


def metrics(cfg: LabConfig) -> dict[str, float]:
    """The agent's /metrics (a busy agent answers slowly: generous timeout, a few tries)."""
    for _ in range(3):
        status, body = http_get(cfg.node_netns(NODE), "127.0.0.1", 10249, "/metrics", timeout=20)
        if status == 200:
            break
    return parse_samples(body) if status == 200 else {}


def agent_pid(cfg: LabConfig, token: str) -> int | None:
    return lifecycle.find_agent(cfg.name, token, NODE)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(pid: int, seconds: float = 2.0) -> float:
    """CPU the agent burns with nothing changing (a busy agent delays every event)."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return round((cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 100, 1)


def rss_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


SYNC_SUM = 'kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv4"}'
SYNC_COUNT = 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}'
NPD_SUM = "kubeproxy_network_programming_duration_seconds_sum"
NPD_COUNT = "kubeproxy_network_programming_duration_seconds_count"
LAST_SYNC = 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}'


def full_sync(cfg: LabConfig, token: str, nft: NodeNft, last_ip: str, deadline: Deadline,
              keep_table: bool = False) -> dict:
    """Delete node1's table (keep_table: leave it, as a crashed agent does), restart its agent;
    time the first, complete sync."""
    # SIGKILL; the kubelet starts the agent's container again once released, with a new log
    old = lifecycle.hold_agent(cfg.name, NODE)
    if not keep_table:
        nft.cmd("delete table ip kubeweft")
    pid = lifecycle.release_agent(cfg.name, NODE, old, timeout=min(120.0, deadline.left()))
    t0, t0_wall = time.monotonic(), time.time()           # the new agent's process runs
    log = install.agent_log(cfg, NODE)
    log_from = 0

    def alive() -> None:
        deadline.left()
        if not lifecycle._alive(pid):
            raise RuntimeError(f"the agent exited; see {install.agent_log(cfg, NODE)}")
    # wait on the agent's own metrics, not on nft: every nft read of the table costs seconds of
    # CPU at 30k, taken from the agent being measured
    m: dict[str, float] = {}
    while not m.get(SYNC_COUNT):
        alive()
        time.sleep(0.5)
        m = metrics(cfg)
    first_try = True
    while not has_service(nft, last_ip):          # one read confirms; rarely more (every 2 s)
        first_try = False
        alive()
        time.sleep(2.0)
    if first_try and m.get(LAST_SYNC):
        wall = m[LAST_SYNC] - t0_wall                # the agent's clock: its sync's commit
    else:
        wall = time.monotonic() - t0                 # a later sync loaded it: seen by the read
    m = metrics(cfg) or m
    count, total = m[SYNC_COUNT], m[SYNC_SUM]
    # the first sample is the full sync when it is the only one; else the mean is an upper bound
    time.sleep(1.0)                               # let the agent settle before reading memory
    out = {"agent_first_sync_s": round(total / count, 3), "syncs_counted": int(count),
           "start_to_last_service_in_kernel_s": round(wall, 2), **{k + "_MB": v for k, v in rss_mb(pid).items()},
           "agent_idle_cpu_percent": idle_cpu_percent(pid)}
    for key in ("kubeproxy_sync_proxy_rules_nftables_elements", "kubeproxy_sync_proxy_rules_nftables_objects"):
        hits = {k: v for k, v in m.items() if k.startswith(key)}
        if hits:
            out[key] = hits
    # the agent's own account of its first sync: read back, render, diff, apply
    with open(log, errors="replace") as f:
        f.seek(log_from)
        lines = [ln.strip() for ln in f if "synced full" in ln or "read back" in ln]
    out["agent_log"] = [ln.split("kubeweft.proxy.service_proxy", 1)[-1].strip(": ") for ln in lines[:2]]
    return out


def one_change(cfg: LabConfig, api: Api, nft: NodeNft, ips: dict[int, str], rounds: int,
               deadline: Deadline, pid: int | None = None) -> dict:
    """Replace one endpoint of a Service's slice; time API write -> kernel with a netlink monitor
    of the backends maps' new elements in node1's netns."""
    before = metrics(cfg)
    # from the resourceVersion of one slice, not a list: a list of 30k slices is 15 MB of JSON
    watch = SliceWatch(api, api.get(f"{SLICE_PATH}/s0-1")["metadata"]["resourceVersion"])
    try:
        # subscribed when it returns (no ruleset read): what the agent commits from now on is seen
        monitor = ElementMonitor(cfg.node_netns(NODE), "kubeweft", "backends-", timeout=min(30.0, deadline.left()))
    except BaseException:
        watch.close()
        raise
    cpu0, wall0 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
    samples, delivery, agent_part = [], [], []
    last: tuple[str, str] = ("", "")
    try:
        for r in range(rounds):
            i = (r * 7919) % len(ips)
            vip = ips[i]
            new = f"10.253.{r // 250}.{r % 250 + 1}"
            cur = api.get(f"{SLICE_PATH}/s{i}-1")
            body = slice_body(i, [new] + [endpoint_ip(i, k) for k in (1, 2)], cur["metadata"]["resourceVersion"])
            t0 = time.monotonic()
            api.run([("PUT", f"{SLICE_PATH}/s{i}-1", body)])
            seen = monitor.wait(new, min(10.0, deadline.left()))
            if seen is None:
                raise RuntimeError(f"endpoint {new} of {vip} not in the kernel after 10 s (netlink monitor; "
                                   f"error {monitor.error!r}, {monitor.overflows} overflows)")
            samples.append((seen - t0) * 1000)
            if new in watch.seen:
                delivery.append((watch.seen[new] - t0) * 1000)
                agent_part.append((seen - watch.seen[new]) * 1000)
            last = (vip, new)
            time.sleep(0.2)
    finally:
        monitor.close()
        watch.close()
    cpu_pct = round((cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0) * 100, 1) if pid else None
    after = metrics(cfg)
    if last[0]:
        backend_form(nft, *last)                  # one read after the timing: it is in the map
    summary = lambda v: {"n": len(v), "p50": round(pctl(v, 0.5), 1), "p90": round(pctl(v, 0.9), 1),
                         "max": round(max(v), 1)}
    out = {"api_write_to_kernel_ms": summary(samples),
           "kernel_seen_by": "netlink NFNLGRP_NFTABLES NEWSETELEM, backends-* maps (node1's netns)",
           "monitor_ready_ms": round(monitor.ready_s * 1000, 2),
           "monitor_overflows": monitor.overflows,
           "agent_cpu_percent_meanwhile": cpu_pct}
    if delivery:
        out["api_write_to_watch_event_ms"] = summary(delivery)
        # the bench's own watch event -> kernel: about the agent's part (its watch is a peer)
        out["watch_event_to_kernel_ms"] = summary(agent_part)
    dn = after.get(NPD_COUNT, 0) - before.get(NPD_COUNT, 0)
    if dn > 0:
        out["agent_network_programming_ms_mean"] = round((after[NPD_SUM] - before.get(NPD_SUM, 0)) / dn * 1000, 1)
        out["agent_network_programming_samples"] = int(dn)
    ds = after.get(SYNC_COUNT, 0) - before.get(SYNC_COUNT, 0)
    if ds > 0:
        out["agent_sync_ms_mean"] = round((after[SYNC_SUM] - before.get(SYNC_SUM, 0)) / ds * 1000, 1)
    return out


# --- latency ---------------------------------------------------------------------------------
def connect_times(netns_name: str, targets: dict[str, tuple[str, int]], n: int) -> dict[str, dict]:
    """TCP connect() time per target, interleaved, from inside a pod's netns."""
    def run() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {k: [] for k in targets}
        for _ in range(n):
            for name, addr in targets.items():
                s = socket.socket()
                s.settimeout(2)
                t0 = time.perf_counter()
                try:
                    s.connect(addr)
                    out[name].append((time.perf_counter() - t0) * 1e6)
                except OSError:
                    pass
                finally:
                    s.close()
        return out
    raw = lab_netns.call_in(netns_name, run, timeout=300)
    return {k: {"n": len(v), "p50_us": round(pctl(v, 0.5), 1), "p90_us": round(pctl(v, 0.9), 1),
                "mean_us": round(statistics.fmean(v), 1)} for k, v in raw.items() if v}


def latency_chart(rows: list[tuple[str, float]]) -> str:
    top = max(v for _, v in rows) or 1
    width = 48
    return "\n".join(f"  {label:<24} {'#' * max(1, round(v / top * width)):<{width}} {v:7.1f} us"
                     for label, v in rows)


# --- the reference: kube-proxy-style chains ---------------------------------------------------
def render_kube_proxy_style(n: int) -> str:
    """kube-proxy nftables mode's shape: a vmap into one chain per Service port, which picks an
    endpoint chain (one per endpoint) with numgen; each endpoint chain masquerade-marks and DNATs."""
    lines = ["add table ip kpref", "add chain ip kpref services",
             "add map ip kpref service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }",
             "add rule ip kpref services ip daddr . meta l4proto . th dport vmap @service-ips"]
    for i in range(n):
        vip = f"172.{16 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"
        svc = f"svc-{i}"
        lines.append(f"add chain ip kpref {svc}")
        for k in range(3):
            ip = endpoint_ip(i, k)
            lines += [f"add chain ip kpref sep-{i}-{k}",
                      f"add rule ip kpref sep-{i}-{k} ip saddr {ip} meta mark set meta mark or 0x4000",
                      f"add rule ip kpref sep-{i}-{k} meta l4proto tcp dnat to {ip}:8080"]
        lines.append(f"add rule ip kpref {svc} numgen random mod 3 vmap "
                     f"{{ 0 : goto sep-{i}-0, 1 : goto sep-{i}-1, 2 : goto sep-{i}-2 }}")
        lines.append(f"add element ip kpref service-ips {{ {vip} . tcp . 80 : goto {svc} }}")
    return "\n".join(lines) + "\n"


def reference_load(n: int, deadline: Deadline) -> dict:
    subprocess.run(["ip", "netns", "add", REF_NETNS], check=True, capture_output=True, timeout=10)
    try:
        path = Path(f"/tmp/{REF_NETNS}-{os.getpid()}.nft")
        path.write_text(render_kube_proxy_style(n))
        t0 = time.monotonic()
        proc = lab_netns.run(REF_NETNS, ["nft", "-f", str(path)], capture_output=True, text=True,
                             timeout=max(1.0, min(120.0, deadline.left())), check=False)
        took = time.monotonic() - t0
        path.unlink()
        if proc.returncode != 0:
            return {"error": proc.stderr[:300]}
        return {"chains": n * 4, "load_s": round(took, 2)}
    finally:
        subprocess.run(["ip", "netns", "delete", REF_NETNS], capture_output=True, timeout=10, check=False)


# --- main ------------------------------------------------------------------------------------
def setup_pods(cfg: LabConfig, api: Api, deadline: Deadline) -> tuple[str, str, str]:
    """A backend on node2, a client on node1, a Service for the backend -> (client netns,
    backend IP, ClusterIP)."""
    from kubeweft.lab.probe import read_pods
    pod = lambda name, node, ports: {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "lab", "ports": ports}]}}
    api.run([("POST", f"/api/v1/namespaces/{NS}/pods", pod("backend", "node2", [{"containerPort": 8080}])),
             ("POST", f"/api/v1/namespaces/{NS}/pods", pod("client", NODE, [{"containerPort": 8080}]))])
    svc = api.run([("POST", SVC_PATH, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "backend"},
                                       "spec": {"selector": {"app": "backend"},
                                                "ports": [{"port": 80, "targetPort": 8080}]}})])[0]
    while True:
        deadline.left()
        local = read_pods(cfg)
        b = api.get(f"/api/v1/namespaces/{NS}/pods/backend").get("status", {}).get("podIP")
        if b and f"{NS}/client" in local and f"{NS}/backend" in local:
            break
        time.sleep(0.3)
    return local[f"{NS}/client"]["netns"], b, svc["spec"]["clusterIP"]


def wait_cluster_ip(netns_name: str, vip: str, deadline: Deadline) -> None:
    from kubeweft.lab.probe import CONNECTED, probe_once
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        while pool.submit(probe_once, netns_name, vip, 80, timeout=1.0).result()["outcome"] != CONNECTED:
            deadline.left()
            time.sleep(0.3)


def run(result: dict, scales: list[int], latency_n: int, change_rounds: int, ref_scales: list[int],
        deadline: Deadline) -> None:
    """Fill `result` step by step (what was measured stays there if a later step fails)."""
    cfg = LabConfig(name=LAB, nodes=2, cni="kubeweft")
    result.update({"lab": LAB, "endpoints_per_service": 3, "targets": TARGETS})
    say("lab up (2 nodes, kubeweft)")
    # each full sync restarts the agent: CrashLoopBackOff's delay from 1 s, not 10 s
    os.environ.setdefault("KUBEWEFT_LAB_BACKOFF_BASE", "1")
    lifecycle.up(cfg, timeout=min(120.0, deadline.left()))
    token = json.loads(cfg.state_file.read_text())["token"]
    api = Api(cfg)
    api.run([("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})])
    nft = NodeNft(cfg.node_netns(NODE))
    try:
        client_ns, backend_ip, vip = setup_pods(cfg, api, deadline)
        wait_cluster_ip(client_ns, vip, deadline)
        targets = {"clusterip": (vip, 80), "direct": (backend_ip, 8080)}
        ips = create_services(api, 0, 8)                         # ~10 Services in all
        say(f"latency at {len(ips) + 2} Services")
        result["latency_at_10"] = connect_times(client_ns, targets, latency_n)
        result["full_sync"] = {}
        made = len(ips)
        for n in scales:
            t0 = time.monotonic()
            ips.update(create_services(api, made, n))
            made = n
            say(f"{n} Services created in {time.monotonic() - t0:.1f} s; full sync of node1's agent")
            result["full_sync"][str(n)] = full_sync(cfg, token, nft, ips[n - 1], deadline)
            say(f"  {result['full_sync'][str(n)]}")
        say(f"restart of node1's agent with its table in place ({made} Services: read back, reconcile)")
        result["restart_with_table"] = full_sync(cfg, token, nft, ips[made - 1], deadline, keep_table=True)
        say(f"  {result['restart_with_table']}")
        say(f"one EndpointSlice change at {made} Services, {change_rounds} times")
        try:
            result["one_change"] = {"services": made, **one_change(cfg, api, nft, ips, change_rounds,
                                                                         deadline, agent_pid(cfg, token))}
        except RuntimeError as e:
            # keep the other figures if the change step fails (an endpoint never seen in 10 s)
            say(f"  change step failed: {e}")
            result["one_change"] = {"services": made, "error": str(e)}
        wait_cluster_ip(client_ns, vip, deadline)
        say(f"latency at {made} Services")
        result[f"latency_at_{made}"] = connect_times(client_ns, targets, latency_n)
    except BaseException:
        result["log_tails"] = {"apiserver": lifecycle.log_tail(cfg.log_dir / "apiserver.log", 15),
                               f"agent-{NODE}": lifecycle.log_tail(install.agent_log(cfg, NODE), 15)}
        raise
    finally:
        nft.close()
        say("lab down")
        lifecycle.down(LAB)
    result["reference_kube_proxy_style_chains"] = {}
    for n in ref_scales:
        say(f"reference: kube-proxy-style chains for {n} Services")
        result["reference_kube_proxy_style_chains"][str(n)] = reference_load(n, deadline)


def verdicts(result: dict) -> dict:
    out = {}
    sync = result.get("full_sync", {})
    if sync:
        top = max(sync, key=int)
        out[f"full_sync_{top}_s"] = sync[top]["agent_first_sync_s"]
        out["full_sync_ok"] = sync[top]["agent_first_sync_s"] < TARGETS["full_sync_30k_s"]
        out["agent_rss_mb"] = sync[top].get("VmRSS_MB")
        out["agent_rss_ok"] = (sync[top].get("VmHWM_MB") or 0) < TARGETS["agent_rss_mb"]
    restart = result.get("restart_with_table")
    if restart:
        out["restart_sync_s"] = restart["agent_first_sync_s"]
        out["restart_peak_mb"] = restart.get("VmHWM_MB")
        out["restart_rss_ok"] = (restart.get("VmHWM_MB") or 0) < TARGETS["agent_rss_mb"]
    change = result.get("one_change", {})
    if change:
        # the target counts from the change reaching the agent: its network programming metric
        # (event received -> transaction committed); API write -> kernel is reported beside it
        out["change_agent_ms"] = change.get("agent_network_programming_ms_mean")
        out["change_api_to_kernel_p50_ms"] = change["api_write_to_kernel_ms"]["p50"]
        out["change_ok"] = (change.get("agent_network_programming_ms_mean") or 1e9) < TARGETS["change_ms"]
    big = [k for k in result if k.startswith("latency_at_") and k != "latency_at_10"]
    if big:
        lat = result[big[0]]
        ratio = lat["clusterip"]["p50_us"] / lat["direct"]["p50_us"]
        out["clusterip_over_direct_p50"] = round(ratio, 3)
        out["latency_ok"] = ratio <= TARGETS["clusterip_vs_direct"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1000,10000,30000")
    ap.add_argument("--reference-scales", default="1000,10000")
    ap.add_argument("--latency-samples", type=int, default=300)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=580.0)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/services.py needs root (network namespaces)", file=sys.stderr)
        return 2
    if lifecycle.is_up(LabConfig(name=LAB)) or topology.list_netns(REF_NETNS):
        say(f"lab {LAB} exists already (a run with this pid?): not touching it")
        return 1
    deadline = Deadline(args.timeout)
    t0 = time.monotonic()
    result: dict = {}
    rc = 0
    try:
        run(result, [int(x) for x in args.scales.split(",") if x],
                     args.latency_samples, args.changes,
                     [int(x) for x in args.reference_scales.split(",") if x], deadline)
    except Exception as e:  # noqa: BLE001 - report what was measured, and why it stopped
        result["error"] = f"{type(e).__name__}: {e}"
        rc = 1
    finally:
        if lifecycle.is_up(LabConfig(name=LAB)):
            lifecycle.down(LAB)
    try:
        result["verdicts"] = verdicts(result)
    except (KeyError, ValueError, ZeroDivisionError) as e:
        result["verdicts"] = {"error": f"incomplete: {e}"}
    result["seconds"] = round(time.monotonic() - t0, 1)
    rows = [(f"{k.removeprefix('latency_at_')} svc {path}", v[path]["p50_us"])
            for k, v in result.items() if k.startswith("latency_at_") for path in ("direct", "clusterip") if path in v]
    if rows:
        print("connect latency, p50 (pod on node1 -> backend on node2):\n" + latency_chart(rows), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
