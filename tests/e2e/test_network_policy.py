"""NetworkPolicy: a default-deny on a namespace shuts out every client, then a policy that
allows one client (by namespace and pod labels) lets exactly that one in."""
from __future__ import annotations

import time

from .cluster import address_of, agnhost_pod

SETTLE = 30.0     # policies reach the nodes' kernels asynchronously


def reaches(cluster, client, target) -> tuple[bool, str]:
    return cluster.http_get(client, f"http://{target.ip}:8080/clientip", seconds=2)


def wait_reach(cluster, client, target, want: bool, what: str) -> str:
    deadline = time.monotonic() + SETTLE
    while True:
        ok, body = reaches(cluster, client, target)
        if ok == want:
            return body
        assert time.monotonic() < deadline, (
            f"after {SETTLE:g} s {client.name} -> {target.name} still {'fails' if want else 'connects'} "
            f"({what}): {body}")
        time.sleep(1)


def test_default_deny_then_allow(cluster, net, namespace):
    ns = namespace("policy")
    node = net.servers["a"].node
    cluster.create_pods(ns, [agnhost_pod("target", cluster.core.read_node(node).metadata.labels.get(
        "kubernetes.io/hostname", node), {"app": "target"})])
    target = cluster.wait_pods_ready(ns, ["target"])["target"]
    clients = list(net.clients.values())
    for c in clients:
        wait_reach(cluster, c, target, True, "no policy yet")

    cluster.net.create_namespaced_network_policy(ns, {
        "metadata": {"name": "default-deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    for c in clients:
        wait_reach(cluster, c, target, False, "default-deny ingress")

    allowed = net.clients["a"]
    cluster.net.create_namespaced_network_policy(ns, {
        "metadata": {"name": "allow-client-a"},
        "spec": {"podSelector": {"matchLabels": {"app": "target"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                                            "kubernetes.io/metadata.name": net.namespace}},
                                        "podSelector": {"matchLabels": {"role": "client", "side": "a"}}}],
                              "ports": [{"protocol": "TCP", "port": 8080}]}]}})
    body = wait_reach(cluster, allowed, target, True, "allowed by allow-client-a")
    assert address_of(body) == allowed.ip, f"the target saw {body}, not {allowed.ip}"
    for c in clients:
        if c != allowed:
            ok, body = reaches(cluster, c, target)
            assert not ok, f"{c.name} is not allowed by any policy, yet connected: {body}"
