"""Cross-node pod networking against the bare underlay, for the VXLAN and host-gw backends.

For each backend it brings up its own 2-node lab (`--cni kubeweft --backend B`, names h7b*),
puts pod a on node1 and pod b on node2, and measures in the same run:
  - throughput: iperf3 (server and client entered into the namespaces by setns), pod a -> pod b
    across the overlay, and node1 -> node2 on the underlay;
  - TCP request/response latency: 1-byte ping-pong over one TCP_NODELAY connection, N round
    trips, p50/p99 in microseconds, pod to pod and node to node.
Prints one JSON document (with the ratios overlay/underlay) on stdout and a text bar chart on
stderr. Every lab is removed at the end, also on failure or timeout.

    .venv/bin/python bench/overlay.py [--backends vxlan,host-gw] [--seconds 3] [--rr 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
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
    """p50/p99 µs of `rounds` 1-byte round trips over one connection. Each socket is made on a
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
    return {"n": rounds, "p50_us": pctl(samples, 0.5), "p99_us": pctl(samples, 0.99)}


# --- one backend ------------------------------------------------------------------------------

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


def measure(backend: str, seconds: float, rounds: int, name: str) -> dict:
    cfg = LabConfig(name=name, nodes=2, cni="kubeweft", backend=backend)
    lifecycle.up(cfg, timeout=120)
    try:
        pods = start_pods(cfg, {"a": "node1", "b": "node2"})
        a, b = pods["a"], pods["b"]
        n1, n2 = cfg.node_netns("node1"), cfg.node_netns("node2")
        link = netns.run(a["netns"], ["ip", "-j", "link", "show", "eth0"], capture_output=True, text=True,
                         timeout=15, check=True)
        out = {"pod_mtu": json.loads(link.stdout)[0]["mtu"],
               "throughput_gbps": {"pod_to_pod": iperf(b["netns"], a["netns"], b["ip"], seconds),
                                   "node_to_node": iperf(n2, n1, cfg.node_ip(2), seconds)},
               "tcp_rr": {"pod_to_pod": tcp_rr(b["netns"], a["netns"], b["ip"], rounds),
                          "node_to_node": tcp_rr(n2, n1, cfg.node_ip(2), rounds)}}
        t, rr = out["throughput_gbps"], out["tcp_rr"]
        out["ratios"] = {
            "throughput_pod_over_node": round(t["pod_to_pod"] / t["node_to_node"], 3),
            "rr_p50_pod_over_node": round(rr["pod_to_pod"]["p50_us"] / rr["node_to_node"]["p50_us"], 3),
            "rr_p99_pod_over_node": round(rr["pod_to_pod"]["p99_us"] / rr["node_to_node"]["p99_us"], 3)}
        return out
    finally:
        lifecycle.down(name)


def bars(results: dict) -> str:
    """A small text bar chart: throughput (longer is better) and RR p50 (shorter is better)."""
    lines = []
    for title, get, unit in (("throughput", lambda r, k: r["throughput_gbps"][k], "Gbit/s"),
                             ("TCP RR p50", lambda r, k: r["tcp_rr"][k]["p50_us"], "us")):
        rows = [(f"{backend:8} {k.replace('_to_', '->'):12}", get(r, k))
                for backend, r in results.items() for k in ("pod_to_pod", "node_to_node")]
        top = max(v for _, v in rows) or 1
        lines.append(f"{title} ({unit})")
        lines += [f"  {label} {'#' * max(1, round(40 * v / top)):<40} {v}" for label, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="vxlan,host-gw")
    p.add_argument("--seconds", type=float, default=3.0, help="iperf3 duration per path")
    p.add_argument("--rr", type=int, default=2000, help="TCP round trips per path")
    p.add_argument("--timeout", type=float, default=170.0, help="the whole run")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/overlay.py needs root (network namespaces)", file=sys.stderr)
        return 2

    def too_long(*_):
        raise TimeoutError(f"bench/overlay.py: over {args.timeout:.0f} s")
    signal.signal(signal.SIGALRM, too_long)
    # SIGTERM too unwinds through the labs' `with` blocks, which bring them down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.alarm(int(args.timeout))           # the labs' `with` blocks still bring them down
    results: dict[str, dict] = {}
    t0 = time.monotonic()
    try:
        for i, backend in enumerate(args.backends.split(",")):
            print(f"bench/overlay: {backend} ...", file=sys.stderr, flush=True)
            results[backend] = measure(backend, args.seconds, args.rr, f"h7b{os.getpid()}x{i}")
    finally:
        signal.alarm(0)
    doc = {"bench": "overlay", "iperf3_seconds": args.seconds, "rr_rounds": args.rr,
           "elapsed_s": round(time.monotonic() - t0, 1), "results": results}
    print(json.dumps(doc, indent=2))
    print(bars(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
