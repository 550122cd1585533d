"""UDP conntrack cleanup for a sessionAffinity ClientIP Service, with real traffic: a client
reusing ONE UDP socket (as a DNS resolver does) moves to the other endpoint within seconds once
the pod it talks to is deleted.

Affinity Services keep their endpoints in chains of their own (aff-<sid>-<eid>), not in the
backends maps, so this is the cleanup's affinity path. The client keeps sending while it waits:
without the cleanup its conntrack entry (DNAT to the dead pod's address) stays alive forever and
no answer comes back. Each case gets its own Service and pods (the pod is deleted), and the
client sits on node3, away from both endpoints, so the conntrack entry that must go is the one
on the client's node.

    node1: dns-a    node2: dns-b    node3: client3 (and node3 itself; the external host dials
    node3's nodePort)
"""
from __future__ import annotations

import contextlib

import pytest

from .services_helpers import EXTERNAL, UdpClient, cluster, port, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h21-affinity-udp"
DNS_PORT = 5353
MOVE_WITHIN = 5.0       # pod deletion -> slice update -> agent sync -> conntrack -D, seconds


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.pod("client3", "node3")
        cl.wait_ready("client3")
        yield cl


@pytest.mark.parametrize("source", ["client3", "node:node3", EXTERNAL])
def test_one_socket_moves_off_a_deleted_endpoint(c, source):
    tag = {"client3": "pod", "node:node3": "node", EXTERNAL: "ext"}[source]
    name, a, b = f"dns-{tag}", f"dns-{tag}-a", f"dns-{tag}-b"
    for pod, node in ((a, "node1"), (b, "node2")):
        c.pod(pod, node, ports=[port(DNS_PORT, "UDP", "dns")], labels={"app": name})
    c.wait_ready(a, b)
    svc = c.service(name, [svc_port(DNS_PORT, "dns", "UDP", name="dns")], selector={"app": name},
                    type_="NodePort", sessionAffinity="ClientIP",
                    sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    c.wait_endpoints(name, 2)
    host, dport = (c.node_ip["node3"], svc.node_ports["dns"]) if source == EXTERNAL else (svc.ip, DNS_PORT)
    # both endpoints programmed on node3: new sockets (new flows, new sources for the external
    # host would need new addresses, so just wait for answers) reach the Service
    c.wait_answer(source, host, dport, udp=True)
    client = UdpClient(c.source_netns(source), host, dport)
    try:
        first = wait_for("an answer on the client's socket", client.ask, timeout=10)
        for _ in range(5):
            assert client.ask() == first, "one socket is one flow: always the same endpoint"
        other = b if first == a else a
        c.delete_pod(first, grace=0)
        got, moved_after = client.ask_until(other, 3 * MOVE_WITHIN)
        assert got == other, f"the socket still reaches {got} {moved_after:.1f} s after {first} was deleted"
        assert moved_after < MOVE_WITHIN, moved_after
        for _ in range(5):
            assert client.ask() == other
    finally:
        client.close()
        c.delete_service(name)
        for pod in (a, b):
            with contextlib.suppress(Exception):       # the deleted one is gone already
                c.delete_pod(pod, grace=0)
