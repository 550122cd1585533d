"""Pod to pod, on one node and across nodes, with the client's own address as the source."""
from __future__ import annotations

import pytest

from .cluster import address_of


def assert_reaches(cluster, client, server):
    ok, body = cluster.http_get(client, f"http://{server.ip}:8080/clientip")
    assert ok, f"{client.name} ({client.ip}, {client.node}) -> {server.name} ({server.ip}, {server.node}): {body}"
    assert address_of(body) == client.ip, (
        f"{server.name} saw the connection from {body}, not from {client.name}'s address {client.ip}")
    ok, body = cluster.http_get(client, f"http://{server.ip}:8080/hostname")
    assert ok and body == server.name, f"{server.ip}:8080 answered as {body!r}, not {server.name}"


def test_pod_to_pod_same_node(cluster, net):
    assert_reaches(cluster, net.clients["a"], net.servers["a"])


def test_pod_to_pod_across_nodes(cluster, net):
    if not net.two_nodes:
        pytest.skip("the cluster has one node that can run the checks' pods")
    assert_reaches(cluster, net.clients["b"], net.servers["a"])
    assert_reaches(cluster, net.clients["a"], net.servers["b"])
