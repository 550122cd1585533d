"""The EndpointSlice plan: conditions, named ports, several slices, zones, minimal writes."""
from hypothesis import given, settings
from hypothesis import strategies as st
from kubeweft.lab.controllers.endpointslices import (
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    MANAGED_BY,
    parse_pod,
    parse_service,
    plan_endpoint_slices,
)


def service(name="h2-web", selector=None, ports=None, **extra) -> dict:
    spec = {"selector": {"app": "web"} if selector is None else selector,
            "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "clusterIP": "10.96.0.5", "type": "ClusterIP"}
    spec.update(extra.pop("spec", {}))
    meta = {"name": name, "namespace": "default", "uid": "svc-uid", **extra}
    return {"metadata": meta, "spec": spec}


def pod(name, ip="10.244.1.5", ready=True, node="node1", labels=None, ports=None, deleting=False,
        phase="Running") -> dict:
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels or {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def plan(svc, pods, zones=None, existing=(), **kw):
    return plan_endpoint_slices(parse_service(svc), [parse_pod(p) for p in pods], zones or {},
                                list(existing), **kw)


def materialize(p, existing=()):
    """Apply a plan to a list of slices the way the store would (names for generateName)."""
    by_name = {s["metadata"]["name"]: s for s in existing}
    for name in p.delete:
        del by_name[name]
    for s in p.update:
        by_name[s["metadata"]["name"]] = s
    for i, s in enumerate(p.create):
        s = dict(s, metadata=dict(s["metadata"], name=f"{s['metadata']['generateName']}n{len(by_name)}{i}"))
        by_name[s["metadata"]["name"]] = s
    return list(by_name.values())


def test_ready_not_ready_and_terminating_conditions():
    p = plan(service(), [pod("a", "10.244.1.2"), pod("b", "10.244.1.3", ready=False),
                         pod("c", "10.244.1.4", deleting=True), pod("d", "10.244.1.5", ready=False, deleting=True),
                         pod("e", ""), pod("f", "10.244.1.7", phase="Succeeded")])
    assert len(p.create) == 1 and not p.update and not p.delete
    s = p.create[0]
    assert s["addressType"] == "IPv4" and s["metadata"]["generateName"] == "h2-web-"
    assert s["metadata"]["labels"] == {LABEL_SERVICE_NAME: "h2-web", LABEL_MANAGED_BY: MANAGED_BY}
    assert s["metadata"]["ownerReferences"][0] == {"apiVersion": "v1", "kind": "Service", "name": "h2-web",
                                                   "uid": "svc-uid", "controller": True,
                                                   "blockOwnerDeletion": True}
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    conds = {ep["targetRef"]["name"]: ep["conditions"] for ep in s["endpoints"]}
    assert conds == {"a": {"ready": True, "serving": True, "terminating": False},
                     "b": {"ready": False, "serving": False, "terminating": False},
                     "c": {"ready": False, "serving": True, "terminating": True},
                     "d": {"ready": False, "serving": False, "terminating": True}}
    a = s["endpoints"][0]
    assert a["addresses"] == ["10.244.1.2"] and a["nodeName"] == "node1"
    assert a["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}


def test_pods_of_other_namespaces_are_left_out():
    elsewhere = pod("y")
    elsewhere["metadata"]["namespace"] = "other"
    # plan_endpoint_slices trusts its caller for selector matching but not for the namespace
    assert plan(service(), [elsewhere, pod("a")]).create[0]["endpoints"][0]["targetRef"]["name"] == "a"
    assert len(plan(service(), [elsewhere, pod("a")]).create[0]["endpoints"]) == 1


def test_named_target_port_resolved_per_pod_into_separate_slices():
    svc = service(ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"},
                         {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090}])
    pods = [pod("a", "10.244.1.2", ports=[{"name": "web", "containerPort": 8080, "protocol": "TCP"}]),
            pod("b", "10.244.1.3", ports=[{"name": "web", "containerPort": 8081, "protocol": "TCP"}]),
            pod("c", "10.244.1.4", ports=[{"name": "web", "containerPort": 8080, "protocol": "TCP"}]),
            pod("d", "10.244.1.5", ports=[{"name": "other", "containerPort": 8080, "protocol": "TCP"}]),
            pod("e", "10.244.1.6", ports=[{"name": "web", "containerPort": 8080, "protocol": "UDP"}])]
    p = plan(svc, pods)
    by_ports = {tuple(pp["port"] for pp in s["ports"]): sorted(ep["targetRef"]["name"] for ep in s["endpoints"])
                for s in p.create}
    # d and e cannot resolve "web" (wrong name, wrong protocol): left out of that port only
    assert by_ports == {(8080, 9090): ["a", "c"], (8081, 9090): ["b"], (9090,): ["d", "e"]}


def test_at_most_100_per_slice_and_minimal_updates():
    pods = [pod(f"p{i:03}", f"10.244.{i // 200}.{i % 200 + 2}") for i in range(250)]
    p = plan(service(), pods)
    assert sorted(len(s["endpoints"]) for s in p.create) == [50, 100, 100]
    slices = materialize(p)
    # nothing changed: no writes at all
    assert plan(service(), pods, existing=slices).empty
    # one pod turns unready: exactly one slice is rewritten, in place
    pods[120] = pod("p120", "10.244.0.122", ready=False)
    p2 = plan(service(), pods, existing=slices)
    assert len(p2.update) == 1 and not p2.create and not p2.delete
    # one pod goes away and a new one arrives: the new one fills the hole in the same slice
    slices = materialize(p2, slices)
    pods = pods[:120] + pods[121:] + [pod("zzz", "10.244.9.9")]
    p3 = plan(service(), pods, existing=slices)
    assert len(p3.update) == 1 and not p3.create and not p3.delete
    names = [ep["targetRef"]["name"] for ep in p3.update[0]["endpoints"]]
    assert "zzz" in names and "p120" not in names


def test_empty_placeholder_slice_created_once_and_kept():
    p = plan(service(), [])
    assert len(p.create) == 1 and p.create[0]["endpoints"] == [] and "ports" not in p.create[0]
    slices = materialize(p)
    assert plan(service(), [], existing=slices).empty
    # endpoints arrive: the placeholder is recycled into the real slice (one update, as real)
    p2 = plan(service(), [pod("a")], existing=slices)
    assert not p2.delete and not p2.create and len(p2.update) == 1
    assert p2.update[0]["metadata"]["name"] == slices[0]["metadata"]["name"]
    assert p2.update[0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    # and when they all leave, it becomes the placeholder again
    slices = materialize(p2, slices)
    p3 = plan(service(), [], existing=slices)
    assert not p3.delete and not p3.create
    assert p3.update[0]["endpoints"] == [] and "ports" not in p3.update[0]
    # a slice of a port group that disappeared is recycled too
    two = materialize(plan(service(), [pod("a"), pod("b", "10.244.1.6")]))
    svc2 = service(ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9999}])
    p4 = plan(svc2, [pod("a"), pod("b", "10.244.1.6")], existing=two)
    assert not p4.delete and not p4.create and p4.update[0]["ports"][0]["port"] == 9999


def test_zone_hints_for_prefer_close_and_topology_auto():
    zones = {"node1": "zone-a", "node2": "zone-b"}
    pods = [pod("a", "10.244.1.2", node="node1"), pod("b", "10.244.2.2", node="node2")]
    plain = plan(service(), pods, zones).create[0]["endpoints"]
    assert [ep["zone"] for ep in plain] == ["zone-a", "zone-b"] and "hints" not in plain[0]
    close = plan(service(spec={"trafficDistribution": "PreferClose"}), pods, zones).create[0]["endpoints"]
    assert [ep["hints"] for ep in close] == [{"forZones": [{"name": "zone-a"}]},
                                            {"forZones": [{"name": "zone-b"}]}]
    auto = service(annotations={"service.kubernetes.io/topology-mode": "Auto"})
    assert plan(auto, pods, zones).create[0]["endpoints"][1]["hints"] == {"forZones": [{"name": "zone-b"}]}
    # one endpoint without a zone: no hints anywhere (as the real controller falls back)
    partial = plan(auto, pods, {"node1": "zone-a"}).create[0]["endpoints"]
    assert all("hints" not in ep for ep in partial)


def test_traffic_distribution_hints_per_ready_endpoint():
    zones = {"node1": "zone-a", "node2": "zone-b"}
    pods = [pod("a", "10.244.1.2", node="node1"), pod("b", "10.244.2.2", node="node2"),
            pod("c", "10.244.3.2", node="node3"), pod("d", "10.244.1.3", node="node1", ready=False)]
    same_node = plan(service(spec={"trafficDistribution": "PreferSameNode"}), pods, zones).create[0]["endpoints"]
    assert [ep.get("hints") for ep in same_node] == [
        {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node1"}]},
        {"forZones": [{"name": "zone-b"}], "forNodes": [{"name": "node2"}]},
        {"forNodes": [{"name": "node3"}]},          # no zone: a node hint alone
        None]                                        # not ready: no hints
    same_zone = plan(service(spec={"trafficDistribution": "PreferSameZone"}), pods, zones).create[0]["endpoints"]
    assert [ep.get("hints") for ep in same_zone] == [{"forZones": [{"name": "zone-a"}]},
                                                     {"forZones": [{"name": "zone-b"}]}, None, None]
    # the topology-mode annotation wins over trafficDistribution
    both = service(annotations={"service.kubernetes.io/topology-mode": "Auto"},
                   spec={"trafficDistribution": "PreferSameNode"})
    assert all("hints" not in ep for ep in plan(both, pods, zones).create[0]["endpoints"])


def test_service_labels_copied_headless_marked_and_relabel_updates():
    svc = service(labels={"team": "h2", LABEL_SERVICE_NAME: "spoof"}, spec={"clusterIP": "None"})
    s = plan(svc, [pod("a")]).create[0]
    assert s["metadata"]["labels"] == {"team": "h2", LABEL_SERVICE_NAME: "h2-web",
                                       LABEL_MANAGED_BY: MANAGED_BY, "service.kubernetes.io/headless": ""}
    slices = materialize(plan(service(), [pod("a")]))
    p = plan(service(labels={"team": "h2"}), [pod("a")], existing=slices)
    assert len(p.update) == 1 and p.update[0]["metadata"]["labels"]["team"] == "h2"


def test_publish_not_ready_addresses_and_hostname():
    svc = service(spec={"publishNotReadyAddresses": True})
    p = pod("a", ready=False)
    p["spec"].update(hostname="a", subdomain="h2-web")
    ep = plan(svc, [p]).create[0]["endpoints"][0]
    assert ep["conditions"] == {"ready": True, "serving": False, "terminating": False}
    assert ep["hostname"] == "a"


# --- properties: whatever happened before, one plan gets the slices exactly right -------------

pod_states = st.lists(
    st.tuples(st.integers(0, 60), st.booleans(), st.booleans(), st.sampled_from(["web", "alt", "none"])),
    max_size=60, unique_by=lambda t: t[0])


def pods_from(states):
    ports = {"web": [{"name": "web", "containerPort": 8080, "protocol": "TCP"}],
             "alt": [{"name": "web", "containerPort": 9090, "protocol": "TCP"}], "none": []}
    return [pod(f"p{i:02}", f"10.244.0.{i + 2}", ready=ready, deleting=deleting, ports=ports[kind])
            for i, ready, deleting, kind in states]


NAMED = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"},
         {"name": "raw", "port": 81, "protocol": "TCP", "targetPort": 7000}]


@settings(max_examples=150, deadline=None)
@given(before=pod_states, after=pod_states, size=st.integers(1, 7))
def test_any_history_converges_in_one_plan(before, after, size):
    svc = service(ports=NAMED)
    slices = materialize(plan(svc, pods_from(before), max_endpoints=size))
    p = plan(svc, pods_from(after), existing=slices, max_endpoints=size)
    result = materialize(p, slices)
    got = sorted((ep["targetRef"]["name"], tuple(pp["port"] for pp in s.get("ports", [])),
                  ep["conditions"]["ready"]) for s in result for ep in s["endpoints"])
    want = []
    for pd in pods_from(after):
        ports = tuple(n for n in (8080 if pd["spec"]["containers"][0]["ports"] and
                                  pd["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080
                                  else 9090 if pd["spec"]["containers"][0]["ports"] else None, 7000) if n)
        ready = pd["status"]["conditions"][0]["status"] == "True" and "deletionTimestamp" not in pd["metadata"]
        want.append((pd["metadata"]["name"], ports, ready))
    assert got == sorted(want)
    assert all(len(s["endpoints"]) <= size for s in result)
    # every slice holds one port group; a placeholder only when there is nothing else
    assert len({s["metadata"]["name"] for s in result}) == len(result)
    assert (not want) == (len(result) == 1 and result[0]["endpoints"] == [])
    assert all(s["endpoints"] for s in result) or not want
    # and planning again changes nothing
    assert plan(svc, pods_from(after), existing=result, max_endpoints=size).empty


def dual_pod(name, ips, **kw):
    p = pod(name, ip=ips[0], **kw)
    p["status"]["podIPs"] = [{"ip": ip} for ip in ips]
    return p


def by_type(p):
    out = {}
    for s in p.create:
        out.setdefault(s["addressType"], []).extend(a for ep in s["endpoints"] for a in ep["addresses"])
    return out


def test_one_slice_set_per_service_family_from_pod_ips():
    pods = [dual_pod("a", ["10.244.1.5", "fd00:10:244:1::5"]), dual_pod("b", ["10.244.2.6", "fd00:10:244:2::6"])]
    dual = service(spec={"ipFamilies": ["IPv4", "IPv6"], "clusterIPs": ["10.96.0.5", "fd00:10:96::5"]})
    assert by_type(plan(dual, pods)) == {"IPv4": ["10.244.1.5", "10.244.2.6"],
                                         "IPv6": ["fd00:10:244:1::5", "fd00:10:244:2::6"]}
    v6 = service(spec={"ipFamilies": ["IPv6"], "clusterIP": "fd00:10:96::5", "clusterIPs": ["fd00:10:96::5"]})
    assert by_type(plan(v6, pods)) == {"IPv6": ["fd00:10:244:1::5", "fd00:10:244:2::6"]}
    # a pod with podIP alone (no podIPs) still counts; one with no address of a family is left out of it
    only4 = pod("c", ip="10.244.3.7")
    assert by_type(plan(dual, [only4])) == {"IPv4": ["10.244.3.7"], "IPv6": []}
    # an IPv6-only Service without any IPv6 pod address keeps one empty IPv6 placeholder
    got = plan(v6, [only4]).create
    assert [(s["addressType"], s["endpoints"], "ports" in s) for s in got] == [("IPv6", [], False)]


def test_headless_without_families_gets_both_and_a_dropped_family_loses_its_slices():
    pods = [dual_pod("a", ["10.244.1.5", "fd00:10:244:1::5"])]
    headless = service(spec={"clusterIP": "None"})
    assert set(by_type(plan(headless, pods))) == {"IPv4", "IPv6"}
    dual = service(spec={"ipFamilies": ["IPv4", "IPv6"]})
    existing = materialize(plan(dual, pods))
    single = service(spec={"ipFamilies": ["IPv4"]})
    p = plan(single, pods, existing=existing)
    v6 = [s["metadata"]["name"] for s in existing if s["addressType"] == "IPv6"]
    assert p.delete == v6 and not p.create and not p.update
