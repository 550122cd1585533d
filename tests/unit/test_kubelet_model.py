"""The lab kubelet's pure part: pods and nodes in, status documents, conflist and routes out."""
from kubeweft.lab.kubelet import model
from kubeweft.lab.kubelet.sandbox import render_workload_env


def pod_obj(**spec_extra) -> dict:
    return {
        "metadata": {"name": "web", "namespace": "demo", "uid": "u-1", "resourceVersion": "7"},
        "spec": {"nodeName": "node2", "containers": [{
            "name": "app",
            "ports": [{"containerPort": 80, "name": "http"},
                      {"containerPort": 53, "protocol": "UDP", "hostPort": 5353},
                      {"containerPort": 80, "protocol": "TCP"}],
            "env": [{"name": "KUBEWEFT_TERM_DELAY", "value": "3"},
                    {"name": "FROM_REF", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 0},
        }], **spec_extra},
        "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-01-01T00:00:01Z"}]},
    }


def test_parse_pod_ports_probe_env_and_grace():
    pod = model.parse_pod(pod_obj(terminationGracePeriodSeconds=7))
    assert (pod.key, pod.uid, pod.node_name, pod.containers) == ("demo/web", "u-1", "node2", ("app",))
    assert pod.probe == model.Probe("http", 80, "/ready", period=10.0)       # named port; 0 means default
    assert pod.grace_seconds == 7 and not pod.deleting and not pod.host_network
    assert pod.env == (("KUBEWEFT_TERM_DELAY", "3"),)                       # valueFrom is not resolved
    assert pod.conditions[0].status is True and pod.start_time == "2026-01-01T00:00:00Z"
    assert model.render_ports_arg(pod) == "80/TCP,53/UDP"
    assert model.render_port_mappings(pod) == [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]


def test_deletion_grace_wins_over_spec_and_defaults():
    obj = pod_obj(terminationGracePeriodSeconds=7)
    obj["metadata"].update(deletionTimestamp="2026-01-01T00:01:00Z", deletionGracePeriodSeconds=2)
    pod = model.parse_pod(obj)
    assert pod.deleting and pod.grace_seconds == 2
    bare = model.parse_pod({"metadata": {"name": "x", "namespace": "d", "uid": "u"}, "spec": {}})
    assert bare.grace_seconds == model.DEFAULT_GRACE and bare.containers == ("main",) and bare.probe is None
    assert model.render_ports_arg(bare) == ""


def test_tcp_probe_and_unknown_named_port():
    ports = (model.Port(8080, name="web"),)
    assert model.parse_probe({"tcpSocket": {"port": 8080}, "timeoutSeconds": 2}, ports).kind == "tcp"
    assert model.parse_probe({"tcpSocket": {"port": "nope"}}, ports) is None
    assert model.parse_probe({"exec": {"command": ["true"]}}, ports) is None


def test_container_id_is_stable_and_distinct():
    assert model.container_id("a") == model.container_id("a") != model.container_id("b")
    assert len(model.container_id("a")) == 32


def test_pick_pod_ip_prefers_the_sandbox_interface():
    result = {"interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/p"}],
              "ips": [{"address": "10.244.1.1/24", "interface": 0},
                      {"address": "fd00::5/64", "interface": 2},
                      {"address": "10.244.1.5/24", "interface": 2}]}
    assert model.pick_pod_ip(result) == "10.244.1.5"
    assert model.pick_pod_ip({"ips": [{"address": "10.0.0.9/24"}]}) == "10.0.0.9"
    assert model.pick_pod_ip({"ips": []}) is None


def test_condition_keeps_transition_time_unless_status_flips():
    c1 = model.next_condition(None, "Ready", False, "t1")
    c2 = model.next_condition(c1, "Ready", False, "t2", "X", "why")
    c3 = model.next_condition(c2, "Ready", True, "t3")
    assert (c1.since, c2.since, c3.since) == ("t1", "t1", "t3")


def test_pod_status_running_ready_and_pending_with_error():
    pod = model.parse_pod(pod_obj())
    ready = model.Condition("Ready", True, "t5")
    sched, init = model.Condition("PodScheduled", True, "t0"), model.Condition("Initialized", True, "t1")
    st = model.render_pod_status(pod, phase="Running", host_ip="192.168.56.12", pod_ip="10.244.1.5",
                                 started="t0", scheduled=sched, initialized=init, ready=ready,
                                 running_since="t4", sandbox_id="abc")
    conds = {c["type"]: c for c in st["conditions"]}
    assert set(conds) == {"PodScheduled", "Initialized", "Ready", "ContainersReady"}
    assert conds["Ready"]["status"] == conds["ContainersReady"]["status"] == "True"
    assert conds["Ready"]["lastTransitionTime"] == "t5"
    assert st["podIP"] == "10.244.1.5" and st["podIPs"] == [{"ip": "10.244.1.5"}]
    assert st["hostIP"] == "192.168.56.12" and st["phase"] == "Running"
    cs = st["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and cs["state"] == {"running": {"startedAt": "t4"}}
    assert cs["containerID"] == "lab://abc"

    failed = model.Condition("Ready", False, "t6", "FailedCreatePodSandBox", "CNI error 11: try again")
    st = model.render_pod_status(pod, phase="Pending", host_ip="h", pod_ip=None, started="t0",
                                 scheduled=sched, initialized=init, ready=failed, running_since=None)
    assert "podIP" not in st and st["phase"] == "Pending"
    ready_c = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready_c["status"] == "False" and "try again" in ready_c["message"]
    cs = st["containerStatuses"][0]
    assert not cs["ready"] and cs["state"]["waiting"]["reason"] == "FailedCreatePodSandBox"


def test_node_labels_zone_and_status():
    assert model.zone_for(model.node_index("node1")) == "zone-a"
    assert model.zone_for(model.node_index("node2")) == "zone-b"
    assert model.zone_for(model.node_index("node13")) == "zone-a"
    cond = model.Condition("Ready", False, "t0", "KubeletNotReady", model.CNI_NOT_READY)
    node = model.render_node("node2", "192.168.56.12", cond, "t9")
    assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == "zone-b"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node2"
    st = node["status"]
    assert st["addresses"] == [{"type": "InternalIP", "address": "192.168.56.12"},
                               {"type": "Hostname", "address": "node2"}]
    assert st["conditions"][0]["lastHeartbeatTime"] == "t9"
    assert st["conditions"][0]["message"] == "container runtime network not ready: cni config uninitialized"
    assert st["nodeInfo"]["kubeletVersion"] == "v1.35.0-kubeweft-lab"


def test_routes_for_other_nodes_and_their_diff():
    nodes = [model.parse_node({"metadata": {"name": n}, "spec": {"podCIDR": cidr} if cidr else {},
                               "status": {"addresses": [{"type": "InternalIP", "address": ip}]} if ip else {}})
             for n, cidr, ip in (("node1", "10.244.0.0/24", "192.168.56.11"),
                                 ("node2", "10.244.1.0/24", "192.168.56.12"),
                                 ("node3", None, "192.168.56.13"),          # no podCIDR yet
                                 ("node4", "10.244.3.0/24", None))]         # no address yet
    want = model.plan_pod_routes("node1", nodes)
    assert want == {"10.244.1.0/24": "192.168.56.12"}
    change, remove = model.diff_routes({"10.244.1.0/24": "192.168.56.99", "10.244.9.0/24": "1.2.3.4"}, want)
    assert change == {"10.244.1.0/24": "192.168.56.12"} and remove == ["10.244.9.0/24"]
    assert model.diff_routes(want, want) == ({}, [])


def test_reference_conflist():
    conf = model.render_reference_conflist("10.244.1.0/24", 1500, "/data")
    bridge, portmap = conf["plugins"]
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == "lab"
    assert bridge["type"] == "bridge" and bridge["bridge"] == "cni0" and bridge["isGateway"]
    assert bridge["ipMasq"] is False and bridge["hairpinMode"] and bridge["mtu"] == 1500
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}] and bridge["ipam"]["dataDir"].startswith("/data")
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def test_workload_env_keeps_the_lab_id():
    env = render_workload_env({"KUBEWEFT_LAB_ID": "kw:t", "PATH": "/bin", "HOME": "/root"},
                              {"KUBEWEFT_LAB_ID": "evil", "KUBEWEFT_TERM_DELAY": "3", "PATH": "/x"})
    assert env["KUBEWEFT_LAB_ID"] == "kw:t" and env["PATH"] == "/bin"
    assert env["KUBEWEFT_TERM_DELAY"] == "3" and env["PYTHONUNBUFFERED"] == "1"


def test_pod_arg_matches_the_exact_pod_only():
    from kubeweft.lab.kubelet.sandbox import is_pod_arg
    argv = ["python", "-m", "kubeweft.lab.workload", "--lab", "kw", "--pod", "default/web-1", "--ports", ""]
    assert is_pod_arg(argv, "default/web-1")
    assert not is_pod_arg(argv, "default/web")
