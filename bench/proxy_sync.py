"""The service proxy's own syncs at scale, with no lab: ServiceProxy on the in-memory nftables
(proxy/nft_fake.py), fed N Services x 3 endpoints as model values (the watch edge's output), then
timed as the agent times itself: the first full sync of an empty table, a restarted proxy's
full sync against the table in place (read back, render, diff: it writes nothing), and one
EndpointSlice change. Elements cross the real netlink codec (encoded here, decoded by the
Fake); the Fake's read back hands over its strings, so the kernel's dump and its decode are not
in the restart figure. With --netns (root) the same runs on the kernel, in a scratch network
namespace made and removed here. Prints JSON: CPU seconds of each
step, the agent's own log lines, the process's peak RSS, and with --profile the functions that
took the first sync's time (cProfile, by own time).

    .venv/bin/python bench/proxy_sync.py --services 100000 [--profile] [--netns]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubeweft.proxy.model import Endpoint, EndpointSlice, parse_endpoint_slice
from kubeweft.proxy.nft_fake import FakeNft
from kubeweft.proxy.nftables import Nft
from kubeweft.proxy.service_proxy import ServiceProxy

from bench.render_services import make

CFG = SimpleNamespace(node_name="n0", cluster_cidr="10.244.0.0/16", pod_cidr="10.244.1.0/24",
                      service_cidr="10.96.0.0/12", nodeport_addresses=(), scheduler="random")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def fed(nft, services: dict, slices: dict) -> ServiceProxy:
    """A proxier holding every Service and slice, as after its informers' first lists."""
    p = ServiceProxy(None, CFG, nft=nft)
    p.take_services(services)
    p.take_slices({(sl.namespace, sl.name): sl for group in slices.values() for sl in group})
    return p


def timed(step, lines: Lines) -> dict:
    lines.lines.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    sent = step()
    return {"cpu_s": round(time.process_time() - cpu, 3), "wall_s": round(time.perf_counter() - wall, 3),
            "commands": sent, "agent_log": list(lines.lines)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=30000)
    ap.add_argument("--profile", action="store_true", help="cProfile the first sync: the top functions")
    ap.add_argument("--netns", action="store_true", help="on the kernel, in a scratch netns (root)")
    args = ap.parse_args()
    if not args.netns:
        return measure(args, FakeNft())
    netns = f"kw-proxy-sync-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=10)
    try:
        return measure(args, Nft(netns))
    finally:
        subprocess.run(["ip", "netns", "del", netns], timeout=10, check=False)


def measure(args, nft) -> int:
    lines = Lines()
    logging.getLogger("kubeweft.proxy.service_proxy").addHandler(lines)
    logging.getLogger("kubeweft.proxy.service_proxy").setLevel(logging.INFO)
    services, slices = make(args.services)
    out: dict = {"services": args.services, "endpoints_per_service": 3, "kernel": args.netns}
    first = fed(nft, services, slices)
    prof = cProfile.Profile() if args.profile else None
    if prof is not None:
        prof.enable()
    out["first_sync"] = timed(first.sync, lines)
    if prof is not None:
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(20)
        out["first_sync_profile"] = [ln for ln in text.getvalue().splitlines() if ln.strip()][-21:]
    del first
    again = fed(nft, services, slices)
    out["restart_with_table"] = timed(again.sync, lines)
    key = ("bench", f"s{args.services // 2}")
    old = slices[key][0]
    new = EndpointSlice(old.namespace, old.name, old.service_name, old.ports,
                        (old.endpoints[0], Endpoint("10.250.0.1", node_name="n1"), old.endpoints[2]))
    raw = {"metadata": {"namespace": new.namespace, "name": new.name,
                        "labels": {"kubernetes.io/service-name": new.service_name}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
           "endpoints": [{"addresses": [e.ip], "nodeName": e.node_name} for e in new.endpoints]}
    again.take_slice((new.namespace, new.name), parse_endpoint_slice(raw), time.time())
    out["one_change"] = timed(again.sync, lines)
    out["python_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
