"""Server-side Table rendering for kubectl get (columns and cells as the real printers)."""
import datetime

import pytest
from kubeweft.lab.apiserver.tables import human_duration, render_table

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T0 = "2026-01-01T11:55:00Z"        # five minutes before NOW


def names(table, wide=False):
    return [c["name"] for c in table["columnDefinitions"] if wide or c["priority"] == 0]


def cells(table, wide=False):
    keep = [i for i, c in enumerate(table["columnDefinitions"]) if wide or c["priority"] == 0]
    return [[row["cells"][i] for i in keep] for row in table["rows"]]


@pytest.mark.parametrize("secs,want", [(5, "5s"), (119, "119s"), (150, "2m30s"), (300, "5m"),
                                       (3600, "60m"), (4 * 3600 + 60, "4h1m"), (30 * 3600, "30h"),
                                       (3 * 86400 + 3600, "3d1h"), (20 * 86400, "20d")])
def test_human_duration(secs, want):
    assert human_duration(secs) == want


def test_pod_table():
    pod = {"metadata": {"name": "web", "creationTimestamp": T0},
           "spec": {"nodeName": "node1", "containers": [{"name": "a"}, {"name": "b"}]},
           "status": {"phase": "Running", "podIP": "10.244.1.5",
                      "containerStatuses": [{"ready": True, "restartCount": 1, "state": {"running": {}}},
                                            {"ready": False, "restartCount": 2, "state": {"running": {}}}]}}
    t = render_table("Pod", [pod], NOW, "7")
    assert t["kind"] == "Table" and t["metadata"]["resourceVersion"] == "7"
    assert names(t) == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert cells(t) == [["web", "1/2", "Running", "3", "5m"]]
    assert cells(t, wide=True)[0][5:7] == ["10.244.1.5", "node1"]
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    pod["metadata"]["deletionTimestamp"] = T0
    assert cells(render_table("Pod", [pod], NOW, None))[0][2] == "Terminating"


def _pod_status(status: dict, init: int = 0) -> list:
    pod = {"metadata": {"name": "p", "creationTimestamp": T0},
           "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": f"i{n}"} for n in range(init)]},
           "status": status}
    return cells(render_table("Pod", [pod], NOW, None))[0]


def test_pod_status_column_as_kubectl_prints_it():
    crash = {"phase": "Running", "containerStatuses": [{
        "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T11:59:00Z"}}}]}
    assert _pod_status(crash)[1:4] == ["0/1", "CrashLoopBackOff", "4 (60s ago)"]
    done = {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0,
                                                                                   "reason": "Completed"}}}]}
    assert _pod_status(done)[2] == "Completed"
    init = {"phase": "Pending", "initContainerStatuses": [
        {"state": {"terminated": {"exitCode": 0}}}, {"state": {"running": {}}}],
        "containerStatuses": [{"state": {"waiting": {"reason": "PodInitializing"}}}]}
    assert _pod_status(init, init=2)[2] == "Init:1/2"
    failed_init = {"phase": "Pending", "initContainerStatuses": [
        {"restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    assert _pod_status(failed_init, init=1)[2:4] == ["Init:CrashLoopBackOff", "2"]
    assert _pod_status({"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 3}}}]},
                       )[2] == "ExitCode:3"


def test_service_table():
    svcs = [{"metadata": {"name": "a", "creationTimestamp": T0},
             "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "selector": {"app": "a"},
                      "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}},
            {"metadata": {"name": "b", "creationTimestamp": T0},
             "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11",
                      "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
             "status": {"loadBalancer": {}}}]
    t = render_table("Service", svcs, NOW, "1")
    assert names(t, wide=True) == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]
    assert cells(t, wide=True) == [
        ["a", "ClusterIP", "10.96.0.10", "<none>", "80/TCP,53/UDP", "5m", "app=a"],
        ["b", "LoadBalancer", "10.96.0.11", "<pending>", "80:30080/TCP", "5m", "<none>"]]
    svcs[1]["status"]["loadBalancer"]["ingress"] = [{"ip": "198.51.100.1"}]
    assert cells(render_table("Service", svcs, NOW, None))[1][3] == "198.51.100.1"
    # dual-stack: CLUSTER-IP is the primary; EXTERNAL-IP both ingress addresses, sorted as strings
    svcs[1]["spec"].update(clusterIPs=["10.96.0.11", "fd00:10:96::11"], ipFamilies=["IPv6", "IPv4"])
    svcs[1]["status"]["loadBalancer"]["ingress"] = [{"ip": "2001:db8:100::2"}, {"ip": "198.51.100.2"}]
    assert cells(render_table("Service", svcs, NOW, None))[1][2:4] == ["10.96.0.11", "198.51.100.2,2001:db8:100::2"]


def test_node_table():
    node = {"metadata": {"name": "node1", "creationTimestamp": T0,
                         "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.56.11"}],
                       "nodeInfo": {"kubeletVersion": "v1.35.0-kubeweft-lab"}}}
    t = render_table("Node", [node], NOW, "1")
    assert names(t) == ["Name", "Status", "Roles", "Age", "Version"]
    assert cells(t) == [["node1", "Ready", "control-plane", "5m", "v1.35.0-kubeweft-lab"]]
    assert cells(t, wide=True)[0][5] == "192.168.56.11"
    node["status"]["conditions"][0]["status"] = "False"
    assert cells(render_table("Node", [node], NOW, None))[0][1] == "NotReady"


def test_endpointslice_networkpolicy_namespace_tables():
    es = {"metadata": {"name": "web-abc", "creationTimestamp": T0}, "addressType": "IPv4",
          "ports": [{"port": 8080}], "endpoints": [{"addresses": [f"10.0.0.{i}"]} for i in range(5)]}
    assert cells(render_table("EndpointSlice", [es], NOW, None)) == [
        ["web-abc", "IPv4", "8080", "10.0.0.0,10.0.0.1,10.0.0.2 + 2 more...", "5m"]]
    np_ = {"metadata": {"name": "deny", "creationTimestamp": T0},
           "spec": {"podSelector": {"matchLabels": {"app": "db"},
                                    "matchExpressions": [{"key": "tier", "operator": "In",
                                                          "values": ["a", "b"]}]}}}
    assert cells(render_table("NetworkPolicy", [np_], NOW, None)) == [["deny", "app=db,tier in (a,b)", "5m"]]
    np_["spec"]["podSelector"] = {}
    assert cells(render_table("NetworkPolicy", [np_], NOW, None))[0][1] == "<none>"
    ns = {"metadata": {"name": "default", "creationTimestamp": T0}, "status": {"phase": "Active"}}
    assert cells(render_table("Namespace", [ns], NOW, None)) == [["default", "Active", "5m"]]


def test_include_object_and_watch_tables_without_columns():
    ns = {"metadata": {"name": "x", "creationTimestamp": T0}}
    t = render_table("Namespace", [ns], NOW, None, include_object="Object", with_columns=False)
    assert t["columnDefinitions"] is None and t["rows"][0]["object"] is ns
    assert render_table("Namespace", [ns], NOW, None, include_object="None")["rows"][0]["object"] is None
