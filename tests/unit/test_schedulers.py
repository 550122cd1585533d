"""Load-balancing schedulers (proxy/scheduler.py) in the render, the diff, the UDP cleanup
plan and the `kubeweft services` listing: which chain a frontend's verdict names, what its
rule selects with, what the backends map holds, and what a change of endpoints writes."""
from __future__ import annotations

import collections

import pytest
from kubeweft.proxy import diff_services as d
from kubeweft.proxy import render_services as r
from kubeweft.proxy.frontends import describe_frontends
from kubeweft.proxy.maglev import table_size
from kubeweft.proxy.model import invalid_scheduler, parse_endpoint_slice, parse_service
from kubeweft.proxy.nft_commands import AddElements, DeleteElements, nft_lines
from kubeweft.proxy.scheduler import SEED, parse_scheduler, scheduled_chain

CTX = r.NodeContext("node1", cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")
IPS = [f"10.244.{i}.5" for i in range(1, 7)]


def service(name: str = "web", scheduler: str | None = None, proto: str = "TCP", node_port: int | None = None,
            ip: str = "10.96.0.10"):
    port = {"name": "p", "port": 80, "protocol": proto, "targetPort": 8080}
    spec = {"clusterIP": ip, "ports": [port]}
    if node_port:
        port["nodePort"] = node_port
        spec["type"] = "NodePort"
    meta = {"namespace": "ns", "name": name}
    if scheduler is not None:
        meta["annotations"] = {"kubeweft.io/scheduler": scheduler}
    return parse_service({"metadata": meta, "spec": spec})


def slices(*ips: str, name: str = "web", proto: str = "TCP"):
    return [parse_endpoint_slice({
        "metadata": {"namespace": "ns", "name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
        "ports": [{"name": "p", "port": 8080, "protocol": proto}],
        "endpoints": [{"addresses": [ip], "nodeName": "node2"} for ip in ips]})]


def render(svc, eps, ctx=CTX) -> r.Desired:
    return r.render_service(svc, slices(*eps, name=svc.name, proto=svc.ports[0].protocol.upper()), ctx)


@pytest.mark.parametrize("value, want", [("rr", "rr"), ("sh", "sh"), ("maglev", "maglev"), ("mh", "maglev"),
                                         ("Random", "random"), (" sh ", "sh"), ("wrr", None), ("lc", None),
                                         (3, None), (None, None)])
def test_scheduler_names(value, want):
    assert parse_scheduler(value) == want


def test_the_annotation_picks_a_services_scheduler_and_a_bad_one_the_default():
    assert service(scheduler="rr").scheduler == "rr"
    assert service().scheduler == service(scheduler="").scheduler == ""
    bad = {"metadata": {"namespace": "ns", "name": "x", "annotations": {"kubeweft.io/scheduler": "wlc"}},
           "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}}
    assert parse_service(bad).scheduler == "" and invalid_scheduler(bad) == "wlc"
    assert invalid_scheduler({"metadata": {"name": "x"}}) is None
    assert invalid_scheduler({"metadata": {"annotations": {"kubeweft.io/scheduler": "sh"}}}) is None


def test_random_is_the_shared_lb_chain_as_before():
    frag = render(service(), IPS[:3])
    assert frag.maps["service-ips"]["10.96.0.10 . tcp . 80"] == "goto lb-tcp-3"
    assert set(frag.chains) == {"lb-tcp-3"}
    assert "numgen random mod 3" in frag.chains["lb-tcp-3"].rules[0]


def test_source_hash_is_a_shared_chain_over_the_same_backends_map():
    frag = render(service(scheduler="sh", node_port=30080), IPS[:3])
    assert frag.maps["service-ips"]["10.96.0.10 . tcp . 80"] == "goto lb-tcp-3-sh"
    assert frag.maps["nodeports"]["tcp . 30080"] == "goto np-tcp-3-sh"
    assert frag.chains["lb-tcp-3-sh"].rules == (
        f"dnat ip to ip daddr . tcp dport . jhash ip saddr mod 3 seed {SEED:#x} map @backends-tcp-3",)
    assert frag.chains["np-tcp-3-sh"].rules == (
        f"dnat ip to tcp dport . jhash ip saddr mod 3 seed {SEED:#x} map @nodeport-backends-tcp-3",)
    assert frag.chains["lb-tcp-3-sh"].map == ""              # the lb chain owns the map
    assert "lb-tcp-3" in frag.chains and "np-tcp-3" in frag.chains
    assert frag.maps["backends-tcp-3"] == {f"10.96.0.10 . 80 . {i}": f"{ip} . 8080" for i, ip in enumerate(IPS[:3])}
    # another sh Service with as many endpoints shares the chain: no chain per Service
    other = render(service("api", scheduler="sh", ip="10.96.0.11"), IPS[3:6])
    assert set(other.chains) == {"lb-tcp-3", "lb-tcp-3-sh"}


def test_the_agents_default_applies_to_services_without_the_annotation():
    sh = r.NodeContext("node1", scheduler="sh")
    assert render(service(), IPS[:2], sh).maps["service-ips"]["10.96.0.10 . tcp . 80"] == "goto lb-tcp-2-sh"
    assert render(service(scheduler="random"), IPS[:2], sh).maps["service-ips"]["10.96.0.10 . tcp . 80"] == \
        "goto lb-tcp-2"


def test_round_robin_has_a_chain_per_frontend():
    a = render(service(scheduler="rr"), IPS[:2])
    b = render(service("api", scheduler="rr", ip="10.96.0.11"), IPS[2:4])
    (ca,) = [c for c in a.chains if c.startswith("lb-tcp-2-rr-")]
    (cb,) = [c for c in b.chains if c.startswith("lb-tcp-2-rr-")]
    assert ca != cb and a.maps["service-ips"]["10.96.0.10 . tcp . 80"] == f"goto {ca}"
    assert a.chains[ca].rules == ("dnat ip to ip daddr . tcp dport . numgen inc mod 2 map @backends-tcp-2",)
    assert scheduled_chain(ca) == ("rr", "lb-tcp-2") and scheduled_chain("lb-tcp-2-sh") == ("sh", "lb-tcp-2")
    assert scheduled_chain("lb-tcp-2") is None and scheduled_chain("aff-abc-def") is None


def test_maglev_fills_its_table_of_slots():
    size = table_size(3)
    assert size == 251                           # ~32 slots or more per endpoint, not thousands
    frag = render(service(scheduler="maglev", proto="UDP"), IPS[:3])
    assert frag.maps["service-ips"]["10.96.0.10 . udp . 80"] == f"goto lb-udp-{size}-mh"
    table = frag.maps[f"backends-udp-{size}"]
    assert len(table) == size
    counts = collections.Counter(table.values())
    assert set(counts) == {f"{ip} . 8080" for ip in IPS[:3]} and max(counts.values()) - min(counts.values()) <= 1
    assert f"jhash ip saddr mod {size} seed" in frag.chains[f"lb-udp-{size}-mh"].rules[0]


def test_a_maglev_change_writes_only_the_slots_that_moved():
    size = table_size(4)
    assert table_size(3) == size          # one step: the slots stay, only their endpoints move
    svc = service(scheduler="maglev", proto="UDP")
    agg = r.Aggregate()
    agg.put(svc.key, render(svc, IPS[:4]))
    _, applied = d.diff_full(d.empty_applied(), agg)
    before = dict(applied.maps[f"backends-udp-{size}"])
    touched = agg.put(svc.key, render(svc, IPS[:3]))
    cmds = d.diff_touched(applied, agg, touched)
    added = [e for c in cmds if isinstance(c, AddElements) for e in c.elements]
    deleted = [e for c in cmds if isinstance(c, DeleteElements) for e in c.elements]
    gone = [k for k, v in before.items() if v == f"{IPS[3]} . 8080"]
    assert len(added) == len(deleted) < 1.2 * len(gone)       # the removed endpoint's slots, and few others
    assert {k for k in gone} <= set(deleted)
    assert all(c.name == f"backends-udp-{size}" for c in cmds)    # no chain, no verdict rewritten
    # conntrack: only the endpoint that left, once, on the partial and on a full sync alike
    assert d.plan_udp_cleanup(applied, agg, touched) == {("10.96.0.10", 80, IPS[3])}
    assert d.plan_udp_cleanup(applied, agg, d.touched_udp(applied)) == {("10.96.0.10", 80, IPS[3])}


def test_maglev_s_table_grows_in_steps_with_the_endpoint_count():
    assert [table_size(n) for n in (1, 7, 8, 31, 32, 127, 128, 511, 512)] == \
        [251, 251, 1021, 1021, 4093, 4093, 16381, 16381, 65521]
    many = [f"10.244.9.{i}" for i in range(1, 9)]
    frag = render(service(scheduler="maglev"), many)
    assert frag.maps["service-ips"]["10.96.0.10 . tcp . 80"] == "goto lb-tcp-1021-mh"
    counts = collections.Counter(frag.maps["backends-tcp-1021"].values())
    assert len(counts) == 8 and max(counts.values()) - min(counts.values()) <= 1
    # a fixed size in the node's context (tests, small tables) wins over the count
    fixed = r.render_service(service(scheduler="maglev"), slices(*many), r.NodeContext("node1", maglev_slots=13))
    assert len(fixed.maps["backends-tcp-13"]) == 13


def test_an_unchanged_scheduled_service_plans_no_cleanup():
    for sched in ("sh", "rr", "maglev"):
        svc = service(scheduler=sched, proto="UDP")
        agg = r.Aggregate()
        agg.put(svc.key, render(svc, IPS[:3]))
        _, applied = d.diff_full(d.empty_applied(), agg)
        touched = agg.put(svc.key, render(svc, IPS[:3]))
        assert d.diff_touched(applied, agg, touched) == []
        assert d.plan_udp_cleanup(applied, agg, touched) == set()


def test_switching_scheduler_moves_the_verdict_and_frees_the_old_chain():
    agg = r.Aggregate()
    svc = service(scheduler="rr")
    agg.put(svc.key, render(svc, IPS[:2]))
    _, applied = d.diff_full(d.empty_applied(), agg)
    (rr_chain,) = [c for c in applied.chains if "-rr-" in c]
    touched = agg.put(svc.key, render(service(scheduler="sh"), IPS[:2]))
    text = "\n".join(nft_lines(d.diff_touched(applied, agg, touched), r.SERVICE_TABLE))
    assert "add chain ip kubeweft lb-tcp-2-sh" in text and f"delete chain ip kubeweft {rr_chain}" in text
    assert agg.chain(rr_chain) is None and agg.chain("lb-tcp-2-sh") is not None


def test_services_lists_each_frontends_scheduler():
    agg = r.Aggregate()
    for svc, eps in ((service("a"), IPS[:2]), (service("b", "rr", ip="10.96.0.11"), IPS[:2]),
                     (service("c", "sh", ip="10.96.0.12"), IPS[:2]), (service("m", "maglev", ip="10.96.0.13"), IPS[:2])):
        agg.put(svc.key, render(svc, eps))
    _, mirror = d.diff_full(d.empty_applied(), agg)
    rows = {f.address: f for f in describe_frontends(mirror.sets, mirror.maps)}
    assert [rows[f"10.96.0.{n}:80/tcp"].scheduler for n in (10, 11, 12, 13)] == ["random", "rr", "sh", "maglev"]
    assert rows["10.96.0.11:80/tcp"].backends == (f"{IPS[0]}:8080", f"{IPS[1]}:8080")
    half = table_size(2) // 2
    assert rows["10.96.0.13:80/tcp"].backends in ((f"{IPS[0]}:8080({half})", f"{IPS[1]}:8080({half + 1})"),
                                                  (f"{IPS[0]}:8080({half + 1})", f"{IPS[1]}:8080({half})"))
