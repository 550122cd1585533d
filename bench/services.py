"""The service proxy at scale, from 1k to 100k Services (3 endpoints each): full sync time and
agent memory at each scale, a restart with the table in place and one EndpointSlice change to
the kernel at the largest, first-packet latency (TCP connect through the ClusterIP against the
same backend dialled directly) at each scale, and a kube-proxy-style reference loaded and probed
at each scale as far as it loads. The figures go to bench/results/services.json (with the
targets and whether each was met, and the load average at each measurement) and are drawn in
bench/results/services.png; the same JSON is printed on stdout.

It brings up a lab of its own (`h10b<pid>`, 2 nodes, kubeweft CNI + agent) and always removes
it, also on an error, --timeout, SIGTERM or Ctrl-C. Services are created without selectors,
with EndpointSlices written here (fake endpoint addresses, never dialled), straight through the
API with many requests in flight; the creation rate and the API server's RSS are reported at
each scale.

- full sync: after each scale step the table `ip kubeweft` of node1 is deleted and node1's
  agent restarted (by its pod's kubelet), so its first sync loads everything from nothing;
  its duration is the agent's own kubeproxy_sync_proxy_rules_duration_seconds (first sample)
  and, from outside, the time from the agent's start until the last Service is in the kernel
  (the agent's kubeproxy_sync_proxy_rules_last_timestamp_seconds, confirmed by one `nft get
  element`: this one includes the informers' lists). The bench waits on the agent's /metrics
  (every 0.5 s), not on nft: an nft read of the table costs seconds of CPU at 30k and would
  slow the sync it measures. Agent memory: VmRSS (and the peak, VmHWM) of that agent process
  once synced. agent_log: the agent's own lines for that sync (read back, render, diff, apply).
- restart with the table in place (at the last scale): node1's agent killed (-9) and started
  again without deleting its table, as after a crash: the first sync reads the table back over
  netlink and reconciles (its duration, memory and log lines as above).
- one change: an EndpointSlice's endpoint replaced; the time from the API write to the new
  endpoint being in the kernel map, seen by a netlink socket in node1's netns subscribed to the
  nftables multicast group (bench/nft_events.py: the kernel's NEWSETELEM notification of the
  commit, the address read from the backends map element's data). Neither `nft monitor` (it
  reads the whole ruleset before it subscribes) nor polling with `nft get element` (re-reads
  every element after each agent transaction, and measures itself) can time this. From the
  watch event: the agent's kubeproxy_network_programming_duration_seconds (event received ->
  transaction committed), and the same seen from a peer watch the bench holds on the slices
  (its event -> the kernel's notification). The new endpoint is checked once with `nft get
  element` after the timed rounds.
- first-packet latency: TCP connect time (SYN to SYN-ACK, through the kernel) from a pod on
  node1 to a backend pod on node2, via its ClusterIP and directly, interleaved; median and p90.
- reference (same run): kube-proxy nftables mode's shape (a vmap into one chain per Service,
  one chain per endpoint) for the same number of Services, loaded with `nft -f` into a scratch
  netns (h10b<pid>-ref) with a nat output hook; where it loads, connect time from that netns
  to its last Service's address (DNAT to a listener on the netns's own address) against the
  listener dialled directly. Each load is bounded (--reference-timeout): a scale that does not
  load in time, or fails, is where the reference stops, and the JSON says why.

- dual-stack (--ip-family both): one lab per family in turn, the same steps up to the full sync:
  an IPv4 lab with IPv4-only Services, then a dual-stack lab (IPv4 primary) with every Service
  RequireDualStack and an EndpointSlice per address type (3 endpoints each, fake fd00:250::/64
  addresses in the IPv6 one). At each scale: the full sync of node1's agent (both tables deleted;
  the agent runs one proxier per family on its own thread, so its sync time is the slower
  family's and the wall time runs to the last family's commit), its memory, and dual / IPv4-only
  of each (target: within FAMILY_TARGET_RATIO). Written to bench/results/services-dualstack.json
  and .png (--ip-family dual: the dual lab alone).

    .venv/bin/python bench/services.py [--scales 1000,3000,10000,30000,100000] [--timeout 2400]
    .venv/bin/python bench/services.py --ip-family both --scales 30000

"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
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
# judged at TARGET_SCALE Services (None in the verdicts when the run stopped short of it)
TARGET_SCALE = 100_000
TARGETS = {"full_sync_s": 3.0, "agent_rss_mb": 600.0, "restart_with_table_s": 5.0,
           "change_watch_event_to_kernel_ms": 5.0, "clusterip_vs_direct": 1.10}
IN_FLIGHT = 16
RESULTS = ROOT / "bench" / "results"
# the reference's scratch netns: its own address (TEST-NET-1, on a veth of its own) holds the
# listener every probed Service's endpoints DNAT to; the Service addresses route to that link
REF_ADDR = "192.0.2.1"
REF_VIP_NET = "172.16.0.0/12"


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


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: the machine is shared, every figure carries them."""
    return [round(x, 2) for x in os.getloadavg()]


def pctl(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def endpoint_ip(i: int, k: int) -> str:
    """A fake endpoint address for Service i, endpoint k (10.250.0.0/16, never dialled)."""
    n = i * 3 + k
    return f"10.{250 + n // 62500}.{(n // 250) % 250}.{n % 250 + 1}"


def endpoint_ip6(i: int, k: int) -> str:
    """Service i's fake IPv6 endpoint k (fd00:250::/64, never dialled)."""
    n = i * 3 + k + 1
    return f"fd00:250::{n >> 16:x}:{n & 0xFFFF:x}"      # two groups: 100k Services need 19 bits


def service_body(i: int, dual: bool = False) -> dict:
    spec: dict = {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    if dual:
        spec["ipFamilyPolicy"] = "RequireDualStack"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": NS}, "spec": spec}


def slice_body(i: int, ips: list[str], rv: str | None = None, version: int = 4) -> dict:
    meta = {"name": f"s{i}-1" if version == 4 else f"s{i}-6", "namespace": NS,
            "labels": {"kubernetes.io/service-name": f"s{i}",
                       "endpointslice.kubernetes.io/managed-by": "h10-bench"}}
    if rv:
        meta["resourceVersion"] = rv
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": f"IPv{version}",
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


def create_services(api: Api, start: int, stop: int, deadline: Deadline | None = None) -> dict[int, str]:
    """Services s<start>..s<stop-1> and their slices -> {i: clusterIP}."""
    return {i: ips[4] for i, ips in create_services_in(api, start, stop, (4,), deadline).items()}


def create_services_in(api: Api, start: int, stop: int, versions: tuple[int, ...],
                       deadline: Deadline | None = None) -> dict[int, dict[int, str]]:
    """Services s<start>..s<stop-1> in the IP families `versions` (both: RequireDualStack), with
    one EndpointSlice of 3 endpoints per family -> {i: {version: clusterIP}}."""
    ips: dict[int, dict[int, str]] = {}
    step = 2000
    for lo in range(start, stop, step):
        if deadline is not None:
            deadline.left()
        hi = min(stop, lo + step)
        svcs = api.run([("POST", SVC_PATH, service_body(i, dual=len(versions) > 1)) for i in range(lo, hi)])
        for v in versions:
            fake = endpoint_ip if v == 4 else endpoint_ip6
            api.run([("POST", SLICE_PATH, slice_body(i, [fake(i, k) for k in range(3)], version=v))
                     for i in range(lo, hi)])
        for i, svc in zip(range(lo, hi), svcs):
            spec = svc.get("spec", {})
            got = {6 if ":" in ip else 4: ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip}
            if set(got) != set(versions):
                raise RuntimeError(f"Service s{i} has clusterIPs {got}, not one per family {versions}: {str(svc)[:200]}")
            ips[i] = got
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
    family = "ip6" if ":" in ip else "ip"
    rc, out, _ = nft.cmd(f"get element {family} kubeweft service-ips {{ {ip} . tcp . 80 }}")
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


LABELS = {4: "IPv4", 6: "IPv6"}
SYNC_SUMS = {v: f'kubeproxy_sync_proxy_rules_duration_seconds_sum{{ip_family="{lb}"}}' for v, lb in LABELS.items()}
SYNC_COUNTS = {v: f'kubeproxy_sync_proxy_rules_duration_seconds_count{{ip_family="{lb}"}}' for v, lb in LABELS.items()}
LAST_SYNCS = {v: f'kubeproxy_sync_proxy_rules_last_timestamp_seconds{{ip_family="{lb}"}}' for v, lb in LABELS.items()}
SYNC_SUM, SYNC_COUNT, LAST_SYNC = SYNC_SUMS[4], SYNC_COUNTS[4], LAST_SYNCS[4]
NPD_SUM = "kubeproxy_network_programming_duration_seconds_sum"
NPD_COUNT = "kubeproxy_network_programming_duration_seconds_count"


def full_sync(cfg: LabConfig, token: str, nft: NodeNft, last_ips: dict[int, str], deadline: Deadline,
              keep_table: bool = False) -> dict:
    """Delete node1's tables (keep_table: leave them, as a crashed agent does), restart its agent;
    time the first, complete sync of every family in last_ips ({version: the last Service's
    ClusterIP}). The agent runs one proxier per family, each syncing on its own thread: the
    agent's sync time is the slower family's, the wall time the last family's commit."""
    # SIGKILL; the kubelet starts the agent's container again once released, with a new log
    old = lifecycle.hold_agent(cfg.name, NODE)
    if not keep_table:
        for v in last_ips:
            nft.cmd(f"delete table {'ip6' if v == 6 else 'ip'} kubeweft")
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
    while not all(m.get(SYNC_COUNTS[v]) for v in last_ips):
        alive()
        time.sleep(0.5)
        m = metrics(cfg)
    first_try = True
    for ip in last_ips.values():
        while not has_service(nft, ip):           # one read confirms; rarely more (every 2 s)
            first_try = False
            alive()
            time.sleep(2.0)
    if first_try and all(m.get(LAST_SYNCS[v]) for v in last_ips):
        wall = max(m[LAST_SYNCS[v]] for v in last_ips) - t0_wall    # the agent's clock: the last commit
    else:
        wall = time.monotonic() - t0                 # a later sync loaded it: seen by the read
    m = metrics(cfg) or m
    # the first sample is the full sync when it is the only one; else the mean is an upper bound
    per_family = {LABELS[v]: {"agent_first_sync_s": round(m[SYNC_SUMS[v]] / m[SYNC_COUNTS[v]], 3),
                              "syncs_counted": int(m[SYNC_COUNTS[v]])} for v in last_ips}
    time.sleep(1.0)                               # let the agent settle before reading memory
    out = {"agent_first_sync_s": max(f["agent_first_sync_s"] for f in per_family.values()),
           "syncs_counted": max(f["syncs_counted"] for f in per_family.values()),
           "start_to_last_service_in_kernel_s": round(wall, 2), **{k + "_MB": v for k, v in rss_mb(pid).items()},
           "agent_idle_cpu_percent": idle_cpu_percent(pid), "loadavg": load_average()}
    if len(last_ips) > 1:
        out["per_family"] = per_family
    for key in ("kubeproxy_sync_proxy_rules_nftables_elements", "kubeproxy_sync_proxy_rules_nftables_objects"):
        hits = {k: v for k, v in m.items() if k.startswith(key)}
        if hits:
            out[key] = hits
    # the agent's own account of its first sync: read back, render, diff, apply
    with open(log, errors="replace") as f:
        f.seek(log_from)
        lines = [ln.strip() for ln in f if re.search(r"synced (IPv[46] )?full", ln)]
    out["agent_log"] = [ln.split("kubeweft.proxy.service_proxy", 1)[-1].strip(": ")
                        for ln in lines[:2 * len(last_ips)]]
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
           "agent_cpu_percent_meanwhile": cpu_pct, "loadavg": load_average()}
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
def connect_samples(targets: dict[str, tuple[str, int]], n: int, after_each=None) -> dict[str, list[float]]:
    """TCP connect() times in us per target, interleaved, from this thread's netns; after_each()
    runs after every connection (a listener draining its queue)."""
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
            if after_each is not None:
                after_each()
    return out


def connect_times(netns_name: str, targets: dict[str, tuple[str, int]], n: int) -> dict[str, dict]:
    """TCP connect() time per target, interleaved, from inside a pod's netns."""
    raw = lab_netns.call_in(netns_name, connect_samples, targets, n, timeout=300)
    return {k: latency_summary(v) for k, v in raw.items() if v}


def latency_chart(rows: list[tuple[str, float]]) -> str:
    top = max(v for _, v in rows) or 1
    width = 48
    return "\n".join(f"  {label:<24} {'#' * max(1, round(v / top * width)):<{width}} {v:7.1f} us"
                     for label, v in rows)


# --- the reference: kube-proxy-style chains ---------------------------------------------------
def ref_vip(i: int) -> str:
    return f"172.{16 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"


def render_kube_proxy_style(n: int) -> str:
    """kube-proxy nftables mode's shape: a vmap into one chain per Service port, which picks an
    endpoint chain (one per endpoint) with numgen; each endpoint chain masquerade-marks and DNATs.
    A nat output hook sends the netns's own connections through it; the last Service's three
    endpoints are the netns's listener (REF_ADDR:8080), so its first packets can be timed."""
    lines = ["add table ip kpref", "add chain ip kpref services",
             "add map ip kpref service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }",
             "add rule ip kpref services ip daddr . meta l4proto . th dport vmap @service-ips",
             "add chain ip kpref nat-output { type nat hook output priority -100 ; }",
             "add rule ip kpref nat-output jump services"]
    for i in range(n):
        svc = f"svc-{i}"
        lines.append(f"add chain ip kpref {svc}")
        for k in range(3):
            ip = REF_ADDR if i == n - 1 else endpoint_ip(i, k)
            lines += [f"add chain ip kpref sep-{i}-{k}",
                      f"add rule ip kpref sep-{i}-{k} ip saddr {ip} meta mark set meta mark or 0x4000",
                      f"add rule ip kpref sep-{i}-{k} meta l4proto tcp dnat to {ip}:8080"]
        lines.append(f"add rule ip kpref {svc} numgen random mod 3 vmap "
                     f"{{ 0 : goto sep-{i}-0, 1 : goto sep-{i}-1, 2 : goto sep-{i}-2 }}")
        lines.append(f"add element ip kpref service-ips {{ {ref_vip(i)} . tcp . 80 : goto {svc} }}")
    return "\n".join(lines) + "\n"


def bounded_child(argv: list[str], netns_name: str, seconds: float) -> tuple[int | None, dict]:
    """argv in the netns, killed (by its pid) after `seconds` -> (exit status, None when killed;
    {wall and CPU seconds, peak RSS, the start of its stderr}). The peak is the process's own
    VmHWM read while it runs (every 50 ms): wait4's ru_maxrss would keep this bench's RSS from
    the fork."""
    with tempfile.TemporaryFile() as err:
        # ip netns exec execs argv in its own process: the figures are argv's
        proc = subprocess.Popen(["ip", "netns", "exec", netns_name, *argv], stdout=subprocess.DEVNULL, stderr=err)
        t0 = time.monotonic()
        killed = False
        peak = 0.0
        try:
            while True:
                peak = max(peak, rss_mb(proc.pid).get("VmHWM", 0.0))
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if not killed and time.monotonic() - t0 > seconds:
                    proc.kill()
                    killed = True
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            os.wait4(proc.pid, 0)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        took = time.monotonic() - t0
        err.seek(0)
        text = err.read(300).decode(errors="replace")
    return (None if killed else proc.returncode), {"wall_s": took, "cpu_s": usage.ru_utime + usage.ru_stime,
                                                   "peak_rss_mb": peak, "stderr": text}


def ref_connect_times(vip: str, n: int) -> dict[str, dict]:
    """Connect time to a Service address of the reference and to its listener directly, from
    inside the scratch netns (run there by call_in), interleaved."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((REF_ADDR, 8080))
    srv.listen(4096)
    srv.setblocking(False)

    def drain() -> None:
        try:
            srv.accept()[0].close()
        except BlockingIOError:
            pass
    try:
        out = connect_samples({"via_service": (vip, 80), "direct": (REF_ADDR, 8080)}, n, drain)
    finally:
        srv.close()
    return {k: latency_summary(v) for k, v in out.items() if v}


def latency_summary(v: list[float]) -> dict:
    return {"n": len(v), "p50_us": round(pctl(v, 0.5), 1), "p90_us": round(pctl(v, 0.9), 1),
            "mean_us": round(statistics.fmean(v), 1)}


def reference_point(n: int, latency_n: int, load_timeout: float, deadline: Deadline) -> dict:
    """The kube-proxy-style table of n Services loaded into a fresh scratch netns, and probed."""
    run_ref = lambda *argv: lab_netns.run(REF_NETNS, list(argv), check=True, capture_output=True, timeout=10)
    subprocess.run(["ip", "netns", "add", REF_NETNS], check=True, capture_output=True, timeout=10)
    path = Path(f"/tmp/{REF_NETNS}-{os.getpid()}.nft")
    try:
        run_ref("ip", "link", "set", "lo", "up")
        run_ref("ip", "link", "add", "ref0", "type", "veth", "peer", "name", "ref1")
        run_ref("ip", "addr", "add", f"{REF_ADDR}/24", "dev", "ref0")
        run_ref("ip", "link", "set", "ref0", "up")
        run_ref("ip", "link", "set", "ref1", "up")
        run_ref("ip", "route", "add", REF_VIP_NET, "dev", "ref0")
        path.write_text(render_kube_proxy_style(n))
        limit = max(1.0, min(load_timeout, deadline.left()))
        rc, child = bounded_child(["nft", "-f", str(path)], REF_NETNS, limit)
        out = {"chains": n * 4 + 2, "rules": n * 7 + 2, "nft_file_mb": round(path.stat().st_size / 1e6, 1),
               "nft_cpu_s": round(child["cpu_s"], 2), "nft_peak_rss_mb": round(child["peak_rss_mb"]),
               "loadavg": load_average()}
        if rc is None:
            return {**out, "loaded": False, "stopped": f"nft -f did not finish within {limit:.0f} s (killed)"}
        if rc != 0:
            return {**out, "loaded": False, "stopped": f"nft -f exited {rc}: {child['stderr']}"}
        out.update(loaded=True, load_s=round(child["wall_s"], 2))
        if latency_n:
            out["first_packet"] = lab_netns.call_in(REF_NETNS, ref_connect_times, ref_vip(n - 1), latency_n,
                                                    timeout=max(10.0, min(300.0, deadline.left())))
        return out
    finally:
        path.unlink(missing_ok=True)
        subprocess.run(["ip", "netns", "delete", REF_NETNS], capture_output=True, timeout=30, check=False)


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


@contextlib.contextmanager
def bench_lab(cfg: LabConfig, result: dict, deadline: Deadline):
    """The bench's lab up (kubeweft CNI and agent) with its namespace -> (API token, API server
    pid, Api, NodeNft of node1); always down after, with the logs' tails in `result` on an error."""
    say(f"lab up ({cfg.nodes} nodes, kubeweft, {cfg.ip_family})")
    # each full sync restarts the agent: CrashLoopBackOff's delay from 1 s, not 10 s
    os.environ.setdefault("KUBEWEFT_LAB_BACKOFF_BASE", "1")
    try:
        lifecycle.up(cfg, timeout=min(180.0, deadline.left()))
        state = json.loads(cfg.state_file.read_text())
        api = Api(cfg)
        api.run([("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})])
        nft = NodeNft(cfg.node_netns(NODE))
        try:
            yield state["token"], state["apiserver"]["pid"], api, nft
        finally:
            nft.close()
    except BaseException:
        result["log_tails"] = {"apiserver": lifecycle.log_tail(cfg.log_dir / "apiserver.log", 15),
                               f"agent-{NODE}": lifecycle.log_tail(install.agent_log(cfg, NODE), 15)}
        raise
    finally:
        say("lab down")
        lifecycle.down(LAB)


def run(result: dict, scales: list[int], latency_n: int, change_rounds: int, deadline: Deadline) -> None:
    """Fill `result` step by step (what was measured stays there if a later step fails)."""
    cfg = LabConfig(name=LAB, nodes=2, cni="kubeweft")
    with bench_lab(cfg, result, deadline) as (token, api_pid, api, nft):
        client_ns, backend_ip, vip = setup_pods(cfg, api, deadline)
        wait_cluster_ip(client_ns, vip, deadline)
        targets = {"clusterip": (vip, 80), "direct": (backend_ip, 8080)}
        ips = create_services(api, 0, 8)                         # ~10 Services in all
        say(f"first-packet latency at {len(ips) + 2} Services")
        result["first_packet"]["10"] = {**connect_times(client_ns, targets, latency_n), "loadavg": load_average()}
        made = len(ips)
        for n in scales:
            t0 = time.monotonic()
            ips.update(create_services(api, made, n, deadline))
            took = time.monotonic() - t0
            result["creation"][str(n)] = {"services_created": n - made, "seconds": round(took, 1),
                                          "api_writes_per_s": round(2 * (n - made) / took),
                                          "apiserver_MB": rss_mb(api_pid), "loadavg": load_average()}
            made = n
            say(f"{n} Services: {result['creation'][str(n)]}; full sync of node1's agent")
            result["full_sync"][str(n)] = full_sync(cfg, token, nft, {4: ips[n - 1]}, deadline)
            say(f"  {result['full_sync'][str(n)]}")
            wait_cluster_ip(client_ns, vip, deadline)
            result["first_packet"][str(n)] = {**connect_times(client_ns, targets, latency_n),
                                              "loadavg": load_average()}
            say(f"  first packet: {result['first_packet'][str(n)]}")
        say(f"restart of node1's agent with its table in place ({made} Services: read back, reconcile)")
        result["restart_with_table"] = {"services": made, **full_sync(cfg, token, nft, {4: ips[made - 1]}, deadline,
                                                                      keep_table=True)}
        say(f"  {result['restart_with_table']}")
        say(f"one EndpointSlice change at {made} Services, {change_rounds} times")
        try:
            result["one_change"] = {"services": made, **one_change(cfg, api, nft, ips, change_rounds,
                                                                   deadline, agent_pid(cfg, token))}
        except RuntimeError as e:
            # keep the other figures if the change step fails (an endpoint never seen in 10 s)
            say(f"  change step failed: {e}")
            result["one_change"] = {"services": made, "error": str(e)}
        result["apiserver_MB_at_end"] = rss_mb(api_pid)


FAMILY_TARGET_RATIO = 2.0       # dual-stack against IPv4-only, same number of Services


def run_family(result: dict, family: str, scales: list[int], deadline: Deadline) -> None:
    """A lab of one IP family (ipv4: IPv4-only Services; dual: every Service RequireDualStack
    with an EndpointSlice per address type); at each scale node1's agent's full sync and memory."""
    cfg = LabConfig(name=LAB, nodes=2, cni="kubeweft", ip_family=family)
    versions = cfg.families
    result.update(creation={}, full_sync={})
    with bench_lab(cfg, result, deadline) as (token, api_pid, api, nft):
        made, ips = 0, {}
        for n in scales:
            t0 = time.monotonic()
            ips.update(create_services_in(api, made, n, versions, deadline))
            took = time.monotonic() - t0
            result["creation"][str(n)] = {"services_created": n - made, "seconds": round(took, 1),
                                          "api_writes_per_s": round((1 + len(versions)) * (n - made) / took),
                                          "apiserver_MB": rss_mb(api_pid), "loadavg": load_average()}
            made = n
            say(f"{family}: {n} Services: {result['creation'][str(n)]}; full sync of node1's agent")
            result["full_sync"][str(n)] = full_sync(cfg, token, nft, ips[n - 1], deadline)
            say(f"  {result['full_sync'][str(n)]}")


def family_ratios(result: dict) -> dict:
    """dual / ipv4 at each scale both measured: wall-clock full sync, the agent's sync, memory."""
    four = result.get("ipv4", {}).get("full_sync", {})
    dual = result.get("dual", {}).get("full_sync", {})
    out = {}
    for n in sorted(set(four) & set(dual), key=int):
        a, b = four[n], dual[n]
        r = {k: round(b[k] / a[k], 2) for k in ("start_to_last_service_in_kernel_s", "agent_first_sync_s",
                                                 "VmRSS_MB", "VmHWM_MB") if a.get(k) and b.get(k)}
        r["target"] = FAMILY_TARGET_RATIO
        r["met"] = all(v <= FAMILY_TARGET_RATIO for k, v in r.items() if k != "target")
        out[n] = r
    return out


def draw_families(result: dict, path: Path) -> None:
    """IPv4-only and dual-stack side by side at each scale: full sync (seconds) and agent memory
    (MB), each pair labelled with dual / IPv4-only."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    four = result.get("ipv4", {}).get("full_sync", {})
    dual = result.get("dual", {}).get("full_sync", {})
    scales = sorted(set(four) | set(dual), key=int)
    panels = (("seconds", "full sync of node1's agent", [("start_to_last_service_in_kernel_s", "start -> last Service in kernel"),
                                                          ("agent_first_sync_s", "agent's sync (slower family)")]),
              ("MB", "agent memory once synced", [("VmHWM_MB", "peak RSS (VmHWM)"), ("VmRSS_MB", "RSS")]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (unit, title, keys) in zip(axes, panels):
        labels, xs = [], 0
        for n in scales:
            for key, what in keys:
                a, b = four.get(n, {}).get(key), dual.get(n, {}).get(key)
                if a is not None:
                    ax.bar(xs - 0.2, a, 0.4, color="tab:blue")
                if b is not None:
                    ax.bar(xs + 0.2, b, 0.4, color="tab:orange")
                if a and b:
                    ax.text(xs, max(a, b), f"x{b / a:.2f}", ha="center", va="bottom", fontsize=8)
                labels.append(f"{what}\n{int(n):,} Services")
                xs += 1
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.legend(handles=[Patch(color="tab:blue", label="IPv4-only Services"),
                           Patch(color="tab:orange", label="dual-stack Services (RequireDualStack, a slice per family)")],
                  fontsize=7, loc="upper left")
        ax.margins(y=0.15)
    fig.suptitle(f"bench/services.py --ip-family both: 3 endpoints per family; target dual / IPv4-only <= "
                 f"{FAMILY_TARGET_RATIO}; load {result.get('loadavg_start')} at start, {result.get('loadavg_end')} "
                 f"at end", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main_families(args, families: list[str]) -> int:
    """--ip-family dual|both: full sync and memory per family at each of --scales."""
    result: dict = {"lab": LAB, "endpoints_per_service_and_family": 3, "families": families}

    def body(deadline: Deadline) -> None:
        for family in families:
            result[family] = {}
            run_family(result[family], family, [int(x) for x in args.scales.split(",") if x], deadline)
    rc = measure(result, args.timeout, body)
    result["dual_vs_ipv4"] = family_ratios(result)
    write_result(result, f"services-{args.name}" if args.name else "services-dualstack", draw_families)
    return rc


def measure(result: dict, timeout: float, body) -> int:
    """Run body(deadline) bounded by `timeout` (SIGALRM 60 s past it), the lab always removed,
    also on SIGTERM or Ctrl-C; what was measured stays in `result`, with the error that stopped
    it, the load at start and end and the duration. Returns the exit code."""
    deadline = Deadline(timeout)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGALRM, _interrupt)
    signal.alarm(int(timeout) + 60)
    t0 = time.monotonic()
    result["loadavg_start"] = load_average()
    rc = 0
    try:
        body(deadline)
    except (Exception, KeyboardInterrupt, Interrupted) as e:  # noqa: BLE001 - report what was measured, and why it stopped
        result["error"] = f"{type(e).__name__}: {e}"
        rc = 130 if isinstance(e, (KeyboardInterrupt, Interrupted)) else 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)     # the clean-up below runs to its end
        if lifecycle.is_up(LabConfig(name=LAB)) or topology.list_netns(LAB):
            lifecycle.down(LAB)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    result["loadavg_end"] = load_average()
    result["seconds"] = round(time.monotonic() - t0, 1)
    return rc


def write_result(result: dict, stem: str, drawing) -> None:
    """bench/results/<stem>.png (drawing(result, path)) and <stem>.json; the JSON on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        drawing(result, RESULTS / f"{stem}.png")
        result["png"] = f"bench/results/{stem}.png"
    except Exception as e:  # noqa: BLE001 - the figures stand without the drawing
        result["png_error"] = f"{type(e).__name__}: {e}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def run_reference(result: dict, scales: list[int], latency_n: int, load_timeout: float, deadline: Deadline) -> None:
    """The kube-proxy-style table at each scale, smallest first, until one does not load."""
    stopped = None
    for n in sorted(scales):
        if stopped is not None:
            result[str(n)] = {"loaded": False, "stopped": f"not tried: {stopped} Services did not load"}
            continue
        say(f"reference: kube-proxy-style chains for {n} Services")
        result[str(n)] = reference_point(n, latency_n, load_timeout, deadline)
        say(f"  {result[str(n)]}")
        if not result[str(n)]["loaded"]:
            stopped = n


def verdict(target: float, measured: float | None, at: int | None, **more) -> dict:
    """One target: met only when measured at TARGET_SCALE Services and under the target."""
    out = {"target": target, "measured": measured, "services": at, **more}
    out["met"] = None if measured is None or at != TARGET_SCALE else measured < target
    return out


def verdicts(result: dict) -> dict:
    """Each target with what was measured and whether it was met (None: not measured at
    TARGET_SCALE Services)."""
    out = {}
    sync = result.get("full_sync", {})
    top = max(map(int, sync)) if sync else None
    point = sync.get(str(top), {})
    restart = result.get("restart_with_table", {})
    out["full_sync_s"] = verdict(TARGETS["full_sync_s"], point.get("agent_first_sync_s"), top,
                                 loadavg=point.get("loadavg"),
                                 start_to_last_service_in_kernel_s=point.get("start_to_last_service_in_kernel_s"))
    peaks = [p["VmHWM_MB"] for p in (point, restart) if p.get("VmHWM_MB")]
    out["agent_rss_mb"] = verdict(TARGETS["agent_rss_mb"], max(peaks) if peaks else None, top,
                                  what="peak VmHWM of the full sync and the restart", loadavg=point.get("loadavg"))
    out["restart_with_table_s"] = verdict(TARGETS["restart_with_table_s"], restart.get("agent_first_sync_s"),
                                          restart.get("services"), loadavg=restart.get("loadavg"))
    change = result.get("one_change", {})
    # from the watch event: the agent's network programming metric (event received ->
    # transaction committed); the bench's peer watch and the API write -> kernel beside it
    out["change_watch_event_to_kernel_ms"] = verdict(
        TARGETS["change_watch_event_to_kernel_ms"], change.get("agent_network_programming_ms_mean"),
        change.get("services"), what="agent's network programming duration, mean",
        peer_watch_event_to_kernel_ms=change.get("watch_event_to_kernel_ms"),
        api_write_to_kernel_ms=change.get("api_write_to_kernel_ms"), loadavg=change.get("loadavg"))
    lat = result.get("first_packet", {}).get(str(top), {})
    if "clusterip" in lat and "direct" in lat:
        ratio = round(lat["clusterip"]["p50_us"] / lat["direct"]["p50_us"], 3)
        out["clusterip_vs_direct"] = {**verdict(TARGETS["clusterip_vs_direct"], ratio, top, loadavg=lat.get("loadavg")),
                                      "met": ratio <= TARGETS["clusterip_vs_direct"] if top == TARGET_SCALE else None}
    return out


def draw(result: dict, path: Path) -> None:
    """Sync time and first-packet latency against the number of Services, kubeweft and the
    kube-proxy-style reference side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    sync = {int(n): v for n, v in result.get("full_sync", {}).items()}
    ref = {int(n): v for n, v in result.get("reference_kube_proxy_style_chains", {}).items()}
    xs = sorted(sync)
    a.plot(xs, [sync[n]["agent_first_sync_s"] for n in xs], "o-", label="kubeweft: agent's full sync")
    a.plot(xs, [sync[n]["start_to_last_service_in_kernel_s"] for n in xs], "s--",
           label="kubeweft: agent start -> last Service in kernel (lists included)")
    restart = result.get("restart_with_table", {})
    if restart.get("agent_first_sync_s") is not None:
        a.plot([restart["services"]], [restart["agent_first_sync_s"]], "D", label="kubeweft: restart, table in place")
    loaded = sorted(n for n, v in ref.items() if v.get("loaded"))
    a.plot(loaded, [ref[n]["load_s"] for n in loaded], "^-", label="kube-proxy-style chains: nft -f")
    for n in sorted(n for n, v in ref.items() if not v.get("loaded") and "nft_cpu_s" in v):
        a.axvline(n, color="grey", linestyle=":")
        a.text(n, 0.02, f"kube-proxy-style stops here: {ref[n]['stopped'][:48]}", rotation=90, fontsize=7,
               transform=a.get_xaxis_transform(), ha="right", va="bottom")
    a.axhline(TARGETS["full_sync_s"], color="red", linewidth=0.8, label=f"target {TARGETS['full_sync_s']} s at 100k")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("Services (3 endpoints each)")
    a.set_ylabel("seconds")
    a.set_title("full sync / load")
    a.legend(fontsize=7)
    fp = {int(n): v for n, v in result.get("first_packet", {}).items()}
    xs = sorted(n for n, v in fp.items() if "clusterip" in v and "direct" in v)
    b.plot(xs, [fp[n]["clusterip"]["p50_us"] / fp[n]["direct"]["p50_us"] for n in xs], "o-",
           label="kubeweft: pod -> ClusterIP / pod -> pod (node1 -> node2)")
    xs = sorted(n for n in loaded if "via_service" in ref[n].get("first_packet", {}))
    b.plot(xs, [ref[n]["first_packet"]["via_service"]["p50_us"] / ref[n]["first_packet"]["direct"]["p50_us"]
                for n in xs], "^-", label="kube-proxy-style: Service address / direct (one netns)")
    b.axhline(1.0, color="grey", linewidth=0.8)
    b.set_xscale("log")
    b.set_xlabel("Services (3 endpoints each)")
    b.set_ylabel("TCP connect p50, via the Service / direct")
    b.set_title("first-packet latency")
    b.legend(fontsize=7)
    fig.suptitle(f"bench/services.py, load average {result.get('loadavg_start')} at start, "
                 f"{result.get('loadavg_end')} at end", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


class Interrupted(BaseException):
    """SIGTERM, or the hard time limit: unwinds like Ctrl-C, so every finally removes the lab."""


def _interrupt(signum, _frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1000,3000,10000,30000,100000")
    ap.add_argument("--reference-scales", default="1000,3000,10000,30000,100000")
    ap.add_argument("--reference-timeout", type=float, default=240.0,
                    help="seconds one reference table may take to load before it counts as not loading")
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=2400.0,
                    help="the whole run; 60 s past it SIGALRM unwinds whatever is running")
    ap.add_argument("--name", default="", help="suffix of the result files (services-NAME.json, .png)")
    ap.add_argument("--ip-family", choices=("ipv4", "dual", "both"), default="ipv4",
                    help="ipv4: the whole bench above; dual: full sync and memory on a dual-stack lab "
                         "(RequireDualStack Services); both: ipv4's and dual's full sync and memory in one "
                         "run, and their ratio (services-dualstack.json)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/services.py needs root (network namespaces)", file=sys.stderr)
        return 2
    if lifecycle.is_up(LabConfig(name=LAB)) or topology.list_netns(REF_NETNS):
        say(f"lab {LAB} exists already (a run with this pid?): not touching it")
        return 1
    if args.ip_family != "ipv4":
        return main_families(args, ["ipv4", "dual"] if args.ip_family == "both" else ["dual"])
    result: dict = {"lab": LAB, "endpoints_per_service": 3, "target_scale": TARGET_SCALE, "targets": TARGETS,
                    "creation": {}, "full_sync": {}, "first_packet": {}, "reference_kube_proxy_style_chains": {}}

    def body(deadline: Deadline) -> None:
        run(result, [int(x) for x in args.scales.split(",") if x], args.latency_samples, args.changes, deadline)
        run_reference(result["reference_kube_proxy_style_chains"],
                      [int(x) for x in args.reference_scales.split(",") if x], args.latency_samples,
                      args.reference_timeout, deadline)
    rc = measure(result, args.timeout, body)
    result["verdicts"] = verdicts(result)
    rows = [(f"{n} svc {path}", v[path]["p50_us"])
            for n, v in result["first_packet"].items() for path in ("direct", "clusterip") if path in v]
    if rows:
        print("connect latency, p50 (pod on node1 -> backend on node2):\n" + latency_chart(rows), file=sys.stderr)
    write_result(result, f"services-{args.name}" if args.name else "services", draw)
    return rc


if __name__ == "__main__":
    sys.exit(main())
