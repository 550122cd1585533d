"""The service proxy's sync on the product's Fake (proxy/nft_fake.py): the first sync programs
an empty table in one go; a restarted proxy reads the table back and its full sync rewrites no
element; an EndpointSlice change after that is one netlink transaction of that change alone."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from kubeweft.proxy import render_services as r
from kubeweft.proxy.model import parse_endpoint_slice, parse_service
from kubeweft.proxy.nft_commands import ElementCommand
from kubeweft.proxy.nft_fake import FakeNft
from kubeweft.proxy.service_proxy import ServiceProxy
from kubeweft.proxy.service_watch import ServiceWatch

CFG = SimpleNamespace(node_name="node1", cluster_cidr="10.244.0.0/16", pod_cidr="10.244.1.0/24",
                      service_cidr="10.96.0.0/12", nodeport_addresses=(), scheduler="random")


def service(i: int):
    return parse_service({"metadata": {"namespace": "ns", "name": f"s{i}"},
                          "spec": {"clusterIP": f"10.96.0.{10 + i}", "type": "NodePort",
                                   "ports": [{"name": "http", "port": 80, "nodePort": 30080 + i}]}})


def endpoints(i: int, *ips: str):
    return parse_endpoint_slice({
        "metadata": {"namespace": "ns", "name": f"s{i}-1", "labels": {"kubernetes.io/service-name": f"s{i}"}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [ip], "nodeName": "node2", "conditions": {"ready": True}} for ip in ips]})


def proxy(nft: FakeNft) -> ServiceProxy:
    p = ServiceProxy(None, CFG, nft=nft)
    p.take_services({svc.key: svc for svc in map(service, range(3))})
    p.take_slices({("ns", f"s{i}-1"): endpoints(i, f"10.244.2.{i + 1}", f"10.244.3.{i + 1}") for i in range(3)})
    return p


def test_first_sync_restart_and_one_change_on_the_fake():
    nft = FakeNft()
    first = proxy(nft)
    assert first.sync() > 0
    table = nft.table(r.FAMILY, r.TABLE)
    assert table.maps["service-ips"] == {f"10.96.0.{10 + i} . tcp . 80": "goto lb-tcp-2" for i in range(3)}
    assert table.maps["backends-tcp-2"]["10.96.0.11 . 80 . 1"] == "10.244.3.2 . 8080"
    assert [kind for kind, _ in nft.history] == ["nft"]          # structure and few elements: one go
    loaded = table.state()

    # a restarted agent on the same table: it reads it back and rewrites no element
    nft.history.clear()
    again = proxy(nft)
    again.sync()
    assert [kind for kind, _ in nft.history] == ["nft"]
    assert not any(isinstance(c, ElementCommand) for c in nft.history[0][1])
    assert nft.table(r.FAMILY, r.TABLE).state() == loaded

    # one endpoint moves: its backends element alone, over netlink
    nft.history.clear()
    ServiceWatch(None, CFG, [again]).on_slice("MODIFIED", {
        "metadata": {"namespace": "ns", "name": "s1-1", "labels": {"kubernetes.io/service-name": "s1"}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [ip], "nodeName": "node2", "conditions": {"ready": True}}
                      for ip in ("10.244.2.2", "10.244.4.2")]})
    assert again.sync() == 4             # the moved endpoint behind the ClusterIP and the nodePort
    assert nft.history == [("netlink", [
        ("delete", "backends-tcp-2", ("10.96.0.11 . 80 . 1",)),
        ("delete", "nodeport-backends-tcp-2", ("30081 . 1",)),
        ("add", "backends-tcp-2", ("10.96.0.11 . 80 . 1 : 10.244.4.2 . 8080",)),
        ("add", "nodeport-backends-tcp-2", ("30081 . 1 : 10.244.4.2 . 8080",))])]


def test_service_cidrs_replace_the_flag_in_the_drop_rule_without_a_full_sync():
    nft = FakeNft()
    p = proxy(nft)
    p.sync()
    def drop_rule() -> str:
        return nft.table(r.FAMILY, r.TABLE).chains["service-check"][-1]
    assert drop_rule() == "ip daddr 10.96.0.0/12 drop"
    nft.history.clear()
    p.take_service_cidrs({("", "kubernetes"): {"spec": {"cidrs": ["10.96.0.0/12"]}},
                         ("", "extra"): {"spec": {"cidrs": ["10.200.0.0/16", "fd00::/108"]}}})
    assert p.sync() > 0
    assert drop_rule() == "ip daddr { 10.96.0.0/12, 10.200.0.0/16 } drop"
    assert not any(isinstance(c, ElementCommand) for _, cmds in nft.history for c in cmds)   # no element
    # no ServiceCIDR left: the flag again; the same set again: nothing to do
    p.take_service_cidrs({})
    p.sync()
    assert drop_rule() == "ip daddr 10.96.0.0/12 drop"
    p.take_service_cidrs({})
    assert p.sync() == 0


def test_the_nodes_deletion_makes_healthz_not_eligible():
    p = proxy(FakeNft())
    watch = ServiceWatch(None, CFG, [p])
    watch.on_node({"metadata": {"name": "node2"}, "spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler"}]}})
    assert p.health.healthz()[0]                                  # another node's taint: not ours
    watch.on_node({"metadata": {"name": "node1", "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    ok, body = p.health.healthz()
    assert not ok and body["nodeEligible"] is False and p.health.status()[0]      # /livez stays 200
    watch.on_node({"metadata": {"name": "node1"}})
    assert p.health.healthz()[0]


def test_an_api_without_service_cidrs_leaves_the_flag():
    class Api:
        """Answers every GET with one status, as the kubernetes client's ApiClient would."""

        def __init__(self, status):
            self.status = status

        def param_serialize(self, method, path, **_kw):
            return method, path, {}, None, None

        def call_api(self, *_args, **_kw):
            return SimpleNamespace(status=self.status, response=SimpleNamespace(read=bytes, release_conn=lambda: None))

    for status, want in ((404, False), (403, False), (200, True), (503, None)):
        watch = ServiceWatch(Api(status), CFG, [ServiceProxy(None, CFG, nft=FakeNft())])
        assert watch.service_cidrs_served() is want, status
    p = ServiceProxy(None, CFG, nft=FakeNft())
    watch = ServiceWatch(Api(404), CFG, [p])
    watch.watch_service_cidrs()                  # returns at once: no informer, the flag stays
    assert watch.cidr_informer is None and p.ctx.service_ranges() == ["10.96.0.0/12"]


DUAL = SimpleNamespace(node_name="node1", cluster_cidr="10.244.0.0/16,fd00:10:244::/56", pod_cidr="10.244.1.0/24",
                       service_cidr="10.96.0.0/12,fd00:10:96::/112",
                       nodeport_addresses=("192.168.56.11/32", "2001:db8:56::11/128"), scheduler="random")


def dual_service():
    return parse_service({"metadata": {"namespace": "ns", "name": "web"},
                          "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
                                   "type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})


def family_slice(version: int):
    ip = {4: "10.244.2.5", 6: "fd00:10:244:2::5"}[version]
    return parse_endpoint_slice({
        "metadata": {"namespace": "ns", "name": f"web-v{version}", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": f"IPv{version}", "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [ip], "nodeName": "node2", "conditions": {"ready": True}}]})


def test_a_dual_stack_service_gives_each_family_s_table_its_share():
    nft = FakeNft()
    proxies = {v: ServiceProxy(None, DUAL, nft=nft, family=v) for v in (4, 6)}
    for p in proxies.values():
        p.take_services({("ns", "web"): dual_service()})
        p.take_slices({("ns", f"web-v{v}"): family_slice(v) for v in (4, 6)})
        assert p.sync() > 0
    v4, v6 = nft.table("ip", r.TABLE), nft.table("ip6", r.TABLE)
    assert v4.maps["service-ips"] == {"10.96.0.10 . tcp . 80": "goto lb-tcp-1"}
    assert v4.maps["backends-tcp-1"] == {"10.96.0.10 . 80 . 0": "10.244.2.5 . 8080"}
    assert v6.maps["service-ips"] == {"fd00:10:96::a . tcp . 80": "goto lb-tcp-1"}
    assert v6.maps["backends-tcp-1"] == {"fd00:10:96::a . 80 . 0": "fd00:10:244:2::5 . 8080"}
    assert v6.maps["nodeport-backends-tcp-1"] == {"30080 . 0": "fd00:10:244:2::5 . 8080"}
    # each table's rules speak its family: nodePorts on the node's own address of that family
    assert "ip6 daddr { 2001:db8:56::11/128 } fib daddr type local ip6 daddr != ::1 jump nodeports" \
        in v6.chains["services"]
    assert v6.chains["service-check"][-1] == "ip6 daddr fd00:10:96::/112 drop"
    assert v4.chains["service-check"][-1] == "ip daddr 10.96.0.0/12 drop"
    # a restarted IPv6 proxier reads its table back and rewrites no element
    nft.history.clear()
    again = ServiceProxy(None, DUAL, nft=nft, family=6)
    again.take_services({("ns", "web"): dual_service()})
    again.take_slices({("ns", f"web-v{v}"): family_slice(v) for v in (4, 6)})
    again.sync()
    assert not any(isinstance(c, ElementCommand) for _, cmds in nft.history for c in cmds)


def service_json(name: str, *ips: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"clusterIP": ips[0], "clusterIPs": list(ips), "ports": [{"name": "http", "port": 80}]}}


def slice_json(name: str, service_name: str, version: int, ip: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": f"IPv{version}", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip], "nodeName": "node2", "conditions": {"ready": True}}]}


def test_one_watch_parses_each_object_once_and_each_family_keeps_its_share():
    nft = FakeNft()
    v4, v6 = both = [ServiceProxy(None, DUAL, nft=nft, family=v) for v in (4, 6)]
    watch = ServiceWatch(None, DUAL, both)
    # a list, as the informer hands it: decoded once, by the watch's parser
    watch.on_services({("ns", "dual"): watch.parse_service(service_json("dual", "10.96.0.10", "fd00:10:96::a")),
                       ("ns", "four"): watch.parse_service(service_json("four", "10.96.0.11")),
                       ("ns", "six"): watch.parse_service(service_json("six", "fd00:10:96::c"))})
    watch.on_slices({("ns", f"dual-v{v}"): watch.parse_slice(slice_json(f"dual-v{v}", "dual", v, ip))
                     for v, ip in ((4, "10.244.2.5"), (6, "fd00:10:244:2::5"))})
    assert set(v4.services) == {("ns", "dual"), ("ns", "four")}
    assert set(v6.services) == {("ns", "dual"), ("ns", "six")}
    assert v4.services["ns", "dual"] is v6.services["ns", "dual"]     # one value for both families
    assert set(v4.slices) == {("ns", "dual-v4")} and set(v6.slices) == {("ns", "dual-v6")}
    for p in both:
        p.sync()
    assert set(nft.table("ip6", r.TABLE).maps["service-ips"]) == {"fd00:10:96::a . tcp . 80"}
    # an event: the IPv6 slice changes; the IPv4 proxier has nothing to do
    v4.dirty.clear()
    v6.dirty.clear()
    watch.on_slice("MODIFIED", slice_json("dual-v6", "dual", 6, "fd00:10:244:3::5"))
    assert not v4.dirty and v6.dirty == {("ns", "dual")}
    # the Service goes single-stack IPv4: the IPv6 proxier forgets it, the IPv4 one keeps it
    watch.on_service("MODIFIED", service_json("dual", "10.96.0.10"))
    assert ("ns", "dual") not in v6.services and v4.services["ns", "dual"].cluster_ips == ("10.96.0.10",)
    assert v6.sync() > 0
    assert not nft.table("ip6", r.TABLE).maps["service-ips"]


def test_an_ipv6_proxier_takes_its_ranges_from_the_node_and_the_service_cidrs_without_flags():
    with pytest.raises(ValueError, match="IPv6"):                 # no IPv6 range at all: no proxier
        ServiceProxy(None, CFG, nft=FakeNft(), family=6)
    cfg = SimpleNamespace(**{**vars(CFG), "pod_cidrs": ("10.244.1.0/24", "fd00:10:244:1::/64")})
    nft = FakeNft()
    p = ServiceProxy(None, cfg, nft=nft, family=6)
    assert p.ctx.cluster_cidr == "fd00:10:244:1::/64"              # the node's podCIDR of the family
    p.sync()
    check = nft.table("ip6", r.TABLE).chains["service-check"]
    assert not any(rule.endswith(" drop") for rule in check)     # no range known: nothing dropped
    p.take_service_cidrs({("", "ipv6"): {"spec": {"cidrs": ["fd00:10:96::/112", "10.96.0.0/12"]}}})
    p.sync()
    assert nft.table("ip6", r.TABLE).chains["service-check"][-1] == "ip6 daddr fd00:10:96::/112 drop"


def test_the_proxiers_of_both_families_are_ready_and_healthy_together():
    from kubeweft.proxy.service_proxy import ServiceProxies

    nft = FakeNft()
    both = ServiceProxies([ServiceProxy(None, DUAL, nft=nft, family=v) for v in (4, 6)])
    v4, v6 = both.proxies
    v4.sync()
    assert both.syncs == 0                      # ready only once every family's table is in
    v6.sync()
    assert both.syncs == 1
    assert both.health.healthz()[0]
    ServiceWatch(None, DUAL, both.proxies).on_node(
        {"metadata": {"name": "node1", "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert not both.health.healthz()[0] and both.health.status()[0]
    v6.health.timeout = 0.0                     # a change left unsynced past the timeout: not live
    v6._mark(())
    time.sleep(0.01)
    assert not both.health.status()[0]


def test_a_watch_event_is_parsed_once_for_every_family():
    from kubeweft.proxy.service_watch import SVC_PATH, LeanInformer

    both = [ServiceProxy(None, DUAL, nft=FakeNft(), family=v) for v in (4, 6)]
    watch = ServiceWatch(None, DUAL, both)
    parsed = []
    parse = watch.parse_service

    def counted(obj):
        parsed.append(obj["metadata"]["name"])
        return parse(obj)
    watch.parse_service = counted
    inf = LeanInformer(None, SVC_PATH, on_event=watch.on_service, transform=watch.parse_service)
    inf._handle({"type": "ADDED", "object": service_json("dual", "10.96.0.10", "fd00:10:96::a")})
    assert parsed == ["dual"]                      # by on_service alone, not by the transform too
    assert both[0].services["ns", "dual"] is both[1].services["ns", "dual"]
