"""The netlink element path (proxy/element_codec.py, Nft.elements) on the kernel, in scratch
network namespaces: the same Services programmed through `nft -f` and through the agent's path
(structure as text, elements over netlink) leave identical tables; what was written reads back;
an element transaction lands whole or not at all."""
from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator

import pytest
from kubeweft.proxy import diff_services as d
from kubeweft.proxy import nft_transaction as nt
from kubeweft.proxy import render_services as r
from kubeweft.proxy.element_codec import element_type
from kubeweft.proxy.model import Endpoint, EndpointSlice, Service, ServicePort, SlicePort
from kubeweft.proxy.nft_commands import ElementCommand
from kubeweft.proxy.nft_transaction import Transaction, apply_transaction
from kubeweft.proxy.nftables import Nft, NftError
from kubeweft.proxy.table_readback import read_map, read_set

from .netns_helpers import scratch_netns, table_json

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
CTX = r.NodeContext("node1", zone="zone-a")


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    with scratch_netns("elc", 2) as (one, two):
        yield one, two


def v6(address: str) -> str:
    """An IPv4 address or CIDR's IPv6 counterpart in fd00::/96 (the same last 32 bits)."""
    ip, _, bits = address.partition("/")
    mapped = str(ipaddress.IPv6Address(f"fd00::{ip}"))
    return f"{mapped}/{96 + int(bits)}" if bits else mapped


CONTEXTS = {4: CTX, 6: r.NodeContext("node1", zone="zone-a", cluster_cidr=v6("10.244.0.0/16"),
                                      service_cidr=v6("10.96.0.0/12"), family=6)}


def services(family: int = 4) -> list[tuple[Service, list[EndpointSlice]]]:
    """One of each shape the render writes: protocols, nodePorts, external and LB addresses with
    either traffic policy and source ranges, affinity, no endpoints, internalTrafficPolicy; in
    one IP family."""
    a = (lambda x: x) if family == 4 else v6

    def eps(n: int, base: int, node: str = "node1") -> tuple[Endpoint, ...]:
        return tuple(Endpoint(a(f"10.244.{1 + i % 2}.{base + i}"), node_name=node if i % 2 == 0 else "node2")
                     for i in range(n))
    ports = (SlicePort("a", "tcp", 8080), SlicePort("b", "udp", 5353), SlicePort("c", "sctp", 9000))
    out = []
    for i, (kind, n, extra) in enumerate([
        ("ClusterIP", 3, {}),
        ("ClusterIP", 1, {"affinity_timeout": 30}),
        ("NodePort", 2, {"external_local": True}),
        ("LoadBalancer", 4, {"lb_ips": (a("198.51.100.7"),),
                             "lb_source_ranges": (a("203.0.113.0/24"), a("192.0.2.9/32"))}),
        ("LoadBalancer", 2, {"lb_ips": (a("198.51.100.8"),), "external_local": True, "health_check_node_port": 32100}),
        ("ClusterIP", 0, {"external_ips": (a("192.168.56.250"),)}),
        ("ClusterIP", 2, {"internal_local": True}),
    ]):
        sps = tuple(ServicePort(p.name, p.protocol, 80 + j, 30100 + 10 * i + j if kind != "ClusterIP" else None)
                    for j, p in enumerate(ports))
        svc = Service("ns", f"s{i}", (a(f"10.96.7.{10 + i}"),), sps, kind, **extra)
        out.append((svc, [EndpointSlice("ns", f"s{i}-x", f"s{i}", ports, eps(n, 10 * i), family)]))
    return out


def desired(family: int = 4) -> tuple[Transaction, r.Desired]:
    ctx = CONTEXTS[family]
    agg = r.Aggregate()
    for svc, slices in services(family):
        agg.put(svc.key, r.render_service(svc, slices, ctx))
    diff, mirror = d.diff_full(d.empty_applied(), agg)
    return Transaction(r.SERVICE_TABLES[family], r.render_base(ctx) + diff), mirror


@pytest.mark.parametrize("family", [4, 6])
def test_netlink_elements_leave_the_table_nft_text_leaves(netns_pair, monkeypatch, family):
    text_ns, link_ns = netns_pair
    cmds, mirror = desired(family)
    table = r.SERVICE_TABLES[family]
    assert sum(len(c.elements) for c in cmds if isinstance(c, ElementCommand)) > 50
    subprocess.run(["ip", "netns", "exec", text_ns, "nft", "-f", "-"], input=cmds.text(), text=True,
                   capture_output=True, check=True, timeout=60)
    monkeypatch.setattr(nt, "TEXT_MAX", 0)       # as a big sync: structure as text, elements over netlink
    nft = Nft(link_ns)
    apply_transaction(nft, cmds)
    assert nft.elements.transactions == 1          # every element in one transaction
    assert nft.transactions == 1                   # the structure (nothing goes: no third one)
    assert table_json(link_ns, table.family) == table_json(text_ns, table.family)
    # and what was written reads back over netlink as the render wrote it
    for name in r.SETS:
        assert read_set(nft, name, table) == mirror.sets.get(name, frozenset()), name
    for name, m in mirror.maps.items():
        assert read_map(nft, name, table) == m, name


def test_the_first_load_in_pipelined_transactions_leaves_the_same_table(netns_pair, monkeypatch):
    text_ns, link_ns = netns_pair
    cmds, _ = desired()
    subprocess.run(["ip", "netns", "exec", text_ns, "nft", "-f", "-"], input=cmds.text(), text=True,
                   capture_output=True, check=True, timeout=60)
    monkeypatch.setattr(nt, "LOAD_CHUNK", 7)
    monkeypatch.setattr(nt, "TEXT_MAX", 0)
    nft = Nft(link_ns)
    apply_transaction(nft, cmds, empty=True)
    assert nft.elements.transactions > 5
    assert table_json(link_ns) == table_json(text_ns)


def test_an_element_transaction_lands_whole_or_not_at_all(netns_pair):
    ns, _ = netns_pair
    nft = Nft(ns)
    apply_transaction(nft, Transaction(r.SERVICE_TABLE, r.render_base(CTX)))
    hairpin = element_type(r.SETS["hairpin"][0])
    with pytest.raises(NftError, match="No such file"):
        nft.elements.run(r.FAMILY, r.TABLE, [("add", "hairpin", hairpin, ["10.244.9.9 . 10.244.9.9"]),
                                             ("delete", "hairpin", hairpin, ["10.244.9.8 . 10.244.9.8"])])
    assert read_set(nft, "hairpin") == frozenset()
    nft.elements.run(r.FAMILY, r.TABLE, [("add", "hairpin", hairpin, ["10.244.9.9 . 10.244.9.9"])])
    assert read_set(nft, "hairpin") == {"10.244.9.9 . 10.244.9.9"}
    # a set that does not exist reads as empty; a dump never needs nft's cache
    assert nft.elements.dump(r.FAMILY, r.TABLE, "absent", hairpin) is None
    assert read_map(nft, "backends-tcp-7") == {}


def test_the_counter_dump_reads_what_nft_lists_of_one_tables_named_counters(netns_pair):
    ns, _ = netns_pair
    nft = Nft(ns)
    nft.run(["add table inet t1", "add table inet t2",
             "add counter inet t1 c1 { packets 5 bytes 300 }", "add counter inet t1 c2",
             "add counter inet t2 c3 { packets 9 bytes 9 }", "add quota inet t1 q1 { over 100 mbytes }"])
    listed = {(c["counter"]["name"], c["counter"]["packets"], c["counter"]["bytes"])
              for c in nft.list("counters table inet t1") if "counter" in c}
    assert listed == {("c1", 5, 300), ("c2", 0, 0)}
    assert set(nft.elements.counters("inet", "t1")) == listed
    assert nft.elements.counters("inet", "t2") == [("c3", 9, 9)]
    assert nft.elements.counters("inet", "nosuch") is None
    nft.run(["add table inet t3"])
    assert nft.elements.counters("inet", "t3") == []
