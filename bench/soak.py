"""Load and soak: new TCP connections through a ClusterIP at a fixed rate while pods churn, with
the same connections straight to the endpoint pods as the reference in the same run; the agents'
memory over time; and at the end, what was left behind. Prints one JSON document and draws
bench/results/soak.png. Never a test (tests/integration/test_bench_smoke.py runs it short).

    .venv/bin/python bench/soak.py [--minutes 10] [--pods-per-minute 200] [--rate 5000]
                                   [--reference-seconds 20] [--lab NAME]

- Its own 2-node kubeweft lab (h16s<pid>), always brought down (with --lab: that lab, and only
  what the bench made is deleted).
- Backends: two lab workload pods on node2 behind Service "web" (ClusterIP, port 80 -> 8080).
  The client is a pod on node1: the load generator runs in its netns as --workers processes,
  each with non-blocking sockets in one selector loop, opening connections at its share of
  --rate (a connection is counted when the handshake completes; it is then closed with an RST,
  so no TIME_WAIT exhausts the ports; it fails when refused, reset before the handshake, or not
  answered within 3 s). Nothing is sent outside the lab's namespaces.
  A generator that falls behind (a starved CPU) catches up in bursts while the planned seconds
  last and stops with them: the rate reported is what it opened over the time it took.
- Reference, same run: --reference-seconds of the same generator to the two pod addresses
  directly (no Service), then the soak to the ClusterIP; what the generator reaches at all is
  the reference's rate (5,000 a second may be more than one shared machine can open: the figure
  says what it did).
- Pod churn during the soak: a pod created every 60/--pods-per-minute seconds on either node
  (app=churn, behind Service "churn", so EndpointSlices churn with them), each deleted about
  LIFETIME seconds after its creation: the agents see pods, endpoints and CNI ADD/DEL all along.
- Memory: VmRSS of each node's agent every --sample seconds; "flat" compares the mean of the
  last quarter of the samples with the mean of the first quarter after WARMUP seconds.
- Leaks, once the churn pods are gone from the API and from every kubelet's own record (the
  kubelets tear sandboxes down after the API forgets a pod: on a starved machine, minutes
  later; up to --teardown-max seconds, reported) and --settle seconds passed (conntrack keeps a
  closed flow 10 s), counted again every 5 s while anything is left over, up to --settle-max
  seconds: on each node the veths,
  the IPAM reservation files, the files under the node's state directory, the elements of every
  nftables set and map, and the conntrack entries naming an address of a deleted churn pod,
  against the same counts taken before the churn.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KUBEWEFT = str(ROOT / ".venv" / "bin" / "kubeweft")
NS = "soak"
LIFETIME = 20.0          # seconds a churn pod lives
WARMUP = 10.0            # seconds of soak before memory samples count as the baseline
CONNECT_TIMEOUT = 3.0
BURST = 200              # connections a load generator opens before it looks at its sockets again
RESULTS = ROOT / "bench" / "results"


def say(msg: str) -> None:
    print(f"[bench/soak] {msg}", file=sys.stderr, flush=True)


# ---- the load generator: one process in the client pod's netns --------------------------------

def loadgen(targets: list[str], rate: float, seconds: float, interval: float) -> None:
    """Open `rate` connections a second to the targets (host:port, in turn) for `seconds`;
    print one JSON line per `interval`: {"t", "ok", "failed", "errors": {errno: n}}."""
    addrs = [(h, int(p)) for h, p in (t.rsplit(":", 1) for t in targets)]
    sel = selectors.DefaultSelector()
    linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")      # l_onoff=1, l_linger=0: RST on close
    pending: dict[socket.socket, float] = {}
    ok = failed = 0
    errors: dict[str, int] = {}
    t0 = time.monotonic()
    next_report = t0 + interval
    sent = 0
    n = 0

    def finish(s: socket.socket, err: int) -> None:
        nonlocal ok, failed
        sel.unregister(s)
        pending.pop(s, None)
        if err == 0:
            ok += 1
        else:
            failed += 1
            name = errno.errorcode.get(err, str(err))
            errors[name] = errors.get(name, 0) + 1
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()

    while True:
        now = time.monotonic()
        if now - t0 >= seconds and not pending:
            break
        # on time or not at all: a generator that falls behind opens fewer, its rate says so
        due = int((now - t0) * rate) if now - t0 < seconds else sent
        burst = 0
        # a starved process catches up in bursts of at most BURST, so its reports stay on time
        while sent < due and len(pending) < 20000 and burst < BURST:
            burst += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(addrs[n % len(addrs)])
            n += 1
            sent += 1
            if err in (0, errno.EINPROGRESS):
                pending[s] = now + CONNECT_TIMEOUT
                sel.register(s, selectors.EVENT_WRITE)
            else:
                failed += 1
                name = errno.errorcode.get(err, str(err))
                errors[name] = errors.get(name, 0) + 1
                s.close()
        for key, _ in sel.select(timeout=0.002):
            s = key.fileobj
            finish(s, s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        now = time.monotonic()
        for s, deadline in list(pending.items()):
            if now > deadline:
                finish(s, errno.ETIMEDOUT)
        if now >= next_report:
            print(json.dumps({"t": round(now - t0, 3), "ok": ok, "failed": failed, "errors": errors}), flush=True)
            ok = failed = 0
            errors = {}
            next_report = now + interval
    print(json.dumps({"t": round(time.monotonic() - t0, 3), "ok": ok, "failed": failed, "errors": errors,
                      "last": True}), flush=True)


class Load:
    """--workers load generator processes in a netns; their per-interval lines, summed."""

    def __init__(self, netns: str, targets: list[str], rate: float, seconds: float, workers: int,
                 interval: float = 1.0) -> None:
        self.procs = [subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, str(Path(__file__).resolve()), "--loadgen",
             ",".join(targets), str(rate / workers), str(seconds), str(interval)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
        self.seconds = seconds

    def wait(self) -> dict:
        per_t: dict[int, list[float]] = {}          # second -> [connected/s, failed/s], all workers
        errors: dict[str, int] = {}
        ok = failed = 0
        elapsed = 0.0
        for p in self.procs:
            try:
                out, err = p.communicate(timeout=self.seconds + 60)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"load generator exited {p.returncode}: {err[-2000:]}")
            last = 0.0
            for line in out.splitlines():
                r = json.loads(line)
                dt = max(1e-3, r["t"] - last)
                last = r["t"]
                slot = per_t.setdefault(int(r["t"]), [0.0, 0.0])
                slot[0] += r["ok"] / dt
                slot[1] += r["failed"] / dt
                ok += r["ok"]
                failed += r["failed"]
                for k, v in r["errors"].items():
                    errors[k] = errors.get(k, 0) + v
            elapsed = max(elapsed, last)
        series = [(t, round(per_t[t][0]), round(per_t[t][1])) for t in sorted(per_t)]
        return {"connections": ok, "failed": failed, "errors": errors, "seconds": round(elapsed, 1),
                "rate_per_s": round((ok + failed) / max(elapsed, 1e-3), 1), "series": series}

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


# ---- the lab ------------------------------------------------------------------------------------

def lab_cli(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([KUBEWEFT, "lab", "--name", name, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


class Soak:
    def __init__(self, lab: str, nodes: int) -> None:
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config
        from kubeweft.lab.config import LabConfig
        self.cfg = LabConfig(name=lab, nodes=nodes)
        self.api = k8s_config.new_client_from_config(config_file=str(self.cfg.kubeconfig))
        self.core = k8s.CoreV1Api(self.api)
        self.nodes = [f"node{i}" for i in range(1, nodes + 1)]
        self.churned: list[str] = []         # names of churn pods created
        self.churn_ips: set[str] = set()

    # -- objects --
    def setup(self) -> None:
        with contextlib.suppress(Exception):          # left from an earlier run with --lab
            self.core.create_namespace({"metadata": {"name": NS}}, _request_timeout=10)
        for name, node, labels in (("web-a", "node2", {"app": "web"}), ("web-b", "node2", {"app": "web"}),
                                   ("client", "node1", {"app": "client"})):
            self.pod(name, node, labels)
        for name, sel in (("web", "web"), ("churn", "churn")):
            self.core.create_namespaced_service(NS, {
                "metadata": {"name": name}, "spec": {"selector": {"app": sel},
                                                     "ports": [{"port": 80, "targetPort": 8080}]}},
                _request_timeout=10)
        self.web_ip = self.core.read_namespaced_service("web", NS, _request_timeout=10).spec.cluster_ip
        self.wait(lambda: len(self.ready_pods("app=web")) == 2 and self.ready_pods("app=client"), 120)
        self.backends = sorted(self.ready_pods("app=web").values())
        self.client_netns = self.pod_netns(f"{NS}/client")

    def pod(self, name: str, node: str, labels: dict) -> None:
        self.core.create_namespaced_pod(NS, {
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "main", "image": "lab", "ports": [{"containerPort": 8080}]}]}},
            _request_timeout=10)

    def ready_pods(self, selector: str) -> dict[str, str]:
        out = {}
        for p in self.core.list_namespaced_pod(NS, label_selector=selector, _request_timeout=10).items:
            conds = {c.type: c.status for c in (p.status.conditions or [])}
            if conds.get("Ready") == "True" and p.status.pod_ip:
                out[p.metadata.name] = p.status.pod_ip
        return out

    def pod_netns(self, key: str) -> str:
        from kubeweft.lab import probe as lab_probe
        netns = self.wait(lambda: (lab_probe.read_pods(self.cfg).get(key) or {}).get("netns"), 60)
        return netns

    @staticmethod
    def wait(fn, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = fn()
            if got:
                return got
            time.sleep(0.3)
        raise TimeoutError(f"not within {timeout:.0f}s")

    # -- churn --
    def churn(self, per_minute: float, seconds: float, stop: threading.Event) -> dict:
        """Create a pod every 60/per_minute s, delete each LIFETIME s later; until `seconds`."""
        gap = 60.0 / per_minute
        t0 = time.monotonic()
        alive: list[tuple[float, str]] = []
        created = deleted = errors = 0
        i = 0
        while not stop.is_set():
            now = time.monotonic()
            if now - t0 < seconds and now >= t0 + i * gap:
                name = f"churn-{i}"
                try:
                    self.pod(name, self.nodes[i % len(self.nodes)], {"app": "churn"})
                    alive.append((now, name))
                    self.churned.append(name)
                    created += 1
                except Exception:  # noqa: BLE001 - counted: the API server busy
                    errors += 1
                i += 1
            while alive and (now - alive[0][0] >= LIFETIME or now - t0 >= seconds):
                _, name = alive.pop(0)
                self.note_ip(name)
                try:
                    self.core.delete_namespaced_pod(name, NS, grace_period_seconds=0, _request_timeout=10)
                    deleted += 1
                except Exception:  # noqa: BLE001
                    errors += 1
            if now - t0 >= seconds and not alive:
                break
            stop.wait(0.05)
        return {"created": created, "deleted": deleted, "api_errors": errors,
                "per_minute": round(created / max(1e-9, min(seconds, time.monotonic() - t0)) * 60, 1)}

    def note_ip(self, name: str) -> None:
        try:
            ip = self.core.read_namespaced_pod(name, NS, _request_timeout=10).status.pod_ip
        except Exception:  # noqa: BLE001 - gone already
            return
        if ip:
            self.churn_ips.add(ip)

    # -- the nodes --
    def agent_pid(self, node: str) -> int:
        from kubeweft.lab import lifecycle
        token = json.loads(self.cfg.state_file.read_text())["token"]
        pid = lifecycle.find_agent(self.cfg.name, token, node)
        if pid is None:
            raise RuntimeError(f"no agent for {node}")
        return pid

    def rss_mb(self, pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def run_in(self, netns: str, *argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                              timeout=60, check=False).stdout

    def counts(self, node: str) -> dict:
        ns = self.cfg.node_netns(node)
        veths = json.loads(subprocess.run(["ip", "-n", ns, "-j", "link", "show", "type", "veth"],
                                          capture_output=True, text=True, timeout=20, check=False).stdout or "[]")
        node_dir = self.cfg.state_dir / "nodes" / node
        files = [p for p in node_dir.rglob("*") if p.is_file()] if node_dir.exists() else []
        ipam = [p for p in files if p.parent.name == "ipam" and _is_address(p.name)]
        elements: dict[str, int] = {}
        ruleset = json.loads(self.run_in(ns, "nft", "-j", "list", "ruleset") or '{"nftables": []}')
        for item in ruleset["nftables"]:
            for kind in ("set", "map"):
                s = item.get(kind)
                if s and "timeout" not in (s.get("flags") or []):
                    elements[f"{s['family']} {s['table']} {s['name']}"] = len(s.get("elem") or [])
        return {"veths": len(veths), "ipam_files": len(ipam), "files": len(files), "elements": elements}

    def wait_kubelets_released(self, timeout: float) -> list[str]:
        """Wait until no kubelet's pods.json names a churn pod; -> those still named at timeout."""
        from kubeweft.lab import probe as lab_probe
        deadline = time.monotonic() + timeout
        while True:
            held = sorted(k for k in lab_probe.read_pods(self.cfg) if k.startswith(f"{NS}/churn-"))
            if not held or time.monotonic() >= deadline:
                return held
            time.sleep(2)

    def stale_conntrack(self, node: str) -> int:
        """Conntrack entries of the node naming an address a deleted churn pod held and no live pod holds."""
        live = set(self.ready_pods("").values())
        gone = self.churn_ips - live
        out = self.run_in(self.cfg.node_netns(node), "conntrack", "-L", "-o", "extended")
        return sum(1 for line in out.splitlines() if any(f"={ip} " in line for ip in gone))


def _is_address(name: str) -> bool:
    """An IPAM reservation file is named by its address (host-local's layout)."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def delete_namespace(lab: str) -> None:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubeweft.lab.config import LabConfig
    api = k8s_config.new_client_from_config(config_file=str(LabConfig(name=lab).kubeconfig))
    with contextlib.suppress(Exception):
        k8s.CoreV1Api(api).delete_namespace(NS, _request_timeout=10)


def leaks(before: dict, after: dict) -> dict:
    out = {}
    for k in ("veths", "ipam_files", "files"):
        if after[k] != before[k]:
            out[k] = after[k] - before[k]
    moved = {n: after["elements"].get(n, 0) - before["elements"].get(n, 0)
             for n in set(before["elements"]) | set(after["elements"])
             if after["elements"].get(n, 0) != before["elements"].get(n, 0)}
    if moved:
        out["elements"] = moved
    return out


def draw(doc: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 7))
    for label, series in (("via ClusterIP (soak)", doc["soak"]["series"]),
                          ("direct to pods (reference)", doc["reference"]["series"])):
        a.plot([t for t, *_ in series], [o for _, o, _f in series], label=f"{label}: connected/s")
        a.plot([t for t, *_ in series], [f for *_, f in series], linestyle="--", label=f"{label}: failed/s")
    a.set_xlabel("seconds")
    a.set_ylabel("new connections per second")
    a.set_title(f"{doc['soak']['connections']} connections, {doc['soak']['failed']} failed; "
                f"pod churn {doc['churn']['per_minute']}/min")
    a.legend(fontsize=7)
    for node, samples in doc["agent_rss_mb"].items():
        b.plot([t for t, _ in samples], [m for _, m in samples], label=f"{node} agent")
    b.set_xlabel("seconds into the soak")
    b.set_ylabel("agent VmRSS (MiB)")
    b.set_ylim(bottom=0)
    b.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def run(args, lab: str) -> dict:
    s = Soak(lab, 2)
    s.setup()
    say(f"backends {s.backends}, ClusterIP {s.web_ip}; client netns {s.client_netns}")
    direct = [f"{ip}:8080" for ip in s.backends]
    ref = Load(s.client_netns, direct, args.rate, args.reference_seconds, args.workers).wait()
    say(f"reference (direct): {ref['rate_per_s']}/s, {ref['failed']} failed")
    before = {n: s.counts(n) for n in s.nodes}
    pids = {n: s.agent_pid(n) for n in s.nodes}
    seconds = args.minutes * 60
    stop = threading.Event()
    churn_out: dict = {}
    churner = threading.Thread(target=lambda: churn_out.update(s.churn(args.pods_per_minute, seconds, stop)),
                               daemon=True)
    rss: dict[str, list] = {n: [] for n in s.nodes}
    t0 = time.monotonic()
    load = Load(s.client_netns, [f"{s.web_ip}:80"], args.rate, seconds, args.workers)
    churner.start()
    try:
        while time.monotonic() - t0 < seconds:
            for n, pid in pids.items():
                rss[n].append((round(time.monotonic() - t0, 1), round(s.rss_mb(pid), 1)))
            time.sleep(min(args.sample, max(0.1, seconds - (time.monotonic() - t0))))
        soak = load.wait()
    finally:
        load.stop()
        churner.join(seconds + 120)
        stop.set()
    say(f"soak: {soak['rate_per_s']}/s, {soak['failed']} failed; churn {churn_out}")
    s.wait(lambda: not s.ready_pods("app=churn") and not [
        p for p in s.core.list_namespaced_pod(NS, label_selector="app=churn", _request_timeout=10).items], 120)
    # the API's pods are gone before the kubelets have torn every sandbox down (CNI DEL): on a
    # starved machine that takes minutes (at a load average of 100, DELs queued behind ADDs
    # for over a minute). What counts as left behind is what remains once no kubelet holds a
    # churn pod any more (up to --teardown-max seconds), and --settle seconds after that
    # (conntrack keeps a closed flow 10 s); the counts are then repeated until nothing is left
    # over or --settle-max seconds passed
    t_gone = time.monotonic()
    held = s.wait_kubelets_released(args.teardown_max)
    teardown_s = round(time.monotonic() - t_gone, 1)
    say(f"kubelets released the churn pods' sandboxes {teardown_s} s after the API"
        + (f"; still holding {held}" if held else ""))
    time.sleep(args.settle)
    t_settle = time.monotonic()
    while True:
        after = {n: s.counts(n) for n in s.nodes}
        if not any(leaks(before[n], after[n]) for n in s.nodes) or \
                time.monotonic() - t_settle >= args.settle_max:
            break
        time.sleep(5)
    settled_after = round(args.settle + time.monotonic() - t_settle, 1)
    flat = {}
    for n, samples in rss.items():
        counted = [m for t, m in samples if t >= min(WARMUP, seconds / 4)] or [m for _, m in samples]
        q = max(1, len(counted) // 4)
        first, last = statistics.mean(counted[:q]), statistics.mean(counted[-q:])
        flat[n] = {"first_quarter_mb": round(first, 1), "last_quarter_mb": round(last, 1),
                   "max_mb": max(counted), "change_pct": round((last - first) / first * 100, 1)}
    doc = {
        "bench": "soak", "minutes": args.minutes, "target_rate_per_s": args.rate, "workers": args.workers,
        "reference": ref, "soak": soak,
        "clusterip_vs_direct_rate": round(soak["rate_per_s"] / max(1e-9, ref["rate_per_s"]), 3),
        "churn": churn_out, "agent_rss_mb": rss, "rss_flat": flat,
        "rss_within_10pct": all(abs(v["change_pct"]) <= 10 for v in flat.values()),
        "leaks": {n: leaks(before[n], after[n]) for n in s.nodes}, "leaks_counted_after_s": settled_after,
        "kubelet_teardown_s": teardown_s, "kubelet_still_holding": held,
        "stale_conntrack": {n: s.stale_conntrack(n) for n in s.nodes},
        "churn_addresses": len(s.churn_ips),
    }
    png = RESULTS / (f"soak-{args.name}.png" if args.name else "soak.png")
    draw(doc, png)
    doc["png"] = str(png.relative_to(ROOT))
    return doc


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        targets, rate, seconds, interval = sys.argv[2:6]
        loadgen(targets.split(","), float(rate), float(seconds), float(interval))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--pods-per-minute", type=float, default=200.0)
    ap.add_argument("--rate", type=float, default=5000.0, help="new connections a second, all workers together")
    ap.add_argument("--workers", type=int, default=2, help="load generator processes")
    ap.add_argument("--reference-seconds", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds between the last churn pod gone "
                    "and the leak counts")
    ap.add_argument("--teardown-max", type=float, default=600.0,
                    help="seconds to wait for the kubelets to tear the churn pods' sandboxes down")
    ap.add_argument("--settle-max", type=float, default=120.0,
                    help="seconds the leak counts are repeated while something is left over")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between two RSS samples")
    ap.add_argument("--lab", default=None, help="use this running lab (default: one of its own)")
    ap.add_argument("--name", default="", help="suffix of the PNG's name (soak-NAME.png)")
    args = ap.parse_args()
    lab = args.lab or f"h16s{os.getpid()}"
    if not args.lab:
        say(f"lab {lab} up")
        up = lab_cli(lab, "up", "--nodes", "2", "--cni", "kubeweft", "--timeout", "200", timeout=300)
        if up.returncode != 0:
            lab_cli(lab, "down", timeout=120)
            raise SystemExit(f"lab up failed:\n{up.stdout}\n{up.stderr}")
    prev = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        doc = run(args, lab)
    finally:
        signal.signal(signal.SIGTERM, prev)
        if args.lab:
            delete_namespace(lab)
        else:
            lab_cli(lab, "down", timeout=120)
    for n in ("reference", "soak"):
        doc[n]["series"] = doc[n]["series"] if args.minutes * 60 <= 120 else doc[n]["series"][::10]
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
