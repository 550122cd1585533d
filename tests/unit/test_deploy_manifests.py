"""deploy/: the base and each overlay render with the real kubectl's kustomize, and what they
render is what a kind or k3s user needs: a versioned image the kubelet does not pull when it is
loaded, every node (linux) and taint, node-critical, probes that let a slow start through, the
API endpoint of each overlay, and RBAC that writes nothing but the agent's Node annotations."""
from __future__ import annotations

import functools
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from kubeweft.lab.config import API_PORT, LabConfig

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
OVERLAYS = ("kind", "kind-dual", "k3s", "lab")
IMAGE = "ghcr.io/kubeweft/kubeweft"
POD_CIDR_WAIT = 120          # proxy/agent.py's --pod-cidr-timeout default
FIRST_SYNC_30K = 60          # seconds allowed for the first list and sync of 30k Services


@functools.cache
def _render(folder: str) -> str:
    proc = subprocess.run([str(KUBECTL), "kustomize", str(ROOT / "deploy" / folder)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def render(folder: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(_render(folder)) if d]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.fixture(scope="module", params=("base", *OVERLAYS))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "DaemonSet", "kubeweft")["spec"]["template"]["spec"]


def test_the_image_is_the_package_version_and_never_pulled_when_present(rendered):
    _, docs = rendered
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    spec = pod_spec(docs)
    containers = spec["initContainers"] + spec["containers"]
    assert {c["image"] for c in containers} == {f"{IMAGE}:{version}"}
    assert {c["imagePullPolicy"] for c in containers} == {"IfNotPresent"}
    assert all(c["resources"]["requests"].keys() == {"cpu", "memory"} for c in containers)


def test_every_linux_node_every_taint_node_critical(rendered):
    _, docs = rendered
    spec = pod_spec(docs)
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["hostNetwork"] is True and spec["serviceAccountName"] == "kubeweft"


def test_probes_let_a_slow_start_through_and_mean_ready_when_ready(rendered):
    _, docs = rendered
    (agent,) = pod_spec(docs)["containers"]
    startup, ready, live = agent["startupProbe"], agent["readinessProbe"], agent["livenessProbe"]
    assert startup["httpGet"]["path"] == ready["httpGet"]["path"] == "/readyz"
    assert live["httpGet"]["path"] == "/livez"
    assert {p["httpGet"]["port"] for p in (startup, ready, live)} == {10256}
    assert startup["failureThreshold"] * startup["periodSeconds"] >= POD_CIDR_WAIT + FIRST_SYNC_30K


def test_the_agent_takes_the_api_endpoint_and_the_node_address_from_where_the_overlays_set_them(rendered):
    _, docs = rendered
    (agent,) = pod_spec(docs)["containers"]
    assert agent["envFrom"] == [{"configMapRef": {"name": "kubeweft-api-endpoint", "optional": True}}]
    env = {e["name"]: e.get("valueFrom") for e in agent["env"]}
    assert env["KUBEWEFT_NODE_IP"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert env["KUBEWEFT_IFACE"]["configMapKeyRef"] == {"name": "kubeweft-config", "key": "iface", "optional": True}
    assert env["KUBEWEFT_IFACE_CAN_REACH"]["configMapKeyRef"]["key"] == "iface-can-reach"


def endpoint(docs: list[dict]) -> tuple[str, str]:
    data = one(docs, "ConfigMap", "kubeweft-api-endpoint")["data"]
    assert data.keys() == {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}
    return data["KUBERNETES_SERVICE_HOST"], data["KUBERNETES_SERVICE_PORT"]


def test_apply_k_deploy_is_the_kind_install():
    """`kubectl apply -k deploy/`, as the README has always said, installs the kind flavour."""
    assert _render("") == _render("kind")


def test_each_overlay_names_its_api_server():
    assert not [d for d in render("base") if d["metadata"]["name"] == "kubeweft-api-endpoint"]
    assert endpoint(render("kind")) == ("kind-control-plane", "6443")
    lab = render("lab")
    assert endpoint(lab) == (LabConfig(name="x").control_plane_ip, str(API_PORT))
    k3s = render("k3s")
    vagrant_server = "192.168.56.10"         # the Vagrantfile's server VM
    assert vagrant_server in (ROOT / "Vagrantfile").read_text()
    assert endpoint(k3s) == (vagrant_server, "6443")
    # k3s under VirtualBox: the overlay on the interface that reaches the server, never the NAT one
    assert one(k3s, "ConfigMap", "kubeweft-config")["data"]["iface-can-reach"] == vagrant_server
    assert one(lab, "ConfigMap", "kubeweft-config")["data"]["iface-can-reach"] == ""


def host_paths(docs: list[dict]) -> dict[str, str]:
    return {v["name"]: v["hostPath"]["path"] for v in pod_spec(docs)["volumes"] if "hostPath" in v}


def test_k3s_installs_the_cni_where_its_containerd_looks():
    assert host_paths(render("k3s"))["cni-bin"] == "/var/lib/rancher/k3s/data/cni"
    assert host_paths(render("k3s"))["cni-conf"] == "/var/lib/rancher/k3s/agent/etc/cni/net.d"
    for overlay in ("kind", "lab"):
        assert host_paths(render(overlay))["cni-bin"] == "/opt/cni/bin"
        assert host_paths(render(overlay))["cni-conf"] == "/etc/cni/net.d"


def test_rbac_writes_nothing_but_node_and_policy_status_and_reads_no_secret(rendered):
    _, docs = rendered
    rules = one(docs, "ClusterRole", "kubeweft")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    writes = {(g, r, v) for g, r, v in granted if v not in ("get", "list", "watch")}
    assert writes == {("", "nodes/status", "patch"),
                      ("policy.networking.k8s.io", "clusternetworkpolicies/status", "patch")}
    resources = {r for _, r, _ in granted}
    assert not resources & {"secrets", "events", "configmaps", "*"}
    assert ("", "nodes", "patch") not in granted and ("", "nodes", "update") not in granted
    binding = one(docs, "ClusterRoleBinding", "kubeweft")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubeweft", "namespace": "kube-system"}]
    assert binding["roleRef"]["name"] == "kubeweft"
    # one Role in kube-system: the Lease that elects the agent writing policy status, nothing else
    role = one(docs, "Role", "kubeweft")
    assert role["metadata"]["namespace"] == "kube-system"
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]
    assert one(docs, "RoleBinding", "kubeweft")["subjects"] == binding["subjects"]


def test_the_dual_stack_kind_install_gives_the_agent_both_families_ranges():
    """deploy/kind-dual is deploy/kind with the cluster and Service ranges of its kind config, one
    per family, where the agent reads them (KUBEWEFT_CLUSTER_CIDR, KUBEWEFT_SERVICE_CIDR)."""
    kind = yaml.safe_load((ROOT / "deploy" / "kind-dual" / "kind-config.yaml").read_text())["networking"]
    assert kind["ipFamily"] == "dual" and kind["kubeProxyMode"] == "none" and kind["disableDefaultCNI"]
    dual, single = render("kind-dual"), render("kind")
    assert [d for d in dual if d["kind"] != "ConfigMap"] == [d for d in single if d["kind"] != "ConfigMap"]
    data = one(dual, "ConfigMap", "kubeweft-config")["data"]
    assert data["cluster-cidr"] == kind["podSubnet"] and data["service-cidr"] == kind["serviceSubnet"]
    assert [c.count(":") > 0 for c in data["service-cidr"].split(",")] == [False, True]
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"]["key"]
           for e in pod_spec(dual)["containers"][0]["env"] if "configMapKeyRef" in e.get("valueFrom", {})}
    assert env["KUBEWEFT_CLUSTER_CIDR"] == "cluster-cidr" and env["KUBEWEFT_SERVICE_CIDR"] == "service-cidr"
    assert pod_spec(dual) == pod_spec(single)
    single_data = one(single, "ConfigMap", "kubeweft-config")["data"]
    assert single_data["service-cidr"] == "10.96.0.0/12"
