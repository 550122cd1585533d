"""The agent's kube-proxy health and metrics endpoints, over real sockets in every node:
/healthz and /livez on 10256, Prometheus /metrics on 10249 with kube-proxy's metric names, and
the sync metrics moving when a Service changes. Once per IP family (klab): on an IPv6 or a
dual-stack lab the health port answers at the node's IPv6 address and ::1, /metrics at ::1, and
the IPv6 proxier's sync metrics move.
"""
from __future__ import annotations

import json

import pytest
from kubeweft.proxy.metrics import parse_samples

from .services_helpers import cluster, http_get, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NS = "h10-health"
NODES = ["node1", "node2", "node3"]
# kube-proxy's names for the same meanings (pkg/proxy/metrics)
KUBE_PROXY_METRICS = [
    "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
    "kubeproxy_sync_proxy_rules_duration_seconds_count",
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    "kubeproxy_network_programming_duration_seconds_bucket",
]


@pytest.fixture(scope="module")
def c(klab):
    with cluster(klab, NS) as cl:
        cl.version = klab.version
        yield cl


def loopback(c) -> str:
    return "::1" if c.version == 6 else "127.0.0.1"


def metrics(c, node: str, address: str | None = None) -> dict[str, float]:
    status, body = http_get(c.cfg.node_netns(node), address or loopback(c), 10249, "/metrics")
    assert status == 200, (status, body[:300])
    return parse_samples(body)


def base(samples: dict[str, float]) -> set[str]:
    return {k.partition("{")[0] for k in samples}


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("path", ["/healthz", "/livez"])
def test_healthz_and_livez(c, node, path):
    status, body = wait_for(f"{path} 200 on {node}", lambda: (
        r if (r := http_get(c.cfg.node_netns(node), loopback(c), 10256, path))[0] == 200 else None))
    assert status == 200
    if path == "/healthz" and body.strip().startswith("{"):
        doc = json.loads(body)
        assert "lastUpdated" in doc, doc        # kube-proxy's /healthz body


@pytest.mark.parametrize("node", NODES)
def test_healthz_on_the_node_address(c, node):
    # kube-proxy binds 0.0.0.0:10256 ([::]:10256 too on a node with IPv6): load balancers probe
    # it from outside, at the node's address of their family
    i = NODES.index(node) + 1
    address = next(ip for ip in c.cfg.node_internal_ips(i) if (":" in ip) == (c.version == 6))
    status, _ = http_get(c.cfg.external_netns, address, 10256, "/healthz")
    assert status == 200, address


@pytest.mark.parametrize("node", NODES)
def test_metrics_have_kube_proxy_names(c, node):
    names = base(metrics(c, node))
    missing = [m for m in KUBE_PROXY_METRICS if m not in names]
    assert not missing, f"missing {missing}; kubeproxy metrics present: {sorted(n for n in names if 'kubeproxy' in n)}"
    assert any(n.startswith("kubeproxy_sync_proxy_rules_nftables") for n in names), sorted(names)


def test_sync_metrics_move_on_a_change(c):
    before = metrics(c, "node2")
    count = f'kubeproxy_sync_proxy_rules_duration_seconds_count{{ip_family="IPv{c.version}"}}'
    last = f'kubeproxy_sync_proxy_rules_last_timestamp_seconds{{ip_family="IPv{c.version}"}}'
    c.start_pods(web={"web-1": "node1"})
    # a Service of the family under test (on a dual-stack lab: its IPv6 ClusterIP)
    extra = {"ipFamilies": ["IPv6"]} if c.version == 6 else {}
    svc = c.service("web", [svc_port(80, "http")], selector={"app": "web"}, **extra)
    assert (":" in svc.ip) == (c.version == 6), svc.ip
    c.wait_endpoints("web", 1)
    c.wait_answer("node:node2", svc.ip, 80)
    after = wait_for("a new sync counted", lambda: (
        m if (m := metrics(c, "node2")).get(count, 0) > before.get(count, 0) else None))
    assert after[last] >= before.get(last, 0)
    npd = "kubeproxy_network_programming_duration_seconds_count"
    assert after.get(npd, 0) >= 1, "an EndpointSlice change was programmed and measured"
