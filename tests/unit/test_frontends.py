"""proxy/frontends.py: the `kubeweft services` listing from a table's sets and maps."""
from __future__ import annotations

from kubeweft.proxy import diff_services as d
from kubeweft.proxy import render_services as r
from kubeweft.proxy.frontends import Frontend, describe_frontends, format_frontends
from kubeweft.proxy.model import Endpoint, EndpointSlice, Service, ServicePort, SlicePort

CTX = r.NodeContext("node1")
HTTP = (SlicePort("http", "tcp", 8080),)


def table(*pairs) -> tuple[dict, dict]:
    agg = r.Aggregate()
    for svc, eps in pairs:
        agg.put(svc.key, r.render_service(svc, [EndpointSlice("ns", f"{svc.name}-x", svc.name, HTTP, eps)], CTX))
    _, mirror = d.diff_full(d.empty_applied(), agg)
    return mirror.sets, mirror.maps


def by_address(frontends: list[Frontend]) -> dict[tuple[str, str], Frontend]:
    return {(f.address, f.clients): f for f in frontends}


def test_every_frontend_says_where_new_connections_go():
    web = Service("ns", "web", ("10.96.0.10",), (ServicePort("http", "tcp", 80, 30080),), "NodePort")
    local = Service("ns", "local", ("10.96.0.11",), (ServicePort("http", "tcp", 80, 30081),), "LoadBalancer",
                    lb_ips=("198.51.100.5",), lb_source_ranges=("203.0.113.0/24",), external_local=True)
    empty = Service("ns", "empty", ("10.96.0.12",), (ServicePort("http", "tcp", 80),))
    sticky = Service("ns", "sticky", ("10.96.0.13",), (ServicePort("http", "tcp", 80),), affinity_timeout=30)
    here = Endpoint("10.244.1.5", node_name="node1")
    there = Endpoint("10.244.2.5", node_name="node2")
    rows = by_address(describe_frontends(*table((web, (here, there)), (local, (there,)), (empty, ()),
                                                (sticky, (here,)))))
    assert rows[("10.96.0.10:80/tcp", "all")].action == "spread"
    assert sorted(rows[("10.96.0.10:80/tcp", "all")].backends) == ["10.244.1.5:8080", "10.244.2.5:8080"]
    assert rows[("*:30080/tcp", "all")].notes == ("external clients masqueraded",)
    # externalTrafficPolicy Local: pods and nodes reach every endpoint, external clients only
    # local ones, and node1 has none: dropped for them
    assert rows[("198.51.100.5:80/tcp", "all")].backends == ("10.244.2.5:8080",)
    ext = rows[("198.51.100.5:80/tcp", "external")]
    assert ext.action == "drop"
    assert "loadBalancerSourceRanges 203.0.113.0/24" in ext.notes and "externalTrafficPolicy Local" in ext.notes
    assert rows[("10.96.0.12:80/tcp", "all")].action == "reject"
    assert rows[("10.96.0.13:80/tcp", "all")].action == "affinity"
    assert rows[("10.96.0.10:80/tcp", "all")].scheduler == "random"
    assert rows[("10.96.0.12:80/tcp", "all")].scheduler == "-"
    lines = format_frontends(list(rows.values()))
    assert lines[0].split() == ["FRONTEND", "CLIENTS", "SCHEDULER", "ACTION", "BACKENDS", "NOTES"]
    col = lines[0].index("CLIENTS")           # every row's second column starts under its heading
    assert all(line[col - 3:col] == "   " and line[col] != " " for line in lines[1:])
    assert any(line.startswith("10.96.0.12:80/tcp") and " reject " in line for line in lines)


def test_an_empty_table_lists_nothing():
    assert describe_frontends({}, {}) == []
    assert format_frontends([]) == ["FRONTEND   CLIENTS   SCHEDULER   ACTION   BACKENDS   NOTES"]


def test_ipv6_frontends_and_backends_are_bracketed():
    from kubeweft.proxy.frontends import describe_frontends
    [f] = describe_frontends({}, {"service-ips": {"fd00:10:96::a . tcp . 80": "goto lb-tcp-1"},
                                  "backends-tcp-1": {"fd00:10:96::a . 80 . 0": "fd00:10:244:1::5 . 8080"}})
    assert (f.address, f.backends) == ("[fd00:10:96::a]:80/tcp", ("[fd00:10:244:1::5]:8080",))
