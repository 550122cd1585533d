"""kubeweft.proxy.health's rule (kube-proxy's): unhealthy only when a change has waited for a sync longer
than the timeout; proxy.conntrack's command lines."""
from __future__ import annotations

import time

from kubeweft.proxy.conntrack import argv_for
from kubeweft.proxy.health import ProxyHealth


def test_healthy_before_anything_happened():
    ok, body = ProxyHealth(timeout=0.05).status()
    assert ok and body["lastUpdated"] == "" and body["nodeEligible"] is True


def test_a_change_waiting_too_long_is_unhealthy_until_synced():
    h = ProxyHealth(timeout=0.05)
    h.updated()
    h.queued()
    assert h.status()[0]                       # queued, but not for long
    time.sleep(0.08)
    ok, body = h.status()
    assert not ok and body["lastUpdated"]
    h.updated()
    assert h.status()[0]


def test_queued_keeps_the_oldest_pending_change():
    h = ProxyHealth(timeout=0.05)
    h.queued()
    first = h.last_queued
    time.sleep(0.01)
    h.queued()
    assert h.last_queued == first


def test_conntrack_argv():
    assert argv_for("10.96.0.10", 53, "10.244.1.5") == [
        "conntrack", "-D", "-p", "udp", "--orig-dst", "10.96.0.10", "--orig-port-dst", "53",
        "--reply-src", "10.244.1.5"]
    assert argv_for(None, 30053, "10.244.1.5")[4:6] == ["--orig-port-dst", "30053"]


def test_parse_samples_reads_a_metrics_page_with_labels():
    from kubeweft.proxy.metrics import parse_samples
    page = ('# HELP x_total things\n# TYPE x_total counter\nx_total{b="2",a="1"} 3.0\n'
            '# TYPE h histogram\nh_bucket{le="+Inf"} 2.0\nh_count 2.0\nh_sum 0.5\n')
    assert parse_samples(page) == {'x_total{a="1",b="2"}': 3.0, 'h_bucket{le="+Inf"}': 2.0,
                                   "h_count": 2.0, "h_sum": 0.5}

