"""UDP conntrack cleanup with real traffic: a client reusing ONE UDP socket (as a DNS resolver
does) moves to a live endpoint at once after its endpoint leaves the Service.

The departing endpoint keeps running and answering: without the cleanup, the client's conntrack
entry would keep its datagrams going to it, so an answer from the other endpoint proves the
entry was removed (not merely that the old one died).

    node1: dns-1, client1    node2: dns-2    node3: client3
"""
from __future__ import annotations

import pytest

from .services_helpers import UdpClient, cluster, port, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-udp"
SLICE = "manual-1"
PORTS = [{"name": "dns", "port": 5353, "protocol": "UDP"}]


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.pod("dns-1", "node1", ports=[port(5353, "UDP", "dns")])
        cl.pod("dns-2", "node2", ports=[port(5353, "UDP", "dns")])
        cl.pod("client1", "node1")
        cl.pod("client3", "node3")
        cl.ips = cl.wait_ready("dns-1", "dns-2", "client1", "client3")
        yield cl


def ep(ip: str, node: str) -> dict:
    return {"addresses": [ip], "nodeName": node, "conditions": {"ready": True, "serving": True, "terminating": False}}


@pytest.mark.parametrize("source", ["client1", "client3", "node:node3"])
def test_one_socket_moves_to_a_live_endpoint_at_once(c, source):
    name = f"dns-{source.replace(':', '-')}"
    svc = c.service(name, [svc_port(5353, 5353, "UDP", name="dns")])             # selectorless
    slice_name = f"{name}-1"
    both = [ep(c.ips["dns-1"], "node1"), ep(c.ips["dns-2"], "node2")]
    c.endpoint_slice(slice_name, name, both, PORTS)
    c.wait_answer(source, svc.ip, 5353, udp=True)
    client = UdpClient(c.source_netns(source), svc.ip, 5353)
    try:
        first = wait_for("an answer", client.ask, timeout=10)
        for _ in range(5):
            assert client.ask() == first, "one socket is one flow: always the same endpoint"
        other = "dns-2" if first == "dns-1" else "dns-1"
        # take the answering endpoint out of the Service (it keeps running)
        c.endpoint_slice(slice_name, name, [e for e in both if e["nodeName"] != f"node{first[-1]}"], PORTS)
        got, moved_after = client.ask_until(other, 10)
        assert got == other, f"the socket still reaches {got} 10 s after {first} left the Service"
        # "at once": within the agent's sync plus the cleanup, far below any conntrack timeout
        assert moved_after < 3.0, moved_after
        for _ in range(5):
            assert client.ask() == other
    finally:
        client.close()
