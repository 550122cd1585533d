"""Hostile API objects at the watch edge, including those a real kube-apiserver refuses at
admission (the lab's validates as it does, so they are fed here raw): each is refused with
InvalidObject/ModelError or taken in, never another exception; a refused object logs one line
however often it changes; an object the consumer fails on does not stop its informer; a
churning object is one queue entry; other objects go on being programmed."""
from __future__ import annotations

import copy
import logging
import threading
import time
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeweft.proxy import model as m
from kubeweft.proxy import policy_model as pm
from kubeweft.proxy.informer import Informer
from kubeweft.proxy.nft_fake import FakeNft
from kubeweft.proxy.policy_controller import PolicyController
from kubeweft.proxy.service_proxy import ServiceProxy
from kubeweft.proxy.service_watch import ServiceWatch
from kubeweft.proxy.skip_log import REPEAT, SkipLog

CFG = SimpleNamespace(node_name="node1", cluster_cidr="10.244.0.0/16", pod_cidr="10.244.1.0/24",
                      service_cidr="10.96.0.0/12", nodeport_addresses=(), scheduler="random")
LONG = "a" * 253                               # the longest name the API gives any object


def service(name="web", ip="10.96.0.10", ports=None, **spec) -> dict:
    ports = ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports, **spec}}


def lb_service(**spec) -> dict:
    spec = {"externalTrafficPolicy": "Local", "healthCheckNodePort": 31000, "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}, "externalIPs": ["192.0.2.7"],
            "loadBalancerSourceRanges": ["198.51.100.0/24"], **spec}
    obj = service(type="LoadBalancer", ports=[{"name": "http", "port": 80, "nodePort": 30080}], **spec)
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}
    return obj


def endpoint_slice(name="web-1", service_name="web", addresses=("10.244.2.5",), ports=None) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4",
            "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": "node2", "zone": "z1", "hints": {"forZones": [{"name": "z1"}]}}
                          for a in addresses]}


def policy(name="p", peers=None, **spec) -> dict:
    peers = peers if peers is not None else [{"podSelector": {"matchLabels": {"app": "client"}}}]
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                     "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}]}],
                     "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}], **spec}}


def pod() -> dict:
    return {"metadata": {"namespace": "ns", "name": "p", "labels": {"app": "web"}},
            "spec": {"nodeName": "node1", "containers": [{"ports": [{"name": "http", "containerPort": 80}]}]},
            "status": {"podIP": "10.244.1.5", "phase": "Running"}}


# ---- every field of a valid object replaced by any JSON value ------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 70_000) | st.floats(allow_nan=True) | st.text(max_size=8)
    | st.sampled_from(["999.1.1.1", "fd00::1", "::", "1.2.3.4/33", "None", "0.0.0.0", "TCP", "In", "LoadBalancer",
                       "ClientIP", "Local", LONG]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)

BASES = [(m.parse_service, service()), (m.parse_service, lb_service()), (m.parse_endpoint_slice, endpoint_slice()),
         (m.parse_node, {"metadata": {"name": "node1", "labels": {m.LABEL_ZONE: "z1"}}}),
         (pm.parse_policy, policy()), (pm.parse_pod, pod()), (pm.parse_namespace, {"metadata": {"name": "ns"}})]


def paths(obj, prefix=()):
    """Every path into obj (dict keys, list indexes), the root's children first."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield (*prefix, k)
        yield from paths(v, (*prefix, k))


def replaced(obj, path, value):
    out = copy.deepcopy(obj)
    at = out
    for k in path[:-1]:
        at = at[k]
    at[path[-1]] = value
    return out


@pytest.mark.parametrize("parse,base", BASES, ids=[f"{p.__name__}{i}" for i, (p, _) in enumerate(BASES)])
def test_any_field_of_any_type_is_refused_or_taken_never_raises_otherwise(parse, base):
    every = list(paths(base))
    assert parse(base) is not None

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(every), JSON), min_size=1, max_size=3))
    def check(changes):
        obj = base
        for path, value in changes:
            try:
                obj = replaced(obj, path, value)
            except (KeyError, IndexError, TypeError):
                pass                       # an earlier change took that path away
        try:
            out = parse(obj)
        except (m.InvalidObject, pm.ModelError):
            return
        hash(out)                          # frozen all the way down: usable as a key and a set member
    check()


# ---- the hostile objects by name -----------------------------------------------------------------

def test_a_service_with_1000_ports_is_taken_whole():
    ports = [{"name": f"p{i}", "port": 1000 + i, "protocol": "TCP"} for i in range(1000)]
    svc = m.parse_service(service(ports=ports))
    assert len(svc.ports) == 1000 and svc.ports[-1].port == 1999


@pytest.mark.parametrize("obj,reason", [
    (service(ip="999.1.1.1"), "not an IPv4 address"),
    (service(ip="1.2.3"), "not an IPv4 address"),
    (service(ip="127.0.0.1"), "cannot be a Service"),
    (service(externalIPs=["garbage"]), "externalIPs"),
    (service(externalIPs="garbage"), "externalIPs: not a list"),
    (service(externalIPs=[{"ip": "1.2.3.4"}]), "externalIPs: not a string"),
    (lb_service(loadBalancerSourceRanges=["10.0.0.0/40"]), "not a CIDR"),
    (lb_service(loadBalancerSourceRanges=["garbage"]), "not a CIDR"),
    (lb_service(loadBalancerSourceRanges=[7]), "not a string"),
    (service(ports=[{"port": 70000}]), "not a port"),
    (service(ports=[{"port": 80, "protocol": ["TCP"]}]), "protocol"),
    (service(sessionAffinity="ClientIP", sessionAffinityConfig=[1]), "sessionAffinityConfig: not an object"),
    (dict(lb_service(), status={"loadBalancer": [1]}), "status.loadBalancer: not an object"),
    (endpoint_slice(addresses=["999.1.1.1"]), "not an IPv4 address"),
    (endpoint_slice(addresses=[""]), "not an IPv4 address"),
    (endpoint_slice(ports=[{"port": -1}]), "not a port"),
    (endpoint_slice(ports=[{"port": "http"}]), "not a port"),
])
def test_garbage_addresses_ports_and_ranges_are_refused_with_a_reason(obj, reason):
    parse = m.parse_endpoint_slice if "addressType" in obj else m.parse_service
    with pytest.raises(m.InvalidObject, match=reason):
        parse(obj)


def test_an_ipv6_only_service_is_not_the_ipv4_proxier_s():
    assert m.for_family(m.parse_service(service(ip="fd00::10")), 4) is None
    dual = service(ip="10.96.0.10", externalIPs=["2001:db8::1", "192.0.2.1"])
    dual["spec"]["clusterIPs"] = ["10.96.0.10", "fd00::10"]
    svc = m.for_family(m.parse_service(dual), 4)
    assert svc.cluster_ips == ("10.96.0.10",) and svc.external_ips == ("192.0.2.1",)


def test_253_character_names_are_taken():
    assert m.parse_service(dict(service(), metadata={"namespace": "ns", "name": LONG})).name == LONG
    assert m.parse_endpoint_slice(endpoint_slice(name=LONG, service_name=LONG)).service_name == LONG
    assert pm.parse_policy(policy(name=LONG)).name == LONG


def test_a_policy_with_10000_peers_is_enforced_whole_and_one_past_the_bound_is_refused():
    peers = [{"ipBlock": {"cidr": f"10.{i // 256}.{i % 256}.0/24"}} for i in range(10_000)]
    assert len(pm.parse_policy(policy(peers=peers)).ingress[0].peers) == 10_000
    with pytest.raises(pm.ModelError, match="more than"):
        pm.parse_policy(policy(peers=[{"podSelector": {}}] * (pm.MAX_ITEMS + 1)))


def test_selectors_that_match_everything_match_every_pod_and_namespace():
    pol = pm.parse_policy(policy(peers=[{"podSelector": {}, "namespaceSelector": {}}], podSelector={}))
    assert pol.pod_selector.empty and pol.pod_selector.matches(frozenset({("any", "thing")}))
    peer = pol.ingress[0].peers[0]
    assert peer.pod_selector.matches(frozenset()) and peer.namespace_selector.matches(frozenset())


# ---- one line per object, however often it changes -----------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_skip_log_logs_an_object_once_per_window_and_counts_the_rest(caplog):
    clock = Clock()
    skips = SkipLog(logging.getLogger("t"), "service", clock)
    with caplog.at_level(logging.WARNING, "t"):
        logged = [skips.skipped(("ns", "bad"), "bad address") for _ in range(1000)]
        skips.skipped(("ns", "other"), "line one\nline two")
    assert logged.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == ["service ns/bad skipped: bad address",
                                                        "service ns/other skipped: line one"]
    clock.now = REPEAT
    caplog.clear()
    with caplog.at_level(logging.WARNING, "t"):
        skips.skipped(("ns", "bad"), "bad address")
    assert caplog.records[0].getMessage().endswith("(and 999 more refusals of it in 60s)")
    skips.taken(("ns", "bad"))                         # valid again within its window: kept
    assert ("ns", "bad") in skips.refused
    clock.now = 2 * REPEAT
    skips.taken(("ns", "bad"))                         # after its window: forgotten
    assert ("ns", "bad") not in skips.refused


def test_a_broken_service_changed_1000_times_logs_one_line_and_others_keep_syncing(caplog):
    nft = FakeNft()
    proxy = ServiceProxy(None, CFG, nft=nft)
    watch = ServiceWatch(None, CFG, [proxy])
    watch.on_services({})
    watch.on_slices({})
    with caplog.at_level(logging.WARNING, "kubeweft.proxy.service_watch"):
        for i in range(1000):
            bad = service(name="bad", ip="999.1.1.1")
            bad["metadata"]["resourceVersion"] = str(i)
            watch.on_service("MODIFIED", bad)
        watch.on_service("ADDED", service(name="big", ip="10.96.0.11",
                                           ports=[{"name": f"p{i}", "port": 1000 + i} for i in range(1000)]))
        watch.on_slice("ADDED", endpoint_slice(name="big-1", service_name="big",
                                                ports=[{"name": f"p{i}", "port": 1000 + i} for i in range(1000)]))
        watch.on_service("ADDED", service(name="web", ip="10.96.0.10"))
        watch.on_slice("ADDED", endpoint_slice())
        watch.on_slice("ADDED", endpoint_slice(name="junk", addresses=["not-an-address"]))
        proxy.sync()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == ["service ns/bad skipped: clusterIPs: '999.1.1.1' is not an IPv4 address",
                     "endpointslice ns/junk skipped: endpoint address: 'not-an-address' is not an IPv4 address"]
    assert set(proxy.services) == {("ns", "big"), ("ns", "web")}
    table = nft.table("ip", "kubeweft")
    assert len([k for k in table.maps["service-ips"] if k.startswith("10.96.0.11 ")]) == 1000   # every port
    assert any(k.startswith("10.96.0.10 . tcp . 80") for k in table.maps["service-ips"])


def test_an_unchanged_service_value_marks_nothing_dirty():
    proxy = ServiceProxy(None, CFG, nft=FakeNft())
    watch = ServiceWatch(None, CFG, [proxy])
    watch.on_service("ADDED", service())
    proxy.dirty.clear()
    for i in range(1000):                                # status, annotations, resourceVersion churn
        obj = service()
        obj["metadata"]["annotations"] = {"churn": str(i)}
        watch.on_service("MODIFIED", obj)
    assert not proxy.dirty


# ---- the informer goes on past an object its consumer fails on ------------------------------------

def test_an_informer_skips_an_object_its_consumer_fails_on_and_delivers_the_rest(caplog):
    seen = []

    def on_event(etype, obj):
        if obj["metadata"]["name"] == "poison":
            raise KeyError("spec")
        seen.append(obj["metadata"]["name"])

    inf = Informer(None, "/api/v1/services", on_event=on_event, name="services")
    with caplog.at_level(logging.WARNING, "kubeweft.proxy.informer"):
        for i in range(100):
            inf._handle({"type": "MODIFIED", "object": {"metadata": {"namespace": "ns", "name": "poison",
                                                                     "resourceVersion": str(i)}}})
        inf._handle({"type": "ADDED", "object": {"metadata": {"namespace": "ns", "name": "ok",
                                                              "resourceVersion": "100"}}})
        inf._handle({"type": "ADDED", "object": {"metadata": ["not", "an", "object"]}})
        inf._handle(["not", "an", "event"])
    assert seen == ["ok"]
    assert inf.resource_version == "100"
    assert [r.getMessage() for r in caplog.records if "poison" in r.getMessage()] == [
        "services: object ns/poison skipped: KeyError: 'spec'"]


# ---- a churning object is one queue entry ----------------------------------------------------------

def test_the_policy_queue_keeps_the_latest_event_per_object_and_a_list_replaces_its_kind():
    ctl = PolicyController(None, "node1", "10.244.1.0/24", nft=object())
    for i in range(1000):
        ctl._on_event("pol", "MODIFIED", policy(name="churn", peers=[{"podSelector": {"matchLabels": {"v": str(i)}}}]))
    ctl._on_event("pol", "ADDED", policy(name="other"))
    assert len(ctl.pending) == 2
    with ctl.lock:
        ctl._plan_locked()
    churn = ctl.planner.policies["ns/churn"]
    assert churn.ingress[0].peers[0].pod_selector.match_labels == frozenset({("v", "999")})
    ctl._on_event("pod", "ADDED", pod())
    ctl._on_event("pol", "DELETED", policy(name="other"))
    ctl._on_sync("pol", {("ns", "churn"): policy(name="churn")})     # a relist: what came before is in it
    assert [v[1] for v in ctl.pending.values()] == ["ADDED", "SYNC"]
    with ctl.lock:
        ctl._plan_locked()
    assert sorted(ctl.planner.policies) == ["ns/churn"] and ("ns", "p") in ctl.planner.pods


def test_one_service_changed_1000_times_a_second_does_not_starve_an_unrelated_one():
    """The proxy's own loop on the Fake: a churning Service (its port flips on every event) and
    its EndpointSlice at 1,000 events a second each, and meanwhile new Services: each is in the
    table within a bound far above its quiet time (a starved loop would never get there)."""
    nft = FakeNft()
    proxy = ServiceProxy(None, CFG, nft=nft)
    watch = ServiceWatch(None, CFG, [proxy])
    watch.on_services({})
    watch.on_slices({})
    proxy.loop.start()
    stop = threading.Event()
    events = [0]

    def churn():
        t0, i = time.monotonic(), 0
        while not stop.is_set():
            if time.monotonic() - t0 < i / 1000:
                time.sleep(0.0005)
                continue
            watch.on_service("MODIFIED", service(name="churn", ip="10.96.1.1",
                                                  ports=[{"name": "http", "port": 80 + i % 2}]))
            watch.on_slice("MODIFIED", endpoint_slice(name="churn-1", service_name="churn",
                                                       addresses=[f"10.244.2.{i % 200 + 1}"]))
            i += 1
            events[0] = i

    def time_to_table(ip: str, name: str) -> float:
        t0 = time.monotonic()
        watch.on_service("ADDED", service(name=name, ip=ip))
        watch.on_slice("ADDED", endpoint_slice(name=f"{name}-1", service_name=name))
        while time.monotonic() - t0 < 5:
            with nft.lock:
                table = nft.table("ip", "kubeweft")
                if table is not None and f"{ip} . tcp . 80" in table.maps.get("service-ips", {}):
                    return time.monotonic() - t0
            time.sleep(0.001)
        return float("inf")

    try:
        quiet = [time_to_table(f"10.96.2.{i}", f"quiet{i}") for i in range(1, 6)]
        worker = threading.Thread(target=churn, daemon=True)
        t0 = time.monotonic()
        worker.start()
        time.sleep(0.2)
        busy = [time_to_table(f"10.96.3.{i}", f"busy{i}") for i in range(1, 11)]
        stop.set()
        worker.join(5)
        rate = events[0] / (time.monotonic() - t0)
    finally:
        stop.set()
        proxy.loop.stop(5)
    print(f"\n{rate:.0f} churn events/s; an unrelated Service into the table: quiet max {max(quiet) * 1000:.1f} ms, "
          f"under churn max {max(busy) * 1000:.1f} ms")
    assert rate > 700, rate                      # the churn ran at about the rate it claims
    assert max(busy) < 1.0, busy
