"""Admission: Service and Pod defaults, allocation from the store, validation wording."""
import copy

import pytest
from kubeweft.lab import admission, errors
from kubeweft.lab.config import LabConfig
from kubeweft.lab.resources import BY_PLURAL
from kubeweft.lab.store import Store

NS = BY_PLURAL[("", "namespaces")]
SVC = BY_PLURAL[("", "services")]
POD = BY_PLURAL[("", "pods")]
CFG = LabConfig(name="h2")


@pytest.fixture
def store() -> Store:
    s = Store()
    s.create(NS, admission.admit(s, CFG, NS, "CREATE", {"metadata": {"name": "default"}}, None))
    return s


def svc(name: str, **spec) -> dict:
    spec.setdefault("ports", [{"port": 80}])
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def create(s: Store, obj: dict, resource=SVC) -> dict:
    return s.create(resource, admission.admit(s, CFG, resource, "CREATE", obj, None))


def update(s: Store, obj: dict, resource=SVC) -> dict:
    old = s.get(resource, "default", obj["metadata"]["name"])
    return s.update(resource, admission.admit(s, CFG, resource, "UPDATE", obj, old))


def rejected(fn, *args) -> errors.APIError:
    with pytest.raises(errors.APIError) as e:
        fn(*args)
    return e.value


def test_service_defaults_and_first_cluster_ip(store):
    out = create(store, svc("h2-a", ports=[{"port": 80}]))
    spec = out["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["internalTrafficPolicy"] == "Cluster" and "externalTrafficPolicy" not in spec
    assert spec["clusterIP"] == "10.96.0.1" and spec["clusterIPs"] == ["10.96.0.1"]   # skips .0
    assert out["status"] == {"loadBalancer": {}}


def test_requested_cluster_ip_honoured_then_taken_then_freed_by_delete(store):
    create(store, svc("h2-a", clusterIP="10.96.0.10"))
    assert store.get(SVC, "default", "h2-a")["spec"]["clusterIPs"] == ["10.96.0.10"]
    e = rejected(create, store, svc("h2-b", clusterIP="10.96.0.10"))
    assert e.code == 422
    assert e.message == ('Service "h2-b" is invalid: spec.clusterIPs: Invalid value: ["10.96.0.10"]: '
                         'failed to allocate IP 10.96.0.10: provided IP is already allocated')
    store.delete(SVC, "default", "h2-a")
    assert create(store, svc("h2-b", clusterIP="10.96.0.10"))["spec"]["clusterIP"] == "10.96.0.10"
    # dynamic allocation never hands out an address that is in use
    ips = {create(store, svc(f"h2-d{i}"))["spec"]["clusterIP"] for i in range(20)}
    assert len(ips) == 20 and "10.96.0.10" not in ips


def test_cluster_ip_out_of_range_wording(store):
    e = rejected(create, store, svc("h2-a", clusterIP="10.0.0.1"))
    assert e.message == ('Service "h2-a" is invalid: spec.clusterIPs: Invalid value: ["10.0.0.1"]: '
                         'failed to allocate IP 10.0.0.1: the provided IP (10.0.0.1) is not in the valid '
                         'range. The range of valid IPs is 10.96.0.0/12')
    assert e.details["causes"][0]["field"] == "spec.clusterIPs"


def test_headless_and_external_name_get_no_address(store):
    h = create(store, svc("h2-h", clusterIP="None", selector={"app": "x"}))
    assert h["spec"]["clusterIPs"] == ["None"]
    x = create(store, {"metadata": {"name": "h2-x", "namespace": "default"},
                       "spec": {"type": "ExternalName", "externalName": "example.com"}})
    assert "clusterIP" not in x["spec"] and "ipFamilies" not in x["spec"]


def test_port_validation_wording(store):
    e = rejected(create, store, svc("h2-a", ports=[{"port": 70000}]))   # targetPort defaults to 70000 too
    assert [c["field"] for c in e.details["causes"]] == ["spec.ports[0].port", "spec.ports[0].targetPort"]
    e = rejected(create, store, svc("h2-a", ports=[{"port": 70000, "targetPort": 80}]))
    assert e.message == ('Service "h2-a" is invalid: spec.ports[0].port: Invalid value: 70000: '
                         'must be between 1 and 65535, inclusive')
    e = rejected(create, store, svc("h2-a", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]))
    assert e.message.startswith('Service "h2-a" is invalid: spec.ports[1]: Duplicate value: '
                                'core.ServicePort{Name:"", Protocol:"TCP"')
    e = rejected(create, store, svc("h2-a", ports=[{"port": 80}, {"port": 81}]))
    assert [c["field"] for c in e.details["causes"]] == ["spec.ports[0].name", "spec.ports[1].name"]
    assert e.details["causes"][0]["message"] == "Required value"
    e = rejected(create, store, svc("h2-a", ports=[{"port": 80, "protocol": "ICMP"}]))
    assert e.message.endswith('spec.ports[0].protocol: Unsupported value: "ICMP": supported values: '
                              '"SCTP", "TCP", "UDP"')
    # nothing was allocated by the failed creates
    assert create(store, svc("h2-ok"))["spec"]["clusterIP"] == "10.96.0.1"


def test_node_ports_allocated_honoured_and_conflicting(store):
    a = create(store, svc("h2-a", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert a["spec"]["ports"][0]["nodePort"] == 30080
    assert a["spec"]["externalTrafficPolicy"] == "Cluster"
    e = rejected(create, store, svc("h2-b", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert e.message == ('Service "h2-b" is invalid: spec.ports[0].nodePort: Invalid value: 30080: '
                         'provided port is already allocated')
    e = rejected(create, store, svc("h2-b", type="NodePort", ports=[{"port": 80, "nodePort": 80}]))
    assert e.message.endswith("provided port is not in the valid range. The range of valid ports is "
                              "30000-32767")
    b = create(store, svc("h2-b", type="NodePort", ports=[{"name": "d", "port": 53, "protocol": "TCP"},
                                                          {"name": "u", "port": 53, "protocol": "UDP"}]))
    nps = [p["nodePort"] for p in b["spec"]["ports"]]
    assert nps[0] == nps[1] and 30000 <= nps[0] <= 32767 and nps[0] != 30080
    store.delete(SVC, "default", "h2-a")
    assert create(store, svc("h2-c", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))


def test_load_balancer_local_gets_health_check_port(store):
    lb = create(store, svc("h2-lb", type="LoadBalancer", externalTrafficPolicy="Local"))
    spec = lb["spec"]
    assert spec["ports"][0]["nodePort"] and spec["healthCheckNodePort"]
    assert spec["healthCheckNodePort"] != spec["ports"][0]["nodePort"]
    np = create(store, svc("h2-np", type="NodePort", externalTrafficPolicy="Local"))
    assert "healthCheckNodePort" not in np["spec"]
    e = rejected(create, store, svc("h2-c", type="ClusterIP", externalTrafficPolicy="Local"))
    assert "spec.externalTrafficPolicy: Invalid value: \"Local\"" in e.message


def test_update_keeps_allocations_and_cluster_ip_is_immutable(store):
    create(store, svc("h2-a", type="NodePort"))
    cur = store.get(SVC, "default", "h2-a")
    # a replace without the allocated values keeps them (patchAllocatedValues)
    out = update(store, svc("h2-a", type="NodePort", ports=[{"port": 80}]) | {
        "metadata": {"name": "h2-a", "namespace": "default", "labels": {"x": "y"}}})
    assert out["spec"]["clusterIP"] == cur["spec"]["clusterIP"]
    assert out["spec"]["ports"][0]["nodePort"] == cur["spec"]["ports"][0]["nodePort"]
    # a patch of clusterIP alone (clusterIPs still the old ones) is judged on the new address
    patched = dict(cur, spec=dict(cur["spec"], clusterIP="10.96.0.99"))
    e = rejected(update, store, patched)
    assert 'spec.clusterIPs[0]: Invalid value: ["10.96.0.99"]: may not change once set' in e.message
    e = rejected(update, store, svc("h2-a", type="NodePort", clusterIP="10.96.0.99"))
    assert e.code == 422 and "spec.clusterIP: Invalid value: \"10.96.0.99\": field is immutable" in e.message
    assert 'spec.clusterIPs[0]: Invalid value: ["10.96.0.99"]: may not change once set' in e.message
    # NodePort -> ClusterIP drops the node port and frees it for another Service
    np = cur["spec"]["ports"][0]["nodePort"]
    back = update(store, {**svc("h2-a"), "spec": {**cur["spec"], "type": "ClusterIP"}})
    assert "nodePort" not in back["spec"]["ports"][0] and "externalTrafficPolicy" not in back["spec"]
    assert create(store, svc("h2-b", type="NodePort", ports=[{"port": 80, "nodePort": np}]))


def pod(name: str, **spec) -> dict:
    spec.setdefault("containers", [{"name": "c", "image": "busybox:1.36", "ports": [{"containerPort": 80}]}])
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def test_pod_defaults(store):
    p = create(store, pod("h2-p"), POD)
    spec = p["spec"]
    assert (spec["restartPolicy"], spec["dnsPolicy"], spec["terminationGracePeriodSeconds"],
            spec["schedulerName"]) == ("Always", "ClusterFirst", 30, "default-scheduler")
    assert spec["containers"][0]["ports"][0]["protocol"] == "TCP"
    assert spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert p["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    g = create(store, pod("h2-g", containers=[{"name": "c", "image": "x", "resources": {
        "limits": {"cpu": "1", "memory": "1Gi"}}}]), POD)
    assert g["status"]["qosClass"] == "Guaranteed"


def test_pod_update_rule(store):
    create(store, pod("h2-p"), POD)
    cur = store.get(POD, "default", "h2-p")

    def changed(change) -> dict:
        """The stored pod with a change, as a client's read-modify-write sends it."""
        new = copy.deepcopy(store.get(POD, "default", "h2-p"))
        new["metadata"].pop("resourceVersion")
        change(new)
        return new
    ok = changed(lambda p: (p["spec"]["containers"][0].update(image="busybox:1.37"),
                            p["metadata"].update(labels={"a": "b"})))
    assert update(store, ok, POD)["spec"]["containers"][0]["image"] == "busybox:1.37"
    bad = changed(lambda p: p["spec"]["containers"][0].update(ports=[{"containerPort": 81, "protocol": "TCP"}]))
    e = rejected(update, store, bad, POD)
    assert e.code == 422
    assert e.message.startswith('Pod "h2-p" is invalid: spec: Forbidden: pod updates may not change fields '
                                'other than `spec.containers[*].image`')
    assert rejected(update, store, changed(lambda p: p["spec"].update(terminationGracePeriodSeconds=5)),
                    POD).code == 422
    deadline = changed(lambda p: p["spec"].update(activeDeadlineSeconds=60))
    assert update(store, deadline, POD)["spec"]["activeDeadlineSeconds"] == 60
    # a hand-made spec without what admission added at creation (the ServiceAccount, its token
    # volume) changes the spec, as on a real server
    bare = pod("h2-p", containers=[{"name": "c", "image": "busybox:1.37", "ports": [{"containerPort": 80}]}])
    assert rejected(update, store, bare, POD).code == 422
    # a status write is not subject to the spec rule
    st = {**bad, "status": {"phase": "Running"}}
    assert admission.admit(store, CFG, POD, "UPDATE", st, cur, subresource="status") is st


def test_namespace_phase(store):
    ns = store.get(NS, "", "default")
    assert ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "default"


def test_wrong_field_types_are_a_bad_request_not_a_crash(store):
    for spec in ({"ports": [80]}, {"ports": [{"port": 80}], "clusterIPs": 5}, {"ports": "80"}):
        e = rejected(create, store, {"metadata": {"name": "h2-t", "namespace": "default"}, "spec": spec})
        assert e.code == 400 and e.message.startswith('Service in version "v1" cannot be handled as a Service')
    e = rejected(create, store, {"metadata": {"name": "h2-t", "namespace": "default"},
                                 "spec": {"containers": ["c"]}}, POD)
    assert e.code == 400


def test_affinity_families_and_external_ips(store):
    ok = create(store, svc("h2-aff", sessionAffinity="ClientIP"))
    assert ok["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    e = rejected(create, store, svc("h2-b", sessionAffinity="ClientIP",
                                    sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}))
    assert e.message.endswith("spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: "
                              "must be greater than 0 and less than 86400")
    e = rejected(create, store, svc("h2-b", ipFamilies=["IPv6"]))
    assert e.message.endswith('spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster')
    e = rejected(create, store, svc("h2-b", externalIPs=["1.2.3.4", "nope"]))
    assert [c["field"] for c in e.details["causes"]] == ["spec.externalIPs[1]"]



def test_load_balancer_source_ranges_are_cidrs_of_load_balancers_only(store):
    ok = create(store, svc("h2-lbsr", type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0/8", " 192.168.0.0/16"]))
    assert ok["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8", " 192.168.0.0/16"]
    e = rejected(create, store, svc("h2-b", type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0/8", "garbage",
                                                                                          "10.1.2.3"]))
    assert [c["field"] for c in e.details["causes"]] == ["spec.LoadBalancerSourceRanges[1]",
                                                          "spec.LoadBalancerSourceRanges[2]"]
    assert 'Invalid value: "garbage": must be a valid CIDR value' in e.message
    e = rejected(create, store, svc("h2-b", loadBalancerSourceRanges=["10.0.0.0/8"]))
    assert e.message.endswith("spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'")

def test_node_pod_cidr_may_only_be_set_once(store):
    nodes = BY_PLURAL[("", "nodes")]
    store.create(nodes, {"metadata": {"name": "h2n"}, "spec": {"podCIDR": "10.244.3.0/24",
                                                              "podCIDRs": ["10.244.3.0/24"]}})
    old = store.get(nodes, "", "h2n")
    e = rejected(admission.admit, store, CFG, nodes, "UPDATE", {"metadata": {"name": "h2n"}, "spec": {}}, old)
    assert e.message == ('Node "h2n" is invalid: spec.podCIDRs: Forbidden: node updates may not change '
                         'podCIDR except from "" to valid')
    same = {"metadata": {"name": "h2n", "labels": {"a": "b"}}, "spec": dict(old["spec"])}
    assert admission.admit(store, CFG, nodes, "UPDATE", same, old) is same


def test_node_pod_cidrs_one_per_family():
    nodes = BY_PLURAL[("", "nodes")]
    ok = {"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]}}
    assert admission.admit(Store(), CFG, nodes, "CREATE", ok, None) is ok
    two4 = {"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24"]}}
    e = rejected(admission.admit, Store(), CFG, nodes, "CREATE", two4, None)
    assert e.message == ('Node "n" is invalid: spec.podCIDRs: Invalid value: ["10.244.1.0/24","10.244.2.0/24"]: '
                         "may specify no more than one CIDR for each IP family")
    bad = {"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.244.1.0/33"]}}
    e = rejected(admission.admit, Store(), CFG, nodes, "CREATE", bad, None)
    assert e.details["causes"][0]["field"] == "spec.podCIDRs[0]"


def test_cluster_ips_come_from_every_service_cidr_with_an_ip_address_each():
    from kubeweft.lab.apiserver.app import ensure_service_cidr

    cfg = LabConfig(name="h15", service_cidr="10.96.0.0/29")            # .1 to .6
    cidrs, addresses = BY_PLURAL[("networking.k8s.io", "servicecidrs")], BY_PLURAL[("networking.k8s.io", "ipaddresses")]
    s = Store()
    s.create(NS, admission.admit(s, cfg, NS, "CREATE", {"metadata": {"name": "default"}}, None))
    ensure_service_cidr(s, cfg)
    default = s.get(cidrs, "", "kubernetes")
    assert default["spec"]["cidrs"] == ["10.96.0.0/29"] and default["status"]["conditions"][0]["type"] == "Ready"

    def make(name, **spec):
        return s.create(SVC, admission.admit(s, cfg, SVC, "CREATE", svc(name, **spec), None))["spec"]["clusterIP"]
    got = [make(f"a{i}") for i in range(6)]
    assert got == [f"10.96.0.{i}" for i in range(1, 7)]
    ip = s.get(addresses, "", "10.96.0.3")
    assert ip["spec"]["parentRef"] == {"group": "", "resource": "services", "namespace": "default", "name": "a2"}
    assert ip["metadata"]["labels"]["ipaddress.kubernetes.io/managed-by"] == "ipallocator.k8s.io"
    with pytest.raises(errors.APIError):
        make("full")                                                      # the only range is full
    extra = {"metadata": {"name": "extra"}, "spec": {"cidrs": ["10.100.0.0/29"]}}
    s.create(cidrs, admission.admit(s, cfg, cidrs, "CREATE", extra, None))
    assert make("b0") == "10.100.0.1" and make("b1", clusterIP="10.100.0.5") == "10.100.0.5"
    assert s.try_get(addresses, "", "10.100.0.5") is not None
    # a deleted Service frees its address, and its IPAddress goes
    s.delete(SVC, "default", "a2")
    assert s.try_get(addresses, "", "10.96.0.3") is None
    assert make("c0") == "10.96.0.3"
    # validation as the real server words it
    for bad, detail in ((["10.0.0.1/8"], "must be a valid CIDR value"), (["10.0.0.0/8", "11.0.0.0/8"],
                                                                          "no more than one IP for each IP family")):
        e = rejected(admission.admit, s, cfg, cidrs, "CREATE", {"metadata": {"name": "bad"}, "spec": {"cidrs": bad}},
                     None)
        assert e.code == 422 and detail in e.message, e.message
