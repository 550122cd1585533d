"""ServiceProxy.recover() on the kernel, in scratch network namespaces (no lab): the table a
dead agent left (an affinity Service with two endpoints, a ClusterIP over lb-tcp-3, and a stray
lb-tcp-9 chain with its backends-tcp-9 map) is read back over netlink (chains, sets, elements),
and the first full sync after the restart, with one affinity endpoint gone meanwhile, leaves
EXACTLY the table a fresh agent writes for the new state: the gone endpoint's chain and dynamic
set and the stray chain and map are deleted, and the gone endpoint is planned for UDP conntrack
cleanup. Also: ElementLink.chains/.sets on tables that do not exist or hold nothing."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from kubeweft.proxy import diff_services as d
from kubeweft.proxy import render_services as r
from kubeweft.proxy.maglev import table_size
from kubeweft.proxy.model import Endpoint, EndpointSlice, Service, ServicePort, SlicePort
from kubeweft.proxy.nft_commands import AddRule, FlushChain
from kubeweft.proxy.nft_transaction import Transaction, apply_transaction
from kubeweft.proxy.nftables import Nft
from kubeweft.proxy.service_proxy import ServiceProxy

from .netns_helpers import scratch_netns, table_json

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.timeout(120)]
CTX = r.NodeContext("node1")
A, B, C = "10.244.1.5", "10.244.2.5", "10.244.3.5"


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    with scratch_netns("rcv", 2) as (one, two):
        yield one, two


def nft_text(netns: str, text: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=text, text=True,
                   capture_output=True, check=True, timeout=30)


def services(dns_endpoints: tuple[str, ...]) -> r.Aggregate:
    port = SlicePort("dns", "udp", 5353)
    dns = Service("ns", "dns", ("10.96.0.10",), (ServicePort("dns", "udp", 53),), "ClusterIP",
                  affinity_timeout=30)
    web = Service("ns", "web", ("10.96.0.11",), (ServicePort("http", "tcp", 80),), "ClusterIP")
    agg = r.Aggregate()
    agg.put(dns.key, r.render_service(dns, [EndpointSlice("ns", "dns-1", "dns", (port,), tuple(
        Endpoint(ip, node_name="node2") for ip in dns_endpoints))], CTX))
    agg.put(web.key, r.render_service(web, [EndpointSlice("ns", "web-1", "web", (SlicePort("http", "tcp", 8080),),
                                                          tuple(Endpoint(ip, node_name="node2") for ip in (A, B, C)))],
                                      CTX))
    return agg


def write(nft: Nft, applied: r.Desired, agg: r.Aggregate, unknown: bool) -> r.Desired:
    diff, mirror = d.diff_full(applied, agg, unknown_chains=unknown)
    apply_transaction(nft, Transaction(r.SERVICE_TABLE, r.render_base(CTX) + diff))
    return mirror


STRAY = f"""
add map {r.T} backends-tcp-9 {{ {r.family_chain("lb-tcp-9").map_decl}; }}
add chain {r.T} lb-tcp-9 {{ comment "spread over 9 endpoints in backends-tcp-9"; }}
add rule {r.T} lb-tcp-9 {r.family_chain("lb-tcp-9").rules[0]}
add element {r.T} backends-tcp-9 {{ 10.96.0.99 . 80 . 0 : 10.244.9.9 . 8080 }}
"""


def test_restart_reads_every_chain_and_set_and_the_full_sync_leaves_a_fresh_table(netns_pair):
    old_ns, fresh_ns = netns_pair
    nft = Nft(old_ns)
    before = write(nft, d.empty_applied(), services((A, B)), unknown=False)
    nft_text(old_ns, STRAY)
    aff_endpoint_chains = {n for n in before.chains if n.startswith("aff-") and n.count("-") == 2}
    assert len(aff_endpoint_chains) == 2 and set(before.dynsets) == aff_endpoint_chains

    # the restarted agent: a new context, recover() as the agent runs it
    agent = SimpleNamespace(nft=Nft(old_ns), ctx=CTX, table=r.SERVICE_TABLE)
    rec = ServiceProxy.recover(agent)
    assert set(rec.chains) == set(before.chains) | {"lb-tcp-9"}
    assert set(rec.dynsets) == set(before.dynsets)
    assert rec.maps["backends-tcp-9"] == {"10.96.0.99 . 80 . 0": "10.244.9.9 . 8080"}
    assert rec.maps["backends-tcp-3"] == before.maps["backends-tcp-3"]

    # B went away while the agent was down
    now = services((A,))
    assert d.plan_udp_cleanup(rec, now, d.touched_udp(rec)) == {("10.96.0.10", 53, B)}
    after = write(agent.nft, rec, now, unknown=True)

    # exactly what a fresh agent writes for the new state
    write(Nft(fresh_ns), d.empty_applied(), services((A,)), unknown=False)
    assert table_json(old_ns) == table_json(fresh_ns)
    listed = {n for n, _ in agent.nft.elements.chains(r.FAMILY, r.TABLE)}
    assert "lb-tcp-9" not in listed and not (aff_endpoint_chains - set(after.chains)) & listed
    assert "backends-tcp-9" not in {n for n, _ in agent.nft.elements.sets(r.FAMILY, r.TABLE)}

    # and a second restart changes nothing
    again = ServiceProxy.recover(agent)
    diff, _ = d.diff_full(again, now, unknown_chains=True)
    assert [c for c in diff if not isinstance(c, (FlushChain, AddRule))] == []


def test_listing_a_missing_or_empty_table(netns_pair):
    ns, _ = netns_pair
    link = Nft(ns).elements
    assert link.chains(r.FAMILY, r.TABLE) is None and link.sets(r.FAMILY, r.TABLE) is None
    nft_text(ns, f"add table {r.T}\nadd table ip other\nadd chain ip other x\nadd set ip other s {{ type ipv4_addr; }}")
    assert link.chains(r.FAMILY, r.TABLE) == [] and link.sets(r.FAMILY, r.TABLE) == []
    assert link.chains(r.FAMILY, "other") == [("x", "")]
    assert link.sets(r.FAMILY, "other") == [("s", 0)]


def scheduled(web: str, api: str, dns_endpoints: tuple[str, ...]) -> r.Aggregate:
    """web and api over A, B, C with those schedulers; dns (UDP) by Maglev over dns_endpoints."""
    agg = r.Aggregate()
    http = (SlicePort("http", "tcp", 8080),)
    for name, ip, sched in (("web", "10.96.0.11", web), ("api", "10.96.0.12", api)):
        svc = Service("ns", name, (ip,), (ServicePort("http", "tcp", 80, 30000 + int(ip[-2:])),), "NodePort",
                      scheduler=sched)
        agg.put(svc.key, r.render_service(svc, [EndpointSlice("ns", f"{name}-1", name, http, tuple(
            Endpoint(e, node_name="node2") for e in (A, B, C)))], CTX))
    dns = Service("ns", "dns", ("10.96.0.10",), (ServicePort("dns", "udp", 53),), scheduler="maglev")
    agg.put(dns.key, r.render_service(dns, [EndpointSlice("ns", "dns-1", "dns", (SlicePort("dns", "udp", 5353),),
                                                          tuple(Endpoint(e, node_name="node2") for e in dns_endpoints))],
                                      CTX))
    return agg


def test_restart_with_scheduler_chains_in_place(netns_pair):
    """sh, rr and maglev chains left by a dead agent are read back as chains to rewrite; with rr
    turned into sh and a Maglev endpoint gone meanwhile, the first full sync leaves the table a
    fresh agent writes, plans the gone endpoint's UDP flows, and a second restart only rewrites
    rules."""
    old_ns, fresh_ns = netns_pair
    nft = Nft(old_ns)
    write(nft, d.empty_applied(), scheduled("rr", "sh", (A, B, C)), unknown=False)
    agent = SimpleNamespace(nft=Nft(old_ns), ctx=CTX, table=r.SERVICE_TABLE)
    rec = ServiceProxy.recover(agent)
    assert {n for n in rec.chains if "-rr-" in n} and "lb-tcp-3-sh" in rec.chains
    slots = table_size(3)
    assert f"lb-udp-{slots}-mh" in rec.chains
    assert len(rec.maps[f"backends-udp-{slots}"]) == slots
    now = scheduled("sh", "sh", (A, C))
    assert d.plan_udp_cleanup(rec, now, d.touched_udp(rec)) == {("10.96.0.10", 53, B)}
    write(agent.nft, rec, now, unknown=True)
    write(Nft(fresh_ns), d.empty_applied(), scheduled("sh", "sh", (A, C)), unknown=False)
    assert table_json(old_ns) == table_json(fresh_ns)
    again = ServiceProxy.recover(agent)
    diff, _ = d.diff_full(again, now, unknown_chains=True)
    assert [c for c in diff if not isinstance(c, (FlushChain, AddRule))] == []
