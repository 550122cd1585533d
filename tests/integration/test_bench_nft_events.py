"""bench/nft_events.py on the kernel, in scratch netns of its own (h22...): the netlink monitor
sees an element's data address at the commit, only for its table and set prefix, only in its
netns, and subscribes at once however large the ruleset already is (no cache fill)."""
import os
import subprocess
import time
import uuid

import pytest

from bench.nft_events import ElementMonitor, parse_new_elements

from .netns_helpers import scratch_netns

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.timeout(120)]

MAP = ("add map ip {t} backends-tcp-3 {{ typeof ip daddr . tcp dport . numgen random mod 3 : "
       "ip daddr . tcp dport ; }}")


def nft(netns: str, text: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=text, text=True,
                   capture_output=True, check=True, timeout=60)


def add_backend(netns: str, table: str, vip: str, ep: str, set_name: str = "backends-tcp-3") -> None:
    nft(netns, f"add element ip {table} {set_name} {{ {vip} . 80 . 0 : {ep} . 8080 }}\n")


@pytest.fixture
def netns_pair():
    """Two scratch netns, each with tables h22t and h22other holding the agent's map shape."""
    with scratch_netns("h22", 2) as names:
        for name in names:
            nft(name, "\n".join(["add table ip h22t", MAP.format(t="h22t"),
                                 "add map ip h22t other { type ipv4_addr : ipv4_addr ; }",
                                 "add table ip h22other", MAP.format(t="h22other")]) + "\n")
        yield names


def test_monitor_sees_the_data_address_of_its_table_and_sets_only(netns_pair):
    mine, other = netns_pair
    mon = ElementMonitor(mine, "h22t", "backends-")
    try:
        t0 = time.monotonic()
        add_backend(mine, "h22t", "10.96.0.1", "10.253.0.7")
        seen = mon.wait("10.253.0.7", 5.0)
        assert seen is not None and t0 < seen < t0 + 5.0
        assert "10.96.0.1" not in mon.seen            # the key's address is not the endpoint
        # the same add elsewhere: other table, other set, other netns -> nothing recorded
        add_backend(mine, "h22other", "10.96.0.2", "10.253.0.8")
        nft(mine, "add element ip h22t other { 10.96.0.3 : 10.253.0.9 }\n")
        add_backend(other, "h22t", "10.96.0.4", "10.253.0.10")
        add_backend(mine, "h22t", "10.96.0.5", "10.253.0.11")     # a marker after them, in order
        assert mon.wait("10.253.0.11", 5.0) is not None
        assert set(mon.seen) == {"10.253.0.7", "10.253.0.11"}
        assert mon.overflows == 0 and mon.error is None
    finally:
        mon.close()
    assert not mon.thread.is_alive()


def test_monitor_subscribes_at_once_over_a_large_map(netns_pair):
    """`nft monitor` reads every element before it subscribes; this must not."""
    mine = netns_pair[0]
    elems = ", ".join(f"10.96.{j // 250}.{j % 250 + 1} . 80 . {k} : 10.250.{j // 250}.{j % 250 + 1} . 8080"
                      for j in range(10000) for k in range(3))
    nft(mine, f"add element ip h22t backends-tcp-3 {{ {elems} }}\n")   # 30k elements
    mon = ElementMonitor(mine, "h22t", "backends-")
    try:
        assert mon.ready_s < 1.0
        assert mon.seen == {}                         # nothing read back from the ruleset
        add_backend(mine, "h22t", "10.96.200.1", "10.253.1.1")
        assert mon.wait("10.253.1.1", 5.0) is not None
    finally:
        mon.close()


def test_monitor_fails_loudly_for_a_missing_netns():
    with pytest.raises(RuntimeError, match="h22absent"):
        ElementMonitor(f"h22absent{uuid.uuid4().hex[:6]}", "h22t")


def test_parse_ignores_what_is_not_an_element():
    assert parse_new_elements(b"") == []
    assert parse_new_elements(b"\x00" * 8) == []
