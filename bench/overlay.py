"""Pod to pod across nodes: kubeweft (VXLAN and host-gw) against the reference plugins and a
flannel-style VXLAN, on the same node pair shape, with the same tools, in one run.

Three 2-node labs are brought up side by side (names bp<pid>{v,h,r}), each with pod a on node1
and pod b on node2:
  - kw-vxlan:    `--cni kubeweft --backend vxlan`
  - kw-host-gw:  `--cni kubeweft --backend host-gw`
  - reference:   `--cni reference` (bridge + host-local, a route per peer podCIDR via the peer's
                 node address, as host-gw)
  - flannel:     the reference lab's nodes and pods with a VXLAN device built by hand as flannel's
                 vxlan backend makes it (flannel.1: VNI 1, dstport 8472, nolearning, no outer UDP checksum as
                 flannel's netlink library asks by default; per peer an
                 FDB entry and a permanent neighbour, and the peer's podCIDR onlink via its VTEP
                 address; pods and cni0 at MTU underlay - 50, as flannel hands the bridge plugin).
                 The reference lab switches between the two by replacing the peer route and the
                 pods' MTU, and the path is checked (`ip route get`) before each measurement.
Per setup and repetition (setups interleaved within each repetition, so the shared machine's load
falls on all of them alike):
  - throughput: iperf3 (one TCP stream, server and client entered into the pods' namespaces by
    setns), pod a -> pod b, Gbit/s received;
  - request/response: 1-byte ping-pong over one TCP_NODELAY connection (netperf's TCP_RR shape),
    N round trips, p50/p90/p99 in microseconds.
The headline ratios pair like with like: kw-host-gw/reference and kw-vxlan/flannel, each from the
medians over the repetitions, with the targets (throughput >= 0.95, latency <= 1.05). The load
average is recorded with every sample. Writes bench/results/overlay.json and overlay.png, prints
the JSON. Every lab is removed at the end, also on failure or timeout.

    .venv/bin/python bench/overlay.py [--setups kw-vxlan,kw-host-gw,reference,flannel]
                                      [--reps 3] [--seconds 3] [--rr 2000]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
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

from kubeweft.lab import demo, lifecycle, netns
from kubeweft.lab.config import LabConfig
from kubeweft.lab.probe import read_pods

IPERF_PORT = 5201
RR_PORT = 5299
READY_TIMEOUT = 90.0
RESULTS = ROOT / "bench" / "results"
SETUPS = ("kw-vxlan", "kw-host-gw", "reference", "flannel")
# which lab each setup runs on: (suffix of the lab name, cni, kubeweft backend)
LABS = {"kw-vxlan": ("v", "kubeweft", "vxlan"), "kw-host-gw": ("h", "kubeweft", "host-gw"),
        "reference": ("r", "reference", "vxlan"), "flannel": ("r", "reference", "vxlan")}
# kubeweft setup -> the setup it is held against, like with like
PAIRS = {"kw-host-gw": "reference", "kw-vxlan": "flannel"}
TARGETS = {"throughput_ratio_min": 0.95, "rr_latency_ratio_max": 1.05}
FLANNEL_DEV = "flannel.1"
FLANNEL_VNI = 1
FLANNEL_PORT = 8472
VXLAN_OVERHEAD = 50              # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
REFERENCE_BRIDGE = "cni0"


def pctl(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, round(q * (len(s) - 1)))], 1)


# --- throughput -----------------------------------------------------------------------------------

def iperf(server_ns: str, client_ns: str, host: str, seconds: float) -> float:
    """Gbit/s received by the iperf3 server in `server_ns` from a client in `client_ns`."""
    server = subprocess.Popen(["iperf3", "-s", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=netns.preexec(server_ns))  # noqa: PLW1509
    try:
        deadline = time.monotonic() + 5
        while True:
            proc = netns.run(client_ns, ["iperf3", "-c", host, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"],
                             capture_output=True, text=True, timeout=seconds + 20, check=False)
            doc = json.loads(proc.stdout or "{}")
            # refused: the server is not listening yet
            if "error" not in doc or "refused" not in doc["error"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if "error" in doc or "end" not in doc:
            raise RuntimeError(f"iperf3 {client_ns} -> {host}: {doc.get('error') or proc.stderr}")
        return round(doc["end"]["sum_received"]["bits_per_second"] / 1e9, 2)
    finally:
        server.kill()
        server.wait(5)


# --- TCP request/response ----------------------------------------------------------------------

def tcp_rr(server_ns: str, client_ns: str, host: str, rounds: int, timeout: float = 30) -> dict:
    """p50/p90/p99 µs of `rounds` 1-byte round trips over one connection. Each socket is made on a
    thread inside its netns (lab.netns.entered) and stays there."""
    ready, err = threading.Event(), []

    def serve() -> None:
        try:
            with netns.entered(server_ns):
                ls = socket.create_server(("0.0.0.0", RR_PORT), reuse_port=True)
            ls.settimeout(timeout)
            ready.set()
            conn, _ = ls.accept()
            ls.close()
            conn.settimeout(timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with conn:
                while data := conn.recv(1):
                    conn.sendall(data)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            err.append(e)
            ready.set()

    samples: list[float] = []

    def client() -> None:
        try:
            with netns.entered(client_ns):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with s:
                s.connect((host, RR_PORT))
                for _ in range(100):          # warm-up: ARP/neighbour, route cache, slow start
                    s.sendall(b"x")
                    s.recv(1)
                for _ in range(rounds):
                    t0 = time.perf_counter_ns()
                    s.sendall(b"x")
                    if not s.recv(1):
                        raise RuntimeError("server closed")
                    samples.append((time.perf_counter_ns() - t0) / 1000)
        except Exception as e:  # noqa: BLE001
            err.append(e)

    st = threading.Thread(target=serve, daemon=True)
    st.start()
    ready.wait(timeout)
    ct = threading.Thread(target=client, daemon=True)
    ct.start()
    ct.join(timeout)
    st.join(5)
    if err or len(samples) != rounds:
        raise RuntimeError(f"tcp_rr {client_ns} -> {host}: {err or f'{len(samples)}/{rounds} round trips'}")
    return {"n": rounds, "p50_us": pctl(samples, 0.5), "p90_us": pctl(samples, 0.9),
            "p99_us": pctl(samples, 0.99)}


# --- labs and pods ------------------------------------------------------------------------------

def start_pods(cfg: LabConfig, placement: dict[str, str]) -> dict[str, dict]:
    """The lab's workload in pods name -> node; once Ready, name -> the kubelet's record of it
    (ip, netns)."""
    from kubernetes.client import CoreV1Api

    with lifecycle.api_client(cfg) as client:
        core = CoreV1Api(client)
        for name, node in placement.items():
            core.create_namespaced_pod(demo.NAMESPACE, demo.pod_manifest(name, node, {"app": name}, []),
                                       _request_timeout=10)
        demo.wait_ready(core, list(placement), READY_TIMEOUT)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        local = read_pods(cfg)
        if all(local.get(f"{demo.NAMESPACE}/{n}", {}).get("netns") for n in placement):
            return {n: local[f"{demo.NAMESPACE}/{n}"] for n in placement}
        if time.monotonic() > deadline:
            raise TimeoutError(f"no netns recorded for {sorted(placement)} in {READY_TIMEOUT:g} s")
        time.sleep(0.3)


def ip(ns: str, *args: str) -> str:
    proc = netns.run(ns, ["ip", *args], capture_output=True, text=True, timeout=15, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} (in {ns}): {proc.stderr.strip()}")
    return proc.stdout


def link_mtu(ns: str, dev: str) -> int:
    return json.loads(ip(ns, "-j", "link", "show", dev))[0]["mtu"]


class Lab:
    """One running lab with pod a on node1 and pod b on node2."""

    def __init__(self, cfg: LabConfig):
        self.cfg = cfg
        self.pods: dict[str, dict] = {}

    def node(self, i: int) -> str:
        return self.cfg.node_netns(f"node{i}")

    def pod_cidr(self, i: int) -> ipaddress.IPv4Network:
        pod = self.pods["ab"[i - 1]]
        return ipaddress.ip_network(f"{pod['ip']}/{self.cfg.node_cidr_prefix}", strict=False)

    def path(self) -> str:
        """The device node1 sends pod b's packets out of."""
        return json.loads(ip(self.node(1), "-j", "route", "get", self.pods["b"]["ip"]))[0]["dev"]


# --- the flannel-style VXLAN on the reference lab's nodes -------------------------------------------

def plan_flannel(lab: Lab) -> dict[int, list[tuple[str, ...]]]:
    """Per node: the `ip`/`bridge` argv lists that give it flannel's VXLAN device towards the other
    node (the device, its VTEP address, the peer's FDB entry and neighbour). The peer's MAC is
    fixed here (flannel reads it from the peer's Node annotation; the kernel's random one would
    need a second pass)."""
    macs = {1: "0a:58:0a:f4:00:01", 2: "0a:58:0a:f4:00:02"}
    mtu = lab.cfg.mtu - VXLAN_OVERHEAD
    plans = {}
    for i, peer in ((1, 2), (2, 1)):
        vtep, peer_vtep = lab.pod_cidr(i).network_address, lab.pod_cidr(peer).network_address
        plans[i] = [
            ("ip", "link", "add", FLANNEL_DEV, "address", macs[i], "mtu", str(mtu), "type", "vxlan",
             "id", str(FLANNEL_VNI), "local", lab.cfg.node_ip(i), "dev", "eth0", "dstport", str(FLANNEL_PORT),
             "nolearning", "noudpcsum"),
            ("ip", "addr", "add", f"{vtep}/32", "dev", FLANNEL_DEV),
            ("ip", "link", "set", FLANNEL_DEV, "up"),
            ("bridge", "fdb", "append", macs[peer], "dev", FLANNEL_DEV, "dst", lab.cfg.node_ip(peer)),
            ("ip", "neigh", "replace", str(peer_vtep), "lladdr", macs[peer], "dev", FLANNEL_DEV,
             "nud", "permanent"),
        ]
    return plans


def build_flannel(lab: Lab) -> None:
    for i, steps in plan_flannel(lab).items():
        for argv in steps:
            proc = netns.run(lab.node(i), list(argv), capture_output=True, text=True, timeout=15, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} (in {lab.node(i)}): {proc.stderr.strip()}")


def route_reference_lab(lab: Lab, mode: str) -> None:
    """Switch the reference lab between its own host-gw routes ("reference") and the flannel
    VXLAN ("flannel"): the peer's podCIDR route on each node, and the MTU of the pods' eth0 and
    of the bridge ports (flannel's bridge plugin is given the VXLAN MTU)."""
    mtu = lab.cfg.mtu - (VXLAN_OVERHEAD if mode == "flannel" else 0)
    for i, peer in ((1, 2), (2, 1)):
        cidr = str(lab.pod_cidr(peer))
        if mode == "flannel":
            ip(lab.node(i), "route", "replace", cidr, "via", str(lab.pod_cidr(peer).network_address),
               "dev", FLANNEL_DEV, "onlink")
        else:
            ip(lab.node(i), "route", "replace", cidr, "via", lab.cfg.node_ip(peer), "dev", "eth0")
        for port in json.loads(ip(lab.node(i), "-j", "link", "show", "master", REFERENCE_BRIDGE)):
            ip(lab.node(i), "link", "set", port["ifname"], "mtu", str(mtu))
        ip(lab.pods["ab"[i - 1]]["netns"], "link", "set", "eth0", "mtu", str(mtu))
    want = FLANNEL_DEV if mode == "flannel" else "eth0"
    if lab.path() != want:
        raise RuntimeError(f"{lab.cfg.name}: node1 routes pod b via {lab.path()}, not {want}")


def describe(lab: Lab) -> dict:
    """What node1's forwarding path holds for this setup: the nftables rules of its ruleset, the
    bridge's netfilter hooks (br_netfilter), and the overlay device's outer UDP checksum."""
    node = lab.node(1)
    proc = netns.run(node, ["nft", "-j", "list", "ruleset"], capture_output=True, text=True, timeout=30, check=False)
    items = json.loads(proc.stdout or "{}").get("nftables", [])
    out = {"nft_rules": sum("rule" in i for i in items),
           "nft_base_chains": sum("hook" in i.get("chain", {}) for i in items)}
    nf = netns.run(node, ["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"], capture_output=True, text=True,
                   timeout=15, check=False)
    out["bridge_nf_call_iptables"] = nf.stdout.strip() or None
    dev = lab.path()
    info = json.loads(ip(node, "-d", "-j", "link", "show", dev))[0].get("linkinfo", {})
    if info.get("info_kind") == "vxlan":
        out["vxlan_udp_csum"] = bool(info["info_data"].get("udp_csum"))
    return out


# --- one run --------------------------------------------------------------------------------

def sample(lab: Lab, setup: str, seconds: float, rounds: int) -> dict:
    """One repetition of one setup: throughput and request/response, a -> b."""
    if setup in ("reference", "flannel"):
        route_reference_lab(lab, setup)
    a, b = lab.pods["a"], lab.pods["b"]
    load = os.getloadavg()[0]
    return {"load1": round(load, 2), "path": lab.path(), "pod_mtu": link_mtu(a["netns"], "eth0"),
            "throughput_gbps": iperf(b["netns"], a["netns"], b["ip"], seconds),
            "tcp_rr": tcp_rr(b["netns"], a["netns"], b["ip"], rounds)}


def summarise(samples: list[dict]) -> dict:
    """Medians over the repetitions."""
    med = statistics.median
    return {"throughput_gbps": round(med(s["throughput_gbps"] for s in samples), 2),
            "rr_p50_us": round(med(s["tcp_rr"]["p50_us"] for s in samples), 1),
            "rr_p90_us": round(med(s["tcp_rr"]["p90_us"] for s in samples), 1),
            "pod_mtu": samples[0]["pod_mtu"], "path": samples[0]["path"],
            "load1": [s["load1"] for s in samples]}


def compare(summary: dict[str, dict]) -> dict:
    """kubeweft over its counterpart, for each pair both measured, against the targets."""
    out = {}
    for kw, ref in PAIRS.items():
        if kw not in summary or ref not in summary:
            continue
        k, r = summary[kw], summary[ref]
        ratios = {"throughput": round(k["throughput_gbps"] / r["throughput_gbps"], 3),
                  "rr_p50": round(k["rr_p50_us"] / r["rr_p50_us"], 3),
                  "rr_p90": round(k["rr_p90_us"] / r["rr_p90_us"], 3)}
        ratios["meets_targets"] = (ratios["throughput"] >= TARGETS["throughput_ratio_min"]
                                   and ratios["rr_p50"] <= TARGETS["rr_latency_ratio_max"]
                                   and ratios["rr_p90"] <= TARGETS["rr_latency_ratio_max"])
        out[f"{kw}/{ref}"] = ratios
    return out


def draw(doc: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    setups = list(doc["summary"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, unit in ((a, "throughput_gbps", "Gbit/s (higher is better)"),
                          (b, "rr_p50_us", "TCP RR p50 and p90, µs (lower is better)")):
        for x, setup in enumerate(setups):
            reps = doc["samples"][setup]
            ys = ([s["throughput_gbps"] for s in reps] if key == "throughput_gbps"
                  else [s["tcp_rr"]["p50_us"] for s in reps])
            ax.bar(x, doc["summary"][setup][key], color="tab:blue" if setup.startswith("kw") else "tab:gray")
            ax.scatter([x] * len(ys), ys, color="black", s=10, zorder=3)
            if key == "rr_p50_us":
                ax.scatter([x], [doc["summary"][setup]["rr_p90_us"]], marker="_", s=300, color="tab:red",
                           zorder=3)
        ax.set_xticks(range(len(setups)), setups)
        ax.set_ylabel(unit)
    loads = [load for s in doc["summary"].values() for load in s["load1"]]
    fig.suptitle(f"pod to pod across nodes, {doc['reps']} interleaved repetitions (medians; dots: each), "
                 f"load average {min(loads):.1f}-{max(loads):.1f}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--reps", type=int, default=3, help="repetitions, the setups interleaved in each")
    p.add_argument("--seconds", type=float, default=3.0, help="iperf3 duration per sample")
    p.add_argument("--rr", type=int, default=2000, help="TCP round trips per sample")
    p.add_argument("--timeout", type=float, default=600.0, help="the whole run")
    p.add_argument("--out", default=str(RESULTS / "overlay.json"), help="the JSON (the PNG beside it)")
    args = p.parse_args(argv)
    setups = args.setups.split(",")
    if unknown := set(setups) - set(SETUPS):
        p.error(f"unknown setups {sorted(unknown)}: choose from {', '.join(SETUPS)}")
    if os.geteuid() != 0:
        print("bench/overlay.py needs root (network namespaces)", file=sys.stderr)
        return 2

    def too_long(*_):
        raise TimeoutError(f"bench/overlay.py: over {args.timeout:.0f} s")
    signal.signal(signal.SIGALRM, too_long)
    # SIGTERM too unwinds through the `finally` below, which brings the labs down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.alarm(int(args.timeout))
    labs: dict[str, Lab] = {}
    samples: dict[str, list[dict]] = {s: [] for s in setups}
    t0 = time.monotonic()
    try:
        for setup in setups:
            suffix, cni, backend = LABS[setup]
            name = f"bp{os.getpid()}{suffix}"
            if name not in labs:
                print(f"bench/overlay: lab {name} ({cni}, {backend}) ...", file=sys.stderr, flush=True)
                lab = labs[name] = Lab(LabConfig(name=name, nodes=2, cni=cni, backend=backend))
                lifecycle.up(lab.cfg, timeout=120)
                lab.pods = start_pods(lab.cfg, {"a": "node1", "b": "node2"})
                if cni == "reference" and "flannel" in setups:
                    build_flannel(lab)
        datapath = {}
        for setup in setups:
            lab = labs[f"bp{os.getpid()}{LABS[setup][0]}"]
            if setup in ("reference", "flannel"):
                route_reference_lab(lab, setup)
            datapath[setup] = describe(lab)
        for rep in range(args.reps):
            for setup in setups:
                lab = labs[f"bp{os.getpid()}{LABS[setup][0]}"]
                s = samples[setup]
                s.append(sample(lab, setup, args.seconds, args.rr))
                print(f"bench/overlay: rep {rep + 1} {setup}: {s[-1]['throughput_gbps']} Gbit/s, "
                      f"RR p50 {s[-1]['tcp_rr']['p50_us']} us (load {s[-1]['load1']})", file=sys.stderr, flush=True)
    finally:
        signal.alarm(0)
        for name in labs:
            lifecycle.down(name)
    summary = {s: summarise(samples[s]) for s in setups}
    doc = {"bench": "overlay", "iperf3_seconds": args.seconds, "rr_rounds": args.rr, "reps": args.reps,
           "elapsed_s": round(time.monotonic() - t0, 1), "targets": TARGETS,
           "ratios": compare(summary), "summary": summary, "datapath": datapath, "samples": samples}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    draw(doc, out.with_suffix(".png"))
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
