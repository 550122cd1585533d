"""The lab kubelet's Node side, pure: the Node and Lease it writes, its conflist and routes."""
import pytest
from kubeweft.lab.kubelet import model, podspec


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


def test_port_mappings_from_host_ports():
    pod = podspec.parse_pod({"metadata": {"name": "w", "namespace": "d", "uid": "u"}, "spec": {"containers": [
        {"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}]},
        {"name": "b", "ports": [{"containerPort": 9000, "hostPort": 19000}]}]}})
    assert model.render_port_mappings(pod) == [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
                                               {"hostPort": 19000, "containerPort": 9000, "protocol": "tcp"}]


def test_node_labels_zone_and_status():
    assert model.zone_for(model.node_index("node1")) == "zone-a"
    assert model.zone_for(model.node_index("node2")) == "zone-b"
    assert model.zone_for(model.node_index("node13")) == "zone-a"
    cond = podspec.Condition("Ready", False, "t0", "KubeletNotReady", model.CNI_NOT_READY)
    node = model.render_node("node2", "192.168.56.12", cond, "t9")
    assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == "zone-b"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node2"
    st = node["status"]
    assert st["addresses"] == [{"type": "InternalIP", "address": "192.168.56.12"},
                               {"type": "Hostname", "address": "node2"}]
    assert st["conditions"][0]["lastHeartbeatTime"] == "t9"
    assert st["conditions"][0]["message"] == (
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
        "message:Network plugin returns error: cni plugin not initialized")
    assert st["conditions"][0]["reason"] == "KubeletNotReady"
    assert st["nodeInfo"]["kubeletVersion"] == "v1.35.0-kubeweft-lab"
    # a kubelet registers its Node tainted not-ready; the node lifecycle controller lifts it
    assert node["spec"]["taints"] == [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]
    assert st["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}


def test_lease_is_owned_by_the_node_and_renewed_in_micro_time():
    lease = model.render_lease("node2", "uid-2", "2026-01-01T00:00:00.123456Z")
    assert lease["metadata"] == {"name": "node2", "namespace": "kube-node-lease",
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node2",
                                                      "uid": "uid-2"}]}
    assert lease["spec"] == {"holderIdentity": "node2", "leaseDurationSeconds": 40,
                             "renewTime": "2026-01-01T00:00:00.123456Z"}
    assert "ownerReferences" not in model.render_lease("node2", "", "t")["metadata"]


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


DUAL_RESULT = {"interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/run/netns/p"}],
               "ips": [{"address": "fd00:10:244:1::5/64", "interface": 1},
                       {"address": "10.244.1.1/24", "interface": 0},
                       {"address": "10.244.1.5/24", "interface": 1}]}


@pytest.mark.parametrize("families, want", [
    ((4,), ("10.244.1.5",)),
    ((6,), ("fd00:10:244:1::5",)),
    ((4, 6), ("10.244.1.5", "fd00:10:244:1::5")),       # primary family first, whatever the order
])
def test_pod_ips_one_per_family_primary_first(families, want):
    assert model.pick_pod_ips(DUAL_RESULT, families) == want


def test_pod_ips_skip_a_family_the_result_lacks():
    assert model.pick_pod_ips({"ips": [{"address": "10.0.0.9/24"}]}, (4, 6)) == ("10.0.0.9",)
    assert model.pick_pod_ips({"ips": [{"address": "10.0.0.9/24"}]}, (6,)) == ()


def test_node_reports_an_internal_ip_per_family_primary_first():
    cond = model.Condition("Ready", True, "t0", "KubeletReady", "")
    status = model.render_node_status("node2", ("192.168.56.12", "2001:db8:56::12"), cond, "t1")
    assert status["addresses"] == [{"type": "InternalIP", "address": "192.168.56.12"},
                                   {"type": "InternalIP", "address": "2001:db8:56::12"},
                                   {"type": "Hostname", "address": "node2"}]
    node = model.parse_node({"metadata": {"name": "node2"}, "status": status,
                             "spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24", "fd00:10:244:2::/64"]}})
    assert node.internal_ips == ("192.168.56.12", "2001:db8:56::12") and node.internal_ip == "192.168.56.12"
    assert node.pod_cidrs == ("10.244.2.0/24", "fd00:10:244:2::/64")


def test_routes_per_family_via_the_same_family_address():
    def node(name, cidrs, ips):
        return model.parse_node({"metadata": {"name": name}, "spec": {"podCIDRs": cidrs},
                                 "status": {"addresses": [{"type": "InternalIP", "address": a} for a in ips]}})
    nodes = [node("node1", ["10.244.0.0/24", "fd00:10:244::/64"], ["192.168.56.11", "2001:db8:56::11"]),
             node("node2", ["10.244.1.0/24", "fd00:10:244:1::/64"], ["192.168.56.12", "2001:db8:56::12"]),
             node("node3", ["fd00:10:244:2::/64"], ["2001:db8:56::13"]),
             node("node4", ["10.244.3.0/24", "fd00:10:244:3::/64"], ["192.168.56.14"])]   # no IPv6 address
    assert model.plan_pod_routes("node1", nodes) == {
        "10.244.1.0/24": "192.168.56.12", "fd00:10:244:1::/64": "2001:db8:56::12",
        "fd00:10:244:2::/64": "2001:db8:56::13", "10.244.3.0/24": "192.168.56.14"}


def test_reference_conflist_has_one_range_and_default_route_per_family():
    conf = model.render_reference_conflist(("10.244.1.0/24", "fd00:10:244:1::/64"), 1500, "/data")
    ipam = conf["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    v6 = model.render_reference_conflist(("fd00:10:244:1::/64",), 1500, "/data")["plugins"][0]["ipam"]
    assert v6["ranges"] == [[{"subnet": "fd00:10:244:1::/64"}]] and v6["routes"] == [{"dst": "::/0"}]
