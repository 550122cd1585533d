"""The root-netns guard (conftest.rootns_guard) can fail: its differ sees every kind of change.

Proven on a scratch namespace we change, never on the root one.
"""
from __future__ import annotations

import subprocess

import pytest

from .conftest import diff_snapshots, snapshot_netns
from .netns_helpers import scratch_netns

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def scratch():
    with scratch_netns("h3r") as (name,):
        yield name


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, timeout=10, capture_output=True)


def nft(ns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", *args], check=True, timeout=10, capture_output=True)


def kinds(problems: list[str]) -> set[str]:
    return {p.split(":")[0] for p in problems}


def test_unchanged_namespace_diffs_empty(scratch):
    assert diff_snapshots(snapshot_netns(scratch), snapshot_netns(scratch)) == []


def test_root_snapshot_is_stable():
    # No false alarms: two snapshots of the untouched root netns agree.
    assert diff_snapshots(snapshot_netns(None), snapshot_netns(None)) == []


def veth(ns: str, name: str) -> None:
    # (no dummy driver on this kernel: a veth pair, both ends up, has a carrier)
    ip(ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    ip(ns, "link", "set", f"{name}p", "up")


def test_every_kind_of_change_is_seen(scratch):
    veth(scratch, "d0")
    before = snapshot_netns(scratch)
    ip(scratch, "link", "set", "lo", "up")
    ip(scratch, "link", "set", "d0", "up")
    ip(scratch, "link", "add", "d1", "type", "bridge")
    ip(scratch, "addr", "add", "10.9.9.1/24", "dev", "d0")
    ip(scratch, "route", "add", "10.8.0.0/16", "via", "10.9.9.2", "table", "100")
    ip(scratch, "rule", "add", "from", "10.9.9.0/24", "table", "100", "priority", "100")
    subprocess.run(["ip", "netns", "exec", scratch, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                   check=True, timeout=10)
    nft(scratch, "add", "table", "inet", "h3guard")
    problems = diff_snapshots(before, snapshot_netns(scratch))
    text = "\n".join(problems)
    assert {"link changed", "link added", "addresses added", "routes added", "rules added",
            "sysctl changed", "nftables ruleset changed"} <= kinds(problems), text
    assert "link changed: lo" in text and "link added: d1" in text
    assert "10.9.9.1/24" in text and "10.8.0.0/16" in text
    assert "net.ipv4.ip_forward: 0 -> 1" in text
    assert "h3guard" in text


def test_removals_are_seen(scratch):
    veth(scratch, "d0")
    ip(scratch, "link", "set", "d0", "up")
    ip(scratch, "addr", "add", "10.9.9.1/24", "dev", "d0")
    before = snapshot_netns(scratch)
    ip(scratch, "link", "del", "d0")
    problems = diff_snapshots(before, snapshot_netns(scratch))
    assert {"link removed", "addresses removed", "routes removed"} <= kinds(problems), problems


def test_counters_are_ignored(scratch):
    ip(scratch, "link", "set", "lo", "up")
    nft(scratch, "add", "table", "inet", "h3guard")
    nft(scratch, "add", "chain", "inet", "h3guard", "out", "{ type filter hook output priority 0; }")
    nft(scratch, "add", "rule", "inet", "h3guard", "out", "counter")
    before = snapshot_netns(scratch)
    subprocess.run(["ip", "netns", "exec", scratch, "ping", "-c", "2", "-i", "0.2", "-W", "1", "127.0.0.1"],
                   check=True, timeout=10, capture_output=True)
    assert diff_snapshots(before, snapshot_netns(scratch)) == []


def test_vanished_netns_entry_is_seen():
    base = {"links": {}, "addresses": set(), "routes": set(), "rules": set(), "sysctls": {},
            "nftables": ""}
    before = dict(base, netns={"someone-elses"})
    after = dict(base, netns=set())
    assert diff_snapshots(before, after) == ["netns removed: someone-elses"]
    # a running lab's namespaces come and go with its pods: not the guard's business
    before = dict(base, netns={"lab7-pod-a", "other"}, labs={"lab7"})
    after = dict(base, netns={"other"}, labs=set())
    assert diff_snapshots(before, after) == []
