"""Cluster DNS where the cluster has it (a Service kube-system/kube-dns): a Service's name, fully
qualified and through the pod's search path, reaches it."""
from __future__ import annotations

import pytest
from kubernetes.client.rest import ApiException


def cluster_domain(resolv_conf: str, namespace: str) -> str | None:
    """The cluster domain from a pod's resolv.conf: its search list has NS.svc.DOMAIN first."""
    for line in resolv_conf.splitlines():
        words = line.split()
        if words[:1] == ["search"]:
            for name in words[1:]:
                if name.startswith(f"{namespace}.svc."):
                    return name.removeprefix(f"{namespace}.svc.")
    return None


def test_service_names_resolve(cluster, net):
    try:
        dns = cluster.core.read_namespaced_service("kube-dns", "kube-system")
    except ApiException as e:
        if e.status != 404:
            raise
        pytest.skip("the cluster has no DNS (no Service kube-system/kube-dns)")
    client = net.clients["a"]
    p = cluster.exec(client, "cat", "/etc/resolv.conf")
    assert p.returncode == 0, p.stderr
    assert dns.spec.cluster_ip in p.stdout.split(), (
        f"{client.name}'s resolv.conf does not name kube-dns's {dns.spec.cluster_ip}:\n{p.stdout}")
    domain = cluster_domain(p.stdout, net.namespace)
    assert domain, f"no '{net.namespace}.svc.<domain>' in {client.name}'s resolv.conf search list:\n{p.stdout}"
    servers = {s.name for s in net.servers.values()}
    for c in net.clients.values():
        for name in (f"web.{net.namespace}.svc.{domain}", "web"):
            ok, body = cluster.http_get(c, f"http://{name}/hostname")
            assert ok and body in servers, f"{c.name} ({c.node}) -> http://{name}/: {body}"
