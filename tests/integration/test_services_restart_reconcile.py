"""A restarted agent reconciles EVERY chain and set of its table, on the shared
kubeweft lab: what went away while it was down is deleted and cleaned up after, not leaked.

A UDP sessionAffinity ClientIP Service has two endpoints; a one-socket client (a DNS resolver's
way) on node3 talks to one of them. node3's agent is killed with SIGKILL, the endpoint the
client talks to is deleted, a stray lb-tcp-9 chain with its backends-tcp-9 map is left in node3's
table (as when an agent dies between the element transaction and the one deleting them), and
the agent starts again. Then on node3:
  - the gone endpoint's aff-<sid>-<eid> chain and its dynamic set are gone from the table, the
    live endpoint's are still there;
  - the client's socket moves to the live endpoint (its conntrack entry to the dead one was
    removed: the restart planned the UDP cleanup for the endpoint it never saw leave);
  - lb-tcp-9 and backends-tcp-9 are gone.

    node1: dns-a    node2: dns-b    node3: client3, the agent that dies
"""
from __future__ import annotations

import contextlib
import time

import pytest
from kubeweft.lab import lifecycle
from kubeweft.lab import netns as lab_netns
from kubeweft.proxy.nftables import Nft
from kubeweft.proxy.render_services import FAMILY, TABLE, T, family_chain

from .services_helpers import UdpClient, cluster, in_thread, port, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h23-restart-reconcile"
NODE = "node3"
DNS_PORT = 5353
RESTART_WITHIN = 45.0       # agent start -> informers listed -> full sync -> conntrack -D, seconds
STRAY = f"""
add map {T} backends-tcp-9 {{ {family_chain("lb-tcp-9").map_decl}; }}
add chain {T} lb-tcp-9 {{ comment "spread over 9 endpoints in backends-tcp-9"; }}
add rule {T} lb-tcp-9 {family_chain("lb-tcp-9").rules[0]}
add element {T} backends-tcp-9 {{ 10.96.0.99 . 80 . 0 : 10.244.9.9 . 8080 }}
"""


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.pod("client3", NODE)
        cl.wait_ready("client3")
        yield cl


def table(netns: str) -> tuple[dict[str, str], set[str]]:
    """(chain name -> comment, set and map names) of node's `table ip kubeweft`, over netlink
    (never nft's cache)."""
    def read():
        link = Nft(netns).elements
        try:
            return dict(link.chains(FAMILY, TABLE) or []), {n for n, _ in link.sets(FAMILY, TABLE) or []}
        finally:
            link.close()
    return in_thread(read)


def endpoint_chain(chains: dict[str, str], ip: str, svc: str) -> str | None:
    """The aff-<sid>-<eid> chain of endpoint ip of Service svc (its comment names both)."""
    return next((n for n, comment in chains.items()
                 if n.startswith("aff-") and comment.startswith(f"endpoint {ip}:{DNS_PORT} of {NS}/{svc}:")), None)


def test_restart_deletes_what_went_away_and_moves_the_udp_client(c):
    name, a, b = "dns", "dns-a", "dns-b"
    for pod, node in ((a, "node1"), (b, "node2")):
        c.pod(pod, node, ports=[port(DNS_PORT, "UDP", "dns")], labels={"app": name})
    ips = c.wait_ready(a, b)
    svc = c.service(name, [svc_port(DNS_PORT, "dns", "UDP", name="dns")], selector={"app": name},
                    sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    c.wait_endpoints(name, 2)
    c.wait_answer("client3", svc.ip, DNS_PORT, udp=True)
    netns = c.cfg.node_netns(NODE)

    def both_endpoints():
        got = table(netns)
        return got if all(endpoint_chain(got[0], ips[p], name) for p in (a, b)) else None
    chains, sets = wait_for("both endpoint chains in node3's table", both_endpoints)
    assert "lb-tcp-9" not in chains and "backends-tcp-9" not in sets, "lb-tcp-9 is in use: pick another stray"

    client = UdpClient(c.source_netns("client3"), svc.ip, DNS_PORT)
    old, restarted = None, None
    try:
        first = wait_for("an answer on the client's socket", client.ask, timeout=10)
        other = b if first == a else a
        gone_chain = endpoint_chain(chains, ips[first], name)
        live_chain = endpoint_chain(chains, ips[other], name)
        assert {gone_chain, live_chain} <= sets, "each endpoint chain has its dynamic set"

        lab_netns.run(netns, ["nft", "-f", "-"], input=STRAY, text=True, capture_output=True,
                      check=True, timeout=30)
        old = lifecycle.hold_agent(c.cfg.name, NODE)        # SIGKILL; its kubelet waits to restart it
        c.delete_pod(first, grace=0)
        c.wait_endpoints(name, 1)
        wait_for("the deleted endpoint out of the slices", lambda: all(
            ips[first] not in e.get("addresses", []) for e in c.slice_endpoints(name)), timeout=30)
        # while the agent is down the socket's flow still goes to the dead endpoint
        assert client.ask(timeout=0.3) is None

        restarted = lifecycle.release_agent(c.cfg.name, NODE, old)
        t0 = time.monotonic()
        got = None
        while time.monotonic() - t0 < RESTART_WITHIN and got != other:
            got = client.ask(timeout=0.3)
        assert got == other, f"the socket still reaches {got} {time.monotonic() - t0:.1f} s after the restart"
        for _ in range(3):
            assert client.ask() == other

        chains, sets = wait_for("the restarted agent's table", lambda: table(netns), timeout=10)
        assert gone_chain not in chains and gone_chain not in sets
        assert live_chain in chains and live_chain in sets
        assert "lb-tcp-9" not in chains and "backends-tcp-9" not in sets
        assert lifecycle._alive(restarted), "the restarted agent exited"
    finally:
        client.close()
        if old is not None and restarted is None:              # never leave the lab without this agent
            restarted = lifecycle.release_agent(c.cfg.name, NODE, old)
        with contextlib.suppress(Exception):                   # the stray, when this test failed
            lab_netns.run(netns, ["nft", f"delete chain {T} lb-tcp-9; delete map {T} backends-tcp-9"],
                          capture_output=True, timeout=30)
        with contextlib.suppress(Exception):
            c.delete_service(name)
        for pod in (a, b):
            with contextlib.suppress(Exception):
                c.delete_pod(pod, grace=0)
