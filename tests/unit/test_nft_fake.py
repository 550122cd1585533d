"""proxy/nft_fake.py: the Fake refuses what the kernel refuses, lands each transaction whole or
not at all, and answers reads in the kernel's shapes, so the read-back of a restarted agent
(table_readback) runs on it. (tests/integration/test_nftables_layer.py sends the same refused
transactions to the kernel.)"""
from __future__ import annotations

import pytest
from kubeweft.proxy import diff_services as d
from kubeweft.proxy import element_codec as codec
from kubeweft.proxy import render_services as r
from kubeweft.proxy.model import Endpoint, EndpointSlice, Service, ServicePort, SlicePort
from kubeweft.proxy.nft_commands import (
    AddChain,
    AddElements,
    AddMap,
    AddRule,
    AddSet,
    AddTable,
    DeleteChain,
    DeleteElements,
    DeleteMap,
    DeleteSet,
    FlushChain,
    Table,
)
from kubeweft.proxy.nft_fake import FakeNft
from kubeweft.proxy.nft_transaction import Transaction, apply_transaction
from kubeweft.proxy.nftables import NftError
from kubeweft.proxy.table_readback import read_table

CTX = r.NodeContext("node1")
T = Table("ip", "t")
VMAP = AddMap("vm", "type ipv4_addr . inet_proto . inet_service : verdict")


def base() -> list:
    return [AddTable("test"), AddChain("lb", "target"), AddRule("lb", "accept"), VMAP,
            AddSet("s", "type ipv4_addr"), AddChain("entry", "entry"), AddRule("entry", "ip daddr @s accept")]


def fake() -> FakeNft:
    nft = FakeNft()
    nft.run(Transaction(T, base()))
    return nft


REFUSED = {
    "a map element jumping to a missing chain": [AddElements("vm", ("10.0.0.1 . tcp . 80 : goto nope",))],
    "a rule jumping to a missing chain": [AddRule("entry", "goto nope")],
    "a rule naming a missing set": [AddRule("entry", "ip saddr @nope drop")],
    "a chain a map element jumps to": [AddElements("vm", ("10.0.0.1 . tcp . 80 : goto lb",)),
                                       FlushChain("lb"), DeleteChain("lb")],
    "a chain a rule jumps to": [AddRule("entry", "jump lb"), FlushChain("lb"), DeleteChain("lb")],
    "a set a rule names": [DeleteSet("s")],
    "a missing element": [DeleteElements("s", ("10.0.0.9",))],
    "a map key with another value": [AddElements("vm", ("10.0.0.1 . tcp . 80 : drop",)),
                                     AddElements("vm", ("10.0.0.1 . tcp . 80 : accept",))],
    "an element of the wrong type": [AddElements("s", ("10.0.0.1 . tcp",))],
    "a set declared again otherwise": [AddSet("s", "type inet_service")],
    "a missing chain": [FlushChain("nope")],
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_refused_transactions_leave_nothing(what):
    nft = fake()
    before = nft.table("ip", "t").state()
    # a good command first: it must not land either
    with pytest.raises(NftError):
        nft.run(Transaction(T, [AddElements("s", ("10.0.0.7",)), *REFUSED[what]]))
    assert nft.table("ip", "t").state() == before


def test_a_table_that_does_not_exist():
    with pytest.raises(NftError, match="No such file"):
        FakeNft().run(Transaction(T, [AddChain("x")]))


ACCEPTED = [
    [AddElements("s", ("10.0.0.1", "10.0.0.1")),                         # an element twice
     AddElements("vm", ("10.0.0.1 . tcp . 80 : goto lb",)),
     AddElements("vm", ("10.0.0.1 . tcp . 80 : goto lb",)),              # the same value again
     AddChain("lb", "target")],                                          # a chain again
    [DeleteElements("vm", ("10.0.0.1 . tcp . 80",)),
     DeleteChain("lb"),                                                  # its rules go with it
     AddRule("entry", "drop"), FlushChain("entry"), DeleteMap("s"),
     DeleteSet("vm")],                                                   # a map deleted as a set
]


def test_what_the_kernel_allows():
    nft = fake()
    for commands in ACCEPTED:
        nft.run(Transaction(T, commands))
    sets, maps, chains = nft.table("ip", "t").state()
    assert (sets, maps, chains) == ({}, {}, {"entry": ()})


def test_netlink_element_transactions_are_decoded_and_land_whole_or_not_at_all():
    nft = fake()
    etype = codec.element_type("type ipv4_addr")
    with pytest.raises(NftError, match="No such file"):
        nft.elements.run("ip", "t", [("add", "s", etype, ["10.244.9.9"]),
                                     ("delete", "s", etype, ["10.244.9.8"])])
    assert nft.table("ip", "t").sets["s"] == set()
    nft.elements.run("ip", "t", [("add", "s", etype, ["10.244.9.9", "10.244.9.10"])])
    assert nft.table("ip", "t").sets["s"] == {"10.244.9.9", "10.244.9.10"}
    assert nft.elements.transactions == 1
    assert nft.history[-1] == ("netlink", [("add", "s", ("10.244.9.9", "10.244.9.10"))])
    # encoded with another type than the set's: the Fake reads the bytes as the kernel would
    pair = codec.element_type("type ipv4_addr . ipv4_addr")
    with pytest.raises(NftError, match="Invalid argument"):
        nft.elements.run("ip", "t", [("add", "s", pair, ["1.1.1.1 . 2.2.2.2"])])


def test_reads_answer_as_the_kernel_does():
    nft = fake()
    nft.run(Transaction(T, [AddElements("vm", ("10.0.0.1 . tcp . 80 : goto lb",
                                               "10.0.0.2 . tcp . 80 : drop")),
                            AddSet("d", 'type ipv4_addr; flags dynamic,timeout; timeout 30s; comment "x"')]))
    assert nft.elements.chains("ip", "t") == [("lb", "target"), ("entry", "entry")]
    assert dict(nft.elements.sets("ip", "t")) == {"vm": codec.NFT_SET_MAP, "s": 0,
                                                  "d": codec.NFT_SET_EVAL | codec.NFT_SET_TIMEOUT}
    assert sorted(nft.elements.dump("ip", "t", "vm", None)) == [("10.0.0.1 . tcp . 80", "goto lb"),
                                                                 ("10.0.0.2 . tcp . 80", "drop")]
    assert nft.elements.dump("ip", "t", "absent", None) is None
    assert nft.elements.chains("ip", "other") is None and nft.list("set ip other s") == []
    assert nft.list("map ip t vm")[1]["map"]["elem"] == [["10.0.0.1 . tcp . 80", "goto lb"],
                                                          ["10.0.0.2 . tcp . 80", "drop"]]


def services(endpoints: tuple[str, ...]) -> r.Aggregate:
    port = SlicePort("dns", "udp", 5353)
    dns = Service("ns", "dns", ("10.96.0.10",), (ServicePort("dns", "udp", 53),), "ClusterIP",
                  affinity_timeout=30)
    web = Service("ns", "web", ("10.96.0.11",), (ServicePort("http", "tcp", 80),), "LoadBalancer",
                  lb_ips=("198.51.100.7",), lb_source_ranges=("203.0.113.0/24",))
    agg = r.Aggregate()
    for svc, p in ((dns, port), (web, SlicePort("http", "tcp", 8080))):
        agg.put(svc.key, r.render_service(svc, [EndpointSlice("ns", f"{svc.name}-1", svc.name, (p,), tuple(
            Endpoint(ip, node_name="node2") for ip in endpoints))], CTX))
    return agg


def test_a_restart_on_the_fake_reads_back_the_table_and_its_full_sync_leaves_a_fresh_one():
    nft = FakeNft()
    diff, mirror = d.diff_full(d.empty_applied(), services(("10.244.1.5", "10.244.2.5")))
    apply_transaction(nft, Transaction(r.SERVICE_TABLE, r.render_base(CTX) + diff), empty=True)
    rec = read_table(nft, CTX)
    assert {n: v for n, v in rec.sets.items() if v} == {n: v for n, v in mirror.sets.items() if v}
    assert rec.maps == {n: v for n, v in mirror.maps.items()}
    assert set(rec.chains) == set(mirror.chains) and set(rec.dynsets) == set(mirror.dynsets)
    # one endpoint went while the agent was down: the full sync after the restart
    now = services(("10.244.1.5",))
    diff, _ = d.diff_full(rec, now, unknown_chains=True)
    apply_transaction(nft, Transaction(r.SERVICE_TABLE, r.render_base(CTX) + diff))
    fresh = FakeNft()
    first, _ = d.diff_full(d.empty_applied(), now)
    apply_transaction(fresh, Transaction(r.SERVICE_TABLE, r.render_base(CTX) + first))
    assert nft.table(r.FAMILY, r.TABLE).state() == fresh.table(r.FAMILY, r.TABLE).state()
    assert set(nft.table(r.FAMILY, r.TABLE).decls) == set(fresh.table(r.FAMILY, r.TABLE).decls)
