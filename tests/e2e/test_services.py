"""A ClusterIP Service and a NodePort Service over the shared servers, from pods on every node."""
from __future__ import annotations

from .cluster import address_of

# new connections per client: with two endpoints, all 20 land on one with probability 2 ** -19
TRIES = 20


def test_cluster_ip(cluster, net):
    servers = {p.name for p in net.servers.values()}
    for client in net.clients.values():
        answers = cluster.http_get_many(client, f"http://{net.cluster_ip}/hostname", TRIES)
        failed = [body for ok, body in answers if not ok]
        assert not failed, f"{client.name} ({client.node}) -> ClusterIP {net.cluster_ip}:80: {failed}"
        seen = [body for _, body in answers]
        assert set(seen) <= servers, f"{net.cluster_ip}:80 answered as {set(seen) - servers}"
        assert set(seen) == servers, f"{TRIES} connections from {client.name} all went to {set(seen)}"
        ok, body = cluster.http_get(client, f"http://{net.cluster_ip}/clientip")
        assert ok and address_of(body) == client.ip, (
            f"through the ClusterIP the server saw {body}, not {client.name}'s address {client.ip}")


def test_node_port(cluster, net):
    assert net.node_ips, "no node has an IPv4 InternalIP"
    servers = {p.name for p in net.servers.values()}
    for client in net.clients.values():
        for node, ip in sorted(net.node_ips.items()):
            ok, body = cluster.http_get(client, f"http://{ip}:{net.node_port}/hostname")
            assert ok, f"{client.name} ({client.node}) -> NodePort {ip}:{net.node_port} ({node}): {body}"
            assert body in servers, f"NodePort {ip}:{net.node_port} answered as {body!r}"
