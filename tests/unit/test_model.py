"""kubeweft.proxy.model: Service/EndpointSlice/Node JSON -> frozen values; hostile objects raise
InvalidObject (the proxy logs and skips them), objects the proxy leaves alone give None."""
from __future__ import annotations

import copy
import ipaddress
import random

import pytest
from kubeweft.proxy.model import (
    DEFAULT_AFFINITY_TIMEOUT,
    InvalidObject,
    ServicePort,
    _ipv6,
    _ipv6_checked,
    for_family,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)

SVC = {
    "metadata": {"namespace": "default", "name": "web"},
    "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
             "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                       {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}],
             "externalIPs": ["192.168.56.200"], "externalTrafficPolicy": "Local",
             "healthCheckNodePort": 31000, "loadBalancerSourceRanges": ["203.0.113.0/24", "2001:db8::/32"],
             "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}},
    "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"hostname": "lb.example"}]}},
}
SLICE = {
    "metadata": {"namespace": "default", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    "endpoints": [
        {"addresses": ["10.244.1.5"], "conditions": {"ready": True}, "nodeName": "node1", "zone": "zone-a",
         "hints": {"forZones": [{"name": "zone-a"}]}},
        {"addresses": ["10.244.2.5"], "conditions": {"ready": False, "serving": True, "terminating": True},
         "nodeName": "node2"},
        {"addresses": ["10.244.3.5"]},
    ],
}


def with_spec(**changes) -> dict:
    obj = copy.deepcopy(SVC)
    obj["spec"].update(changes)
    return obj


def test_service_fields():
    svc = parse_service(SVC)
    assert svc.key == ("default", "web")
    assert svc.cluster_ips == ("10.96.0.20",)
    assert svc.ports == (ServicePort("http", "tcp", 80, 30080), ServicePort("dns", "udp", 53, 30053))
    assert svc.external_ips == ("192.168.56.200",)
    assert svc.lb_ips == ("198.51.100.1",)
    assert svc.lb_source_ranges == ("203.0.113.0/24", "2001:db8::/32")   # each family's proxier takes its own
    assert svc.external_local and not svc.internal_local
    assert svc.health_check_node_port == 31000
    assert svc.affinity_timeout == 60


def test_defaults():
    svc = parse_service({"metadata": {"namespace": "a", "name": "b"},
                         "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}],
                                  "sessionAffinity": "ClientIP"}})
    assert svc.type == "ClusterIP" and svc.ports == (ServicePort("", "tcp", 80),)
    assert svc.affinity_timeout == DEFAULT_AFFINITY_TIMEOUT
    assert not svc.external_local and svc.health_check_node_port is None


@pytest.mark.parametrize("obj", [
    with_spec(clusterIP="None", clusterIPs=["None"]),                       # headless
    with_spec(type="ExternalName", externalName="example.com"),
    {**SVC, "metadata": {"namespace": "default", "name": "x",
                         "labels": {"service.kubernetes.io/service-proxy-name": "other"}}},
    {**SVC, "metadata": {"namespace": "default", "name": "x",
                         "labels": {"service.kubernetes.io/headless": ""}}},
])
def test_left_alone(obj):
    assert parse_service(obj) is None


@pytest.mark.parametrize("obj", [
    "a string", {}, {"metadata": {"name": "x"}}, {"metadata": {"name": "x"}, "spec": []},
    with_spec(clusterIPs=["10.96.0.300"]), with_spec(clusterIPs=["127.0.0.1"]),
    with_spec(clusterIPs="10.96.0.1"),
    with_spec(ports=[{"port": 0}]), with_spec(ports=[{"port": 70000}]), with_spec(ports=[{"port": "80"}]),
    with_spec(ports=[{"port": True}]), with_spec(ports=[{"port": 80, "protocol": "ICMP"}]),
    with_spec(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]),           # duplicate
    with_spec(ports="80"), with_spec(type="Weird"), with_spec(externalIPs=["not-an-ip"]),
    with_spec(loadBalancerSourceRanges=["10.0.0.0/33"]),
    with_spec(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}),
    with_spec(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86401}}),
    with_spec(ports=[{"port": 80, "nodePort": 99999}]),
])
def test_invalid_services_raise(obj):
    with pytest.raises(InvalidObject):
        parse_service(obj)


@pytest.mark.parametrize("field,value", [("clusterIPs", "10.96.0.1"), ("externalIPs", "192.168.56.7"),
                                         ("loadBalancerSourceRanges", "10.0.0.0/8"), ("ports", "80")])
def test_a_string_where_a_list_belongs_names_the_field(field, value):
    with pytest.raises(InvalidObject, match=f"^{field}: not a list$"):
        parse_service(with_spec(**{field: value}))


def test_load_balancer_ingress_must_be_a_list():
    obj = copy.deepcopy(SVC)
    obj["status"]["loadBalancer"]["ingress"] = {"ip": "198.51.100.1"}
    with pytest.raises(InvalidObject, match="^status.loadBalancer.ingress: not a list$"):
        parse_service(obj)


def test_missing_and_empty_lists_read_as_empty():
    svc = parse_service(with_spec(externalIPs=None, loadBalancerSourceRanges=None, ports={}))
    assert svc.external_ips == () and svc.lb_source_ranges == () and svc.ports == ()
    obj = copy.deepcopy(SVC)
    obj["status"]["loadBalancer"]["ingress"] = None
    assert parse_service(obj).lb_ips == ()


def test_same_port_two_protocols_is_valid():
    svc = parse_service(with_spec(ports=[{"name": "t", "port": 53}, {"name": "u", "port": 53, "protocol": "UDP"}]))
    assert [(p.protocol, p.port) for p in svc.ports] == [("tcp", 53), ("udp", 53)]


@pytest.mark.parametrize("version", [4, 6])
def test_dual_stack_keeps_each_address_with_its_family(version):
    svc = parse_service(with_spec(clusterIPs=["10.96.0.20", "fd00:0:0::20"], externalIPs=["fd00::1", "192.168.56.7"]))
    assert svc.cluster_ips == ("10.96.0.20", "fd00::20")           # IPv6 in canonical form
    share = for_family(svc, version)
    assert share.cluster_ips == {4: ("10.96.0.20",), 6: ("fd00::20",)}[version]
    assert share.external_ips == {4: ("192.168.56.7",), 6: ("fd00::1",)}[version]
    assert share.lb_source_ranges == {4: ("203.0.113.0/24",), 6: ("2001:db8::/32",)}[version]


def test_a_service_without_a_cluster_ip_of_a_family_is_not_that_proxier_s():
    v6 = parse_service(with_spec(clusterIPs=["fd00::20"], clusterIP="fd00::20", externalIPs=[]))
    assert for_family(v6, 4) is None and for_family(v6, 6).cluster_ips == ("fd00::20",)


@pytest.mark.parametrize("bad", ["::1", "::", "ff02::1", "::ffff:10.0.0.1", "fd00::g"])
def test_ipv6_addresses_a_service_cannot_have_are_refused(bad):
    with pytest.raises(InvalidObject):
        parse_service(with_spec(clusterIPs=["10.96.0.20", bad]))


def test_an_ipv6_slice_takes_ipv6_addresses_only():
    v6 = {**SLICE, "addressType": "IPv6", "endpoints": [{"addresses": ["fd00:10:244:1:0::5"], "nodeName": "node1"}]}
    sl = parse_endpoint_slice(v6)
    assert sl.family == 6 and sl.endpoints[0].ip == "fd00:10:244:1::5"
    assert parse_endpoint_slice(SLICE).family == 4
    with pytest.raises(InvalidObject):                      # out of the slice's family: skipped, logged
        parse_endpoint_slice({**v6, "endpoints": [{"addresses": ["10.244.1.5"]}]})
    with pytest.raises(InvalidObject):
        parse_endpoint_slice({**SLICE, "endpoints": [{"addresses": ["fd00::5"]}]})


def test_slice_fields_and_conditions():
    sl = parse_endpoint_slice(SLICE)
    assert sl.service_key == ("default", "web")
    a, b, c = sl.endpoints
    assert (a.ip, a.ready, a.serving, a.terminating, a.node_name, a.zone, a.hint_zones) == \
        ("10.244.1.5", True, True, False, "node1", "zone-a", ("zone-a",))
    assert (b.ready, b.serving, b.terminating, b.hint_zones) == (False, True, True, None)
    assert (c.ready, c.serving) == (True, True)                 # nil conditions mean ready
    assert sl.ports[0].port == 8080 and sl.ports[0].protocol == "tcp"


@pytest.mark.parametrize("change", [
    {"metadata": {"namespace": "default", "name": "orphan"}},                  # no service label
    {"addressType": "FQDN"},
])
def test_slices_left_alone(change):
    assert parse_endpoint_slice({**SLICE, **change}) is None


@pytest.mark.parametrize("change", [
    {"endpoints": [{"addresses": []}]}, {"endpoints": [{"addresses": ["10.1.1"]}]},
    {"endpoints": [{"addresses": ["0.0.0.0"]}]}, {"endpoints": "x"}, {"ports": [{"port": -1}]},
    {"endpoints": [{"addresses": ["10.0.0.1"], "conditions": "yes"}]},
])
def test_invalid_slices_raise(change):
    with pytest.raises(InvalidObject):
        parse_endpoint_slice({**SLICE, **change})


def test_node_zone():
    assert parse_node({"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "zone-b"}}}).zone == "zone-b"
    assert parse_node({"metadata": {"name": "n1"}}).zone == ""


def test_lb_ingress_in_ip_mode_proxy_is_left_to_the_load_balancer():
    obj = copy.deepcopy(SVC)
    obj["status"]["loadBalancer"]["ingress"] = [
        {"ip": "198.51.100.1", "ipMode": "VIP"}, {"ip": "198.51.100.2", "ipMode": "Proxy"},
        {"ip": "198.51.100.3"}]
    assert parse_service(obj).lb_ips == ("198.51.100.1", "198.51.100.3")


def test_a_node_being_deleted_or_marked_by_the_autoscaler_is_not_eligible():
    assert parse_node({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "other"}]}}).eligible
    assert not parse_node({"metadata": {"name": "n1", "deletionTimestamp": "2026-01-01T00:00:00Z"}}).eligible
    assert not parse_node({"metadata": {"name": "n1"}, "spec": {"taints": [
        {"key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule"}]}}).eligible
    assert parse_node({"metadata": {"name": "n1"}, "spec": {"taints": "junk"}}).eligible



def test_ipv6_addresses_read_as_ipaddress_reads_them():
    rnd = random.Random(6)
    texts = ["fd00::5", "FD00:0:0:0:0:0:0:5", "fd00:0:0:1:0:0:0:5", "1:0:0:2:0:0:0:3", "0:0:1::", "::2:3",
             "::1.2.3.4", "::ffff:1.2.3.4", "64:ff9b::1.2.3.4", "fe80::1%eth0", "fe80::1%", "fd00::1:2:3:4:5:6:7",
             "fd00::01.2.3.4", "fd00:::1", "fd00::12345", " fd00::1", "fd00::1\0", "ff02::1", "::", "::1", "::102:304"]
    for _ in range(3000):
        # hextets mostly zero, so runs of zeros of every length and place are compared
        words = [rnd.choice((0, 0, 0, 1, 0xFFFF, rnd.randrange(1 << 16))) for _ in range(8)]
        addr = ipaddress.IPv6Address(b"".join(w.to_bytes(2, "big") for w in words))
        texts += [str(addr), addr.exploded, addr.exploded.upper()]
    for text in texts:
        try:
            want = _ipv6_checked(text, "address")         # ipaddress's reading
        except InvalidObject:
            with pytest.raises(InvalidObject):
                _ipv6(text, "address")
        else:
            assert _ipv6(text, "address") == want, text
