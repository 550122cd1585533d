"""kubeweft.proxy.conntrack_settings: kube-proxy's conntrack flags -> the sysctls to raise, and
their apply against a /proc/sys tree of files (the real one is exercised by the lab test)."""
from __future__ import annotations

import argparse

import pytest
from kubeweft.proxy import conntrack_settings as cs


def test_kube_proxy_defaults():
    want = cs.plan_conntrack_sysctls(cs.ConntrackConfig(), cores=2)
    assert want == {"nf_conntrack_max": 131072,                # 32768 x 2 is below the minimum
                    "nf_conntrack_tcp_timeout_established": 86400,
                    "nf_conntrack_tcp_timeout_close_wait": 3600}


def test_max_scales_with_cores_and_zero_leaves_a_sysctl_alone():
    cfg = cs.ConntrackConfig(max_per_core=65536, udp=60, udp_stream=180, tcp_be_liberal=True,
                             tcp_close_wait=0)
    want = cs.plan_conntrack_sysctls(cfg, cores=8)
    assert want["nf_conntrack_max"] == 524288
    assert want["nf_conntrack_udp_timeout"] == 60 and want["nf_conntrack_udp_timeout_stream"] == 180
    assert want["nf_conntrack_tcp_be_liberal"] == 1
    assert "nf_conntrack_tcp_timeout_close_wait" not in want
    assert "nf_conntrack_max" not in cs.plan_conntrack_sysctls(cs.ConntrackConfig(max_per_core=0), 8)


def test_values_are_only_raised():
    want = {"a": 10, "b": 10, "c": 10}
    assert cs.plan_writes(want, {"a": 5, "b": 10, "c": 20}) == {"a": 10}
    assert cs.plan_writes(want, {"a": None}) == {}


def test_flags_take_go_durations():
    p = argparse.ArgumentParser()
    cs.add_flags(p)
    args = p.parse_args(["--conntrack-tcp-timeout-established", "24h0m0s", "--conntrack-udp-timeout", "30s",
                         "--conntrack-tcp-timeout-close-wait", "1h30m", "--conntrack-tcp-be-liberal",
                         "--conntrack-min", "1000", "--conntrack-max-per-core", "0"])
    cfg = cs.config_from_args(args)
    assert cfg == cs.ConntrackConfig(0, 1000, 86400, 5400, 30, 0, True)
    for bad in ("10x", "5", "h"):
        if bad.isdigit():
            assert cs.parse_duration(bad) == 5
            continue
        with pytest.raises(argparse.ArgumentTypeError):
            cs.parse_duration(bad)


def test_apply_raises_writable_sysctls_and_skips_read_only_ones(tmp_path):
    nf = tmp_path / "net" / "netfilter"
    nf.mkdir(parents=True)
    for name, value in (("nf_conntrack_max", 1000), ("nf_conntrack_tcp_timeout_established", 432000),
                        ("nf_conntrack_tcp_timeout_close_wait", 60)):
        (nf / name).write_text(f"{value}\n")
    (nf / "nf_conntrack_max").chmod(0o444)
    done = cs.apply_conntrack_settings(cs.ConntrackConfig(), cores=2, proc_sys=tmp_path)
    assert done == {"nf_conntrack_tcp_timeout_close_wait": 3600}
    assert (nf / "nf_conntrack_tcp_timeout_close_wait").read_text() == "3600\n"
    assert (nf / "nf_conntrack_tcp_timeout_established").read_text() == "432000\n"    # larger: kept
