"""Every benchmark under bench/ still runs end to end, at a size that takes seconds: the real
lab, kernel and agents, printing its JSON result. The figures are not judged here (benchmarks are
never timed tests); that each bench runs and reports its headline fields is."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]

# bench file, small arguments, fields its JSON result must hold (dotted paths into it)
CASES = [
    ("render_services.py", ["--services", "500", "--netns"], ["agent_first_load_s", "loaded_service_ips"]),
    ("proxy_sync.py", ["--services", "300", "--profile"], ["first_sync.cpu_s", "restart_with_table.cpu_s",
                                                            "one_change.commands", "first_sync_profile"]),
    ("nft_events.py", ["--elements", "500"], ["add_start_to_seen_ms", "overflows"]),
    ("cni_add_del.py", ["--pods", "3", "--rounds", "1"],
     ["ratio_zipapp_to_reference.add_seq_p50", "ratio_frozen_to_reference.add_seq_p50"]),
    ("overlay.py", ["--seconds", "1", "--rr", "100", "--reps", "1", "--out", "bench/results/overlay-smoke.json"],
     ["ratios.kw-vxlan/flannel.throughput", "ratios.kw-host-gw/reference.rr_p50", "datapath.flannel.vxlan_udp_csum"]),
    ("services.py", ["--scales", "50,100", "--reference-scales", "50,100", "--latency-samples", "10", "--changes", "2",
                     "--name", "smoke"],
     ["seconds"]),
    # an IPv4 lab and a dual-stack one in turn, each with 100 Services, and the ratio of the two
    ("services.py", ["--ip-family", "both", "--scales", "100", "--name", "dualstack-smoke"],
     ["dual_vs_ipv4.100.VmRSS_MB", "dual.full_sync.100.per_family.IPv6.agent_first_sync_s",
      "ipv4.full_sync.100.agent_first_sync_s"]),
    ("netpol.py", ["--pods", "60", "--policies", "10", "--iperf-seconds", "1", "--name", "smoke"],
     ["throughput_ratio_with_vs_without",
      "verdicts.policy_add_event_to_kernel_ms.measured", "verdicts.converged_after_last_write_s.measured"]),
    ("soak.py", ["--minutes", "0.2", "--reference-seconds", "3", "--rate", "500", "--workers", "1",
                 "--teardown-max", "60", "--settle", "11", "--settle-max", "20", "--sample", "1", "--name", "smoke"],
     ["soak.failed", "reference.rate_per_s", "clusterip_vs_direct_rate", "rss_flat", "leaks", "stale_conntrack",
      "kubelet_teardown_s"]),
]


def last_json_object(out: str) -> dict:
    """The bench's result: the last top-level JSON object in its output (progress lines come first)."""
    decoder, found, i = json.JSONDecoder(), None, 0
    while (i := out.find("{", i)) >= 0:
        try:
            found, end = decoder.raw_decode(out, i)
            i = end
        except json.JSONDecodeError:
            i += 1
    assert isinstance(found, dict), f"no JSON object in the output:\n{out[-2000:]}"
    return found


def field(doc: dict, path: str):
    for part in path.split("."):
        doc = doc[part]
    return doc


@pytest.mark.parametrize("bench,args,fields", CASES, ids=[c[0] + ("-ip-family" if "--ip-family" in c[1] else "") for c in CASES])
def test_bench_runs_and_reports(bench, args, fields):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / bench), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, f"{bench} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    doc = last_json_object(proc.stdout)
    assert "skipped" not in doc, doc
    for f in fields:
        assert field(doc, f) is not None, f
