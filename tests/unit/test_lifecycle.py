"""lab.lifecycle and lab.shell, their pure parts: the status document, the table, pod targets."""
from __future__ import annotations

import pytest
from kubeweft.lab.config import LabConfig
from kubeweft.lab.errors import LabError
from kubeweft.lab.lifecycle import lab_id, plan_state, render_status, render_table
from kubeweft.lab.shell import parse_pod_target

CFG = LabConfig(name="kw")
NODES = [
    {"metadata": {"name": "node2"}, "spec": {"podCIDR": "10.244.2.0/24"},
     "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "Hostname", "address": "node2"},
                              {"type": "InternalIP", "address": "192.168.56.12"}]}},
    {"metadata": {"name": "node1"}, "spec": {}, "status": {}},
]
PODS = [
    {"metadata": {"namespace": "default", "name": "web", "uid": "u1"}, "spec": {"nodeName": "node2"},
     "status": {"podIP": "10.244.2.5"}},
    {"metadata": {"namespace": "a", "name": "pending", "uid": "u2"}, "spec": {}, "status": {}},
]
LOCAL = {"u1": {"namespace": "default", "name": "web", "netns": "kw-pod-default-web-1234",
                "ip": "10.244.2.5", "containerID": "c", "pid": 1}}


def test_status_document_shape():
    doc = render_status(CFG, NODES, PODS, LOCAL)
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2"]
    n2 = doc["nodes"][1]
    assert n2 == {"name": "node2", "status": "Ready", "address": "192.168.56.12", "podCIDR": "10.244.2.0/24",
                  "addresses": ["192.168.56.12/24"], "podCIDRs": ["10.244.2.0/24"], "netns": "kw-node2", "cniConfDir": str(CFG.cni_conf_dir("node2")),
                  "cniBinDir": str(CFG.cni_bin_dir("node2")), "agentSocket": str(CFG.agent_socket("node2"))}
    assert doc["nodes"][0]["status"] == "NotReady"
    assert doc["nodes"][0]["address"] is None and doc["nodes"][0]["podCIDR"] is None
    assert doc["pods"] == [
        {"namespace": "a", "name": "pending", "node": None, "netns": None, "ip": None, "ips": []},
        {"namespace": "default", "name": "web", "node": "node2", "netns": "kw-pod-default-web-1234",
         "ip": "10.244.2.5", "ips": ["10.244.2.5"]}]


@pytest.mark.parametrize("ip_family, addresses", [
    ("ipv4", ["192.168.56.12/24"]),
    ("ipv6", ["192.168.56.12/24", "2001:db8:56::12/64"]),
    ("dual", ["192.168.56.12/24", "2001:db8:56::12/64"]),
])
def test_status_gives_every_underlay_address_and_every_pod_address(ip_family, addresses):
    cfg = LabConfig(name="kw", ip_family=ip_family)
    node = {"metadata": {"name": "node2"}, "spec": {"podCIDR": "10.244.2.0/24",
                                                    "podCIDRs": ["10.244.2.0/24", "fd00:10:244:2::/64"]}}
    pod = {"metadata": {"namespace": "default", "name": "web", "uid": "u1"}, "spec": {"nodeName": "node2"},
           "status": {"podIP": "10.244.2.5", "podIPs": [{"ip": "10.244.2.5"}, {"ip": "fd00:10:244:2::5"}]}}
    doc = render_status(cfg, [node], [pod], {})
    assert doc["nodes"][0]["addresses"] == addresses
    assert doc["nodes"][0]["podCIDRs"] == ["10.244.2.0/24", "fd00:10:244:2::/64"]
    assert doc["pods"][0]["ip"] == "10.244.2.5"
    assert doc["pods"][0]["ips"] == ["10.244.2.5", "fd00:10:244:2::5"]


def test_pods_json_found_by_name_when_uid_differs():
    local = {"other-uid": dict(LOCAL["u1"])}
    doc = render_status(CFG, [], PODS[:1], local)
    assert doc["pods"][0]["netns"] == "kw-pod-default-web-1234"


def test_table_lists_nodes_and_pods():
    table = render_table(render_status(CFG, NODES, PODS, LOCAL))
    lines = table.splitlines()
    assert lines[0].split() == ["NODE", "STATUS", "ADDRESS", "PODCIDR", "NETNS"]
    assert lines[2].split() == ["node2", "Ready", "192.168.56.12", "10.244.2.0/24", "kw-node2"]
    assert "<none>" in lines[1]
    assert any(line.split() == ["default", "web", "node2", "10.244.2.5", "kw-pod-default-web-1234"]
               for line in lines)


@pytest.mark.parametrize("ip_family, internal, node_cell, pod_cell", [
    ("dual", ["192.168.56.12", "2001:db8:56::12"], "192.168.56.12,2001:db8:56::12", "10.244.2.5,fd00:10:244:2::5"),
    # an ipv6 lab's Node reports its IPv6 address alone: it comes first, the underlay's IPv4 after
    ("ipv6", ["2001:db8:56::12"], "2001:db8:56::12,192.168.56.12", "fd00:10:244:2::5"),
])
def test_table_shows_every_address_of_a_node_and_a_pod_primary_first(ip_family, internal, node_cell, pod_cell):
    cfg = LabConfig(name="kw", ip_family=ip_family)
    cidrs = ["10.244.2.0/24", "fd00:10:244:2::/64"] if ip_family == "dual" else ["fd00:10:244:2::/64"]
    pod_ips = pod_cell.split(",")
    node = {"metadata": {"name": "node2"}, "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": a} for a in internal]}}
    pod = {"metadata": {"namespace": "default", "name": "web", "uid": "u1"}, "spec": {"nodeName": "node2"},
           "status": {"podIP": pod_ips[0], "podIPs": [{"ip": ip} for ip in pod_ips]}}
    lines = render_table(render_status(cfg, [node], [pod], {})).splitlines()
    assert lines[1].split() == ["node2", "Ready", node_cell, ",".join(cidrs), "kw-node2"]
    assert lines[-1].split() == ["default", "web", "node2", pod_cell, "<none>"]


def test_state_and_lab_id():
    state = plan_state(CFG, "abc")
    assert state["token"] == "abc" and state["config"]["name"] == "kw"
    assert lab_id("kw", "abc") == "kw:abc"


def test_pod_targets():
    assert parse_pod_target("kube-system/dns") == ("kube-system", "dns")
    assert parse_pod_target("web") == ("default", "web")
    for bad in ("/web", "ns/", "a/b/c"):
        with pytest.raises(LabError):
            parse_pod_target(bad)
