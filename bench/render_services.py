"""The service proxy's pure path at scale: render + diff of N Services x 3 endpoints, one
EndpointSlice change, and (with --netns, as root) loading the transaction into nft in a scratch
network namespace made and removed here. Prints JSON.

With --netns: nft_full_load_* is the whole table as ONE transaction through `nft -f` (for
reference: what a single transaction costs); nft_one_change_ms is one change through the
agent's libnftables context; agent_first_load_* is the agent's own first sync of an empty table
(render, diff, structure through libnftables, the elements over netlink: nft_transaction.
apply_transaction), wall clock and CPU seconds (the kernel's work included: it runs in the send);
agent_vs_nft_full_load_cpu compares it with render + diff + `nft -f` of the same table.
CPU seconds say more than wall clock on a busy machine.

    .venv/bin/python bench/render_services.py --services 30000 [--netns]
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubeweft.proxy import diff_services as d
from kubeweft.proxy import render_services as r
from kubeweft.proxy.model import Endpoint, EndpointSlice, Service, ServicePort, SlicePort
from kubeweft.proxy.nft_transaction import Transaction, apply_transaction
from kubeweft.proxy.scheduler import SCHEDULERS

NETNS = "kw-render-bench"


def make(n: int, eps: int = 3) -> tuple[dict, dict]:
    services, slices = {}, {}
    for i in range(n):
        key = ("bench", f"s{i}")
        vip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        services[key] = Service("bench", f"s{i}", (vip,), (ServicePort("http", "tcp", 80),))
        slices[key] = [EndpointSlice("bench", f"s{i}-x", f"s{i}", (SlicePort("http", "tcp", 8080),),
                                     tuple(Endpoint(f"10.{200 + j}.{i // 256 % 256}.{i % 256}", node_name=f"n{j}")
                                           for j in range(eps)))]
    return services, slices


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=30000)
    ap.add_argument("--netns", action="store_true", help="also load into nft in a scratch netns (root)")
    ap.add_argument("--scheduler", default="random", choices=SCHEDULERS,
                    help="every Service's load-balancing scheduler (the node's default)")
    args = ap.parse_args()
    ctx = r.NodeContext("n0", service_cidr="10.96.0.0/12", scheduler=args.scheduler)
    services, slices = make(args.services)
    gc.disable()        # as the agent's full syncs run (service_proxy._gc_paused)
    out: dict = {"services": args.services, "endpoints_per_service": 3, "scheduler": args.scheduler}
    cpu0, t0 = time.process_time(), time.perf_counter()
    agg = r.Aggregate()
    for key, svc in services.items():
        agg.put(key, r.render_service(svc, slices[key], ctx), track=False)
    t1 = time.perf_counter()
    diff, applied = d.diff_full(d.empty_applied(), agg)
    cmds = Transaction(r.SERVICE_TABLE, r.render_base(ctx) + diff)
    t2 = t3 = time.perf_counter()
    out.update(render_diff_cpu_s=round(time.process_time() - cpu0, 3), render_s=round(t1 - t0, 3), diff_s=round(t2 - t1, 3), commit_s=round(t3 - t2, 3),
               commands=len(cmds), text_mb=round(sum(map(len, cmds.lines())) / 1e6, 1))
    # one EndpointSlice change: the second endpoint of one Service moves
    key = ("bench", "s123")
    old = slices[key][0]
    new = EndpointSlice(old.namespace, old.name, old.service_name, old.ports,
                        (old.endpoints[0], Endpoint("10.250.0.1", node_name="n1"), old.endpoints[2]))
    t4 = time.perf_counter()
    t = agg.put(key, r.render_service(services[key], [new], ctx))
    one = d.diff_touched(applied, agg, t)
    t5 = time.perf_counter()
    out.update(one_change_ms=round((t5 - t4) * 1000, 2), one_change_commands=len(one))
    if args.netns:
        subprocess.run(["ip", "netns", "add", NETNS], check=True, timeout=10)
        try:
            def nft(text: str) -> float:
                t = time.perf_counter()
                p = subprocess.run(["ip", "netns", "exec", NETNS, "nft", "-f", "-"], input=text, text=True,
                                   capture_output=True, timeout=120, check=False)
                if p.returncode:
                    raise SystemExit(p.stderr[:2000])
                return time.perf_counter() - t
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            out["nft_full_load_s"] = round(nft(cmds.text()), 3)
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            out["nft_full_load_cpu_s"] = round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3)
            # the agent's way: one libnftables context bound to the netns, the change in-process
            from kubeweft.proxy.nftables import Nft
            ctx_nft = Nft(NETNS)
            d.commit_touched(applied, agg, t)
            t_back = agg.put(key, r.render_service(services[key], [old], ctx))
            back = d.diff_touched(applied, agg, t_back)
            d.commit_touched(applied, agg, t_back)
            times = []
            for i in range(6):
                t0 = time.perf_counter()
                ctx_nft.run(Transaction(r.SERVICE_TABLE, one if i % 2 == 0 else back))
                times.append(round((time.perf_counter() - t0) * 1000, 2))
            out["nft_one_change_ms"] = times
            # the agent's first sync of an empty table (ServiceProxy.sync, full): render, diff,
            # structure through libnftables and the elements over netlink
            subprocess.run(["ip", "netns", "exec", NETNS, "nft", "delete", "table", r.T], check=True, timeout=30)
            cpu0, t0 = time.process_time(), time.perf_counter()
            agg2 = r.Aggregate()
            for k, svc in services.items():
                agg2.put(k, r.render_service(svc, slices[k], ctx), track=False)
            diff2, _ = d.diff_full(d.empty_applied(), agg2, unknown_chains=True)
            t1 = time.perf_counter()
            apply_transaction(ctx_nft, Transaction(r.SERVICE_TABLE, r.render_base(ctx) + diff2), empty=True)
            out["agent_first_load_s"] = round(time.perf_counter() - t0, 3)
            out["agent_first_load_cpu_s"] = round(time.process_time() - cpu0, 3)
            out["agent_first_load_apply_s"] = round(time.perf_counter() - t1, 3)
            out["agent_vs_nft_full_load_cpu"] = round(out["agent_first_load_cpu_s"]
                                                      / (out["nft_full_load_cpu_s"] + out["render_diff_cpu_s"]), 2)
            p = subprocess.run(["ip", "netns", "exec", NETNS, "nft", "list", "map", r.T, "service-ips"],
                               capture_output=True, text=True, timeout=60, check=True)
            out["loaded_service_ips"] = p.stdout.count(": goto ")
        finally:
            subprocess.run(["ip", "netns", "del", NETNS], timeout=10, check=False)
    out["python_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
