"""The addon manifests `lab up` applies, read as kubectl would: kubeadm's CoreDNS addon (names,
labels, RBAC, the Service at the address the kubelet writes into every pod's resolv.conf, the
ports and probes), and the plan of what apply_addons waits for."""
from __future__ import annotations

import ipaddress

import pytest
import yaml
from kubeweft.lab import addons
from kubeweft.lab.config import LabConfig
from kubeweft.lab.dns import corefile
from kubeweft.lab.errors import LabError
from kubeweft.lab.kubelet.images import plan_process
from kubeweft.lab.kubelet.podspec import parse_pod

COREDNS = (addons.MANIFEST_DIR / "coredns.yaml").read_text()


def objects() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(COREDNS)}


def test_only_coredns_by_default_and_manifests_in_name_order(tmp_path):
    assert addons.DEFAULT_ADDONS == ("coredns",)
    assert addons.manifest_paths(["coredns"]) == [addons.MANIFEST_DIR / "coredns.yaml"]
    for name in ("b", "a", "c"):
        (tmp_path / f"{name}.yaml").write_text("")
    assert [p.stem for p in addons.manifest_paths(["c", "a"], tmp_path)] == ["a", "c"]
    with pytest.raises(LabError, match="no addon 'x'"):
        addons.manifest_paths(["x"], tmp_path)


def test_coredns_is_kubeadms_addon():
    obj = objects()
    assert set(obj) == {("ServiceAccount", "coredns"), ("ClusterRole", "system:coredns"),
                        ("ClusterRoleBinding", "system:coredns"), ("ConfigMap", "coredns"),
                        ("Deployment", "coredns"), ("Service", "kube-dns")}
    rules = {(g, r): set(rule["verbs"]) for rule in obj["ClusterRole", "system:coredns"]["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    for key in (("", "services"), ("", "pods"), ("", "namespaces"), ("discovery.k8s.io", "endpointslices")):
        assert rules[key] == {"list", "watch"}
    binding = obj["ClusterRoleBinding", "system:coredns"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]
    deploy = obj["Deployment", "coredns"]
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert deploy["metadata"]["namespace"] == "kube-system" and deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["template"]["metadata"]["labels"] == {"k8s-app": "kube-dns"}
    assert pod["serviceAccountName"] == "coredns" and pod["dnsPolicy"] == "Default"
    assert c["image"].startswith("registry.k8s.io/coredns/coredns:v1.11.")
    assert (c["readinessProbe"]["httpGet"]["port"], c["readinessProbe"]["httpGet"]["path"]) == (8181, "/ready")
    assert (c["livenessProbe"]["httpGet"]["port"], c["livenessProbe"]["httpGet"]["path"]) == (8080, "/health")
    assert {(p["containerPort"], p["protocol"]) for p in c["ports"]} == {(53, "UDP"), (53, "TCP"), (9153, "TCP")}
    svc = obj["Service", "kube-dns"]
    assert svc["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]} == {(53, "UDP"), (53, "TCP"), (9153, "TCP")}


def test_the_dns_service_is_where_the_kubelet_points_pods():
    # the kubelet's clusterDNS: the tenth address of the Service range (lab/kubelet/kubelet.py)
    assert addons.service_address(COREDNS, "kube-system", "kube-dns") == \
        str(ipaddress.ip_network(LabConfig().service_cidr)[10]) == "10.96.0.10"
    assert addons.service_address(COREDNS, "default", "kube-dns") is None


def test_the_dns_service_takes_the_primary_familys_tenth_service_address():
    for family, want in (("ipv4", "10.96.0.10"), ("dual", "10.96.0.10"), ("ipv6", "fd00:10:96::a")):
        cfg = LabConfig(ip_family=family)
        assert cfg.cluster_dns_ip == want
        text = addons.render_manifest(COREDNS, cfg)
        assert addons.service_address(text, "kube-system", "kube-dns") == want
        assert addons.plan_rollouts(text) == addons.plan_rollouts(COREDNS)


def test_the_image_runs_the_lab_dns_server_on_the_configmaps_corefile():
    obj = objects()
    settings = corefile.parse(obj["ConfigMap", "coredns"]["data"]["Corefile"])
    assert (settings.port, settings.zone, settings.pods, settings.metrics, settings.health, settings.ready) == \
        (53, "cluster.local", "insecure", ":9153", ":8080", ":8181")
    assert settings.lameduck == 5.0
    template = obj["Deployment", "coredns"]["spec"]["template"]
    pod = parse_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "coredns-x", "namespace": "kube-system",
                                                                     "uid": "u"}, "spec": template["spec"]})
    c = pod.containers[0]
    proc = plan_process(pod, c, c.command, c.args, "/venv/bin", "/venv/bin/python", "kw")
    # no --kubeconfig: the server runs in-cluster, on the ServiceAccount token the kubelet mounts
    assert proc.argv == ("/venv/bin/python", "-m", "kubeweft.lab.dns", "-conf", "/etc/coredns/Corefile")


def test_plan_rollouts():
    assert addons.plan_rollouts(COREDNS) == [("kube-system", "coredns")]
    assert addons.plan_rollouts("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n---\n"
                                "kind: Service\napiVersion: v1\nmetadata: {name: y}\n") == [("default", "x")]


def test_a_reference_lab_gets_no_addons():
    # no service proxy: neither the DNS Service nor the API's kubernetes Service would answer
    assert addons.apply_addons(LabConfig(name="x", cni="reference")).startswith("none")


def test_the_dns_servers_status_ports_listen_on_every_family_unless_bound():
    from kubeweft.lab.dns.status import split_address
    assert split_address(":8181") == (None, 8181)
    assert split_address("[::1]:9153") == ("::1", 9153)
    assert split_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
