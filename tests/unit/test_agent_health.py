"""The agent's /livez, /readyz and /healthz (kubeweft.proxy.health.AgentHealth), over a real HTTP
server on loopback; and what the agent takes from its Node object."""
from __future__ import annotations

import http.client
import json
import time

import pytest
from kubeweft.proxy.agent import NodeFacts, node_facts
from kubeweft.proxy.health import AgentHealth, ProxyHealth, render_readiness, serve_agent_health


def get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture
def served():
    health = AgentHealth()
    server = serve_agent_health("127.0.0.1:0", health)
    try:
        yield health, server.httpd.server_address[1]
    finally:
        server.close()


def test_live_from_the_start_ready_only_once_every_expected_check_passes(served):
    health, port = served
    health.expect("cni", "services", "policy")
    assert get(port, "/livez")[0] == 200
    status, body = get(port, "/readyz")
    assert status == 503 and body["checks"] == {"cni": "waiting", "services": "waiting", "policy": "waiting"}
    synced = {"services": False}
    health.ready_when("services", lambda: synced["services"])
    health.ready_when("policy", lambda: True)
    health.ready_when("cni", lambda: True)
    assert get(port, "/readyz") == (503, {"ready": False, "live": True, "checks": {
        "cni": "ok", "services": "waiting", "policy": "ok"}})
    synced["services"] = True
    assert get(port, "/readyz")[0] == 200


def test_a_check_that_raises_is_not_ready_and_says_why(served):
    health, port = served

    def refused():
        raise ConnectionRefusedError("agent.sock")
    health.ready_when("cni", refused)
    status, body = get(port, "/readyz")
    assert status == 503 and body["checks"]["cni"] == "error: ConnectionRefusedError: agent.sock"


def test_healthz_is_the_service_proxys_and_503_until_it_runs(served):
    health, port = served
    assert get(port, "/healthz")[0] == 503
    health.proxy = ProxyHealth(timeout=0.05)
    status, body = get(port, "/healthz")
    assert status == 200 and "lastUpdated" in body
    assert get(port, "/nope")[0] == 404


def test_a_stale_service_proxy_is_neither_live_nor_ready(served):
    health, port = served
    health.proxy = ProxyHealth(timeout=0.05)
    health.ready_when("cni", lambda: True)
    health.proxy.updated()
    health.proxy.queued()
    time.sleep(0.08)
    assert get(port, "/livez")[0] == 503
    assert get(port, "/readyz")[0] == 503
    health.proxy.updated()
    assert get(port, "/livez")[0] == 200 and get(port, "/readyz")[0] == 200


def test_render_readiness():
    assert render_readiness({}, True) == (True, {"ready": True, "live": True, "checks": {}})
    assert render_readiness({"cni": True}, False)[0] is False


def test_node_facts_take_the_pod_cidr_and_the_first_internal_ip():
    node = {"spec": {"podCIDR": "10.244.1.0/24"}, "status": {"addresses": [
        {"type": "Hostname", "address": "node1"}, {"type": "InternalIP", "address": "192.168.56.11"},
        {"type": "InternalIP", "address": "10.0.2.15"}]}}
    assert node_facts(node) == NodeFacts("10.244.1.0/24", "192.168.56.11", ("10.244.1.0/24",),
                                         ("192.168.56.11", "10.0.2.15"))
    assert node_facts(node).families == (4,)
    assert node_facts({"metadata": {"name": "n"}}) == NodeFacts(None, None)
    # a dual-stack Node: the CNI gets both ranges, in the Node's order, and a proxier runs per family
    dual = {"spec": {"podCIDR": "fd00:10:244:1::/64", "podCIDRs": ["fd00:10:244:1::/64", "10.244.1.0/24"]}}
    assert node_facts(dual).pod_cidrs == ("fd00:10:244:1::/64", "10.244.1.0/24")
    assert node_facts(dual).families == (6, 4)


def test_nodeport_addresses_primary_is_the_node_address():
    from kubeweft.proxy.agent import resolve_nodeport_addresses

    assert resolve_nodeport_addresses("primary", "192.168.56.11") == ("192.168.56.11/32",)
    assert resolve_nodeport_addresses("primary", None) == ()
    # per family: each family's first address (kube-proxy's primary), never a second one
    assert resolve_nodeport_addresses("primary", ("192.168.56.11", "2001:db8:56::11", "10.0.2.15",
                                                  "2001:db8:56::99")) == ("192.168.56.11/32", "2001:db8:56::11/128")
    assert resolve_nodeport_addresses("10.0.0.0/8, 192.168.0.0/16", "192.168.56.11") == \
        ("10.0.0.0/8", "192.168.0.0/16")
    with pytest.raises(SystemExit):
        resolve_nodeport_addresses("primary,10.0.0.0/8", "192.168.56.11")


def test_healthz_is_503_on_a_node_leaving_livez_is_not_and_both_are_counted(served):
    from kubeweft.proxy.metrics import HealthCollector

    health, port = served
    health.proxy = ProxyHealth()
    health.proxy.node_eligible = False
    status, body = get(port, "/healthz")
    assert status == 503 and body["nodeEligible"] is False
    assert get(port, "/livez")[0] == 200
    health.proxy.node_eligible = True
    assert get(port, "/healthz")[0] == 200
    samples = {(f.name, s.labels["code"]): s.value for f in HealthCollector(health).collect() for s in f.samples}
    assert samples[("kubeproxy_proxy_healthz", "503")] == 1 and samples[("kubeproxy_proxy_healthz", "200")] == 1
    assert samples[("kubeproxy_proxy_livez", "200")] == 1 and samples[("kubeproxy_proxy_livez", "503")] == 0


def test_the_metrics_port_takes_its_ipv6_twin_on_a_node_with_ipv6():
    from kubeweft.proxy.agent import DEFAULT_METRICS, default_binds
    assert default_binds(DEFAULT_METRICS, (4,)) == ["127.0.0.1:10249"]
    assert default_binds(DEFAULT_METRICS, (6, 4)) == ["127.0.0.1:10249", "[::1]:10249"]


def test_the_ipv6_health_server_shares_the_port_with_the_ipv4_one():
    health = AgentHealth()
    four = serve_agent_health("127.0.0.1:0", health)
    port = four.httpd.server_address[1]
    six = serve_agent_health(f"[::1]:{port}", health)
    try:
        conn = http.client.HTTPConnection("::1", port, timeout=5)
        conn.request("GET", "/livez")
        assert conn.getresponse().status == 200
        conn.close()
        assert get(port, "/livez")[0] == 200
    finally:
        six.close()
        four.close()
