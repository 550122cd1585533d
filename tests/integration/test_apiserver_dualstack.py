"""The API server alone on ipv4, ipv6 and dual labs, through a real kubectl: Service ipFamilyPolicy
and ipFamilies with the real server's errors, a ClusterIP per family with its IPAddress, the
default ServiceCIDR and the kubernetes Service, EndpointSlices per address type from pods' podIPs
(their status written as a kubelet writes it), Node podCIDRs per family, LoadBalancer addresses
per family and `kubectl get svc`."""
from __future__ import annotations

import json
import os

import pytest
from kubeweft.lab.config import LabConfig

from .apiserver_proc import Server
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FAMILIES = ["ipv4", "ipv6", "dual"]
PRIMARY = {"ipv4": "IPv4", "ipv6": "IPv6", "dual": "IPv4"}
ALL = {"ipv4": ["IPv4"], "ipv6": ["IPv6"], "dual": ["IPv4", "IPv6"]}


@pytest.fixture(scope="module", params=FAMILIES)
def lab(request, tmp_path_factory):
    family = request.param
    s = Server(tmp_path_factory.mktemp(f"ds{family}"), f"ds{family[-1]}{os.getpid() % 100000}", ip_family=family)
    try:
        yield s, family, LabConfig(name=s.name, ip_family=family)
    finally:
        s.stop()


def get(server, *args) -> dict:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def service(name: str, policy: str | None = None, svc_type: str = "ClusterIP", **spec) -> str:
    spec = {"type": svc_type, "selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}], **spec}
    if policy:
        spec["ipFamilyPolicy"] = policy
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})


def family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def test_service_policies_and_their_addresses(lab):
    server, fam, _ = lab
    server.kubectl("create", "-f", "-", input=service("single"))
    spec = get(server, "svc", "single")["spec"]
    assert spec["ipFamilyPolicy"] == "SingleStack" and spec["ipFamilies"] == [PRIMARY[fam]]
    assert family(spec["clusterIP"]) == PRIMARY[fam]

    server.kubectl("create", "-f", "-", input=service("prefer", "PreferDualStack"))
    spec = get(server, "svc", "prefer")["spec"]
    assert spec["ipFamilies"] == ALL[fam] and [family(ip) for ip in spec["clusterIPs"]] == ALL[fam]
    addresses = {a["metadata"]["name"]: a for a in get(server, "ipaddresses")["items"]}
    for ip in spec["clusterIPs"]:
        assert addresses[ip]["metadata"]["labels"]["ipaddress.kubernetes.io/ip-family"] == family(ip)
        assert addresses[ip]["spec"]["parentRef"]["name"] == "prefer"

    proc = server.kubectl("create", "-f", "-", input=service("require", "RequireDualStack"), check=False)
    if fam == "dual":
        assert proc.returncode == 0, proc.stderr
        assert get(server, "svc", "require")["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
    else:
        assert proc.returncode != 0
        assert ('The Service "require" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": '
                "this cluster is not configured for dual-stack services") in proc.stderr
    other = "IPv4" if PRIMARY[fam] == "IPv6" else "IPv6"
    proc = server.kubectl("create", "-f", "-", input=service("other", ipFamilies=[other]), check=False)
    if fam == "dual":
        assert proc.returncode == 0, proc.stderr
        assert family(get(server, "svc", "other")["spec"]["clusterIP"]) == other
    else:
        assert f'spec.ipFamilies[0]: Invalid value: "{other}": not configured on this cluster' in proc.stderr
    server.kubectl("delete", "svc", "single", "prefer", "require", "other", "--ignore-not-found")


def test_service_cidr_and_kubernetes_service(lab):
    server, fam, cfg = lab
    assert get(server, "servicecidr", "kubernetes")["spec"]["cidrs"] == list(cfg.service_cidrs)
    spec = get(server, "svc", "kubernetes")["spec"]
    assert spec["ipFamilyPolicy"] == "SingleStack" and spec["ipFamilies"] == [PRIMARY[fam]]
    assert spec["clusterIP"] == ("10.96.0.1" if PRIMARY[fam] == "IPv4" else "fd00:10:96::1")
    eps = get(server, "endpointslice", "kubernetes")
    assert eps["addressType"] == PRIMARY[fam]
    assert eps["endpoints"][0]["addresses"] == [cfg.control_plane_ip if fam != "ipv6" else cfg.control_plane_ip6]


def test_wrong_family_address_and_upgrade_downgrade(lab):
    server, fam, _ = lab
    if fam != "dual":
        ip = "fd00:10:96::50" if fam == "ipv4" else "10.96.0.50"
        proc = server.kubectl("create", "-f", "-", input=service("wrong", clusterIP=ip), check=False)
        assert (f'The Service "wrong" is invalid: spec.clusterIPs[0]: Invalid value: ["{ip}"]: '
                f"{family(ip)} is not configured on this cluster") in proc.stderr
        return
    server.kubectl("create", "-f", "-", input=service("grow"))
    primary = get(server, "svc", "grow")["spec"]["clusterIP"]
    server.kubectl("patch", "svc", "grow", "-p", '{"spec":{"ipFamilyPolicy":"PreferDualStack"}}')
    spec = get(server, "svc", "grow")["spec"]
    assert spec["ipFamilies"] == ["IPv4", "IPv6"] and spec["clusterIPs"][0] == primary
    secondary = spec["clusterIPs"][1]
    assert secondary in {a["metadata"]["name"] for a in get(server, "ipaddresses")["items"]}
    proc = server.kubectl("patch", "svc", "grow", "-p", '{"spec":{"ipFamilies":["IPv6","IPv4"]}}', check=False)
    assert proc.returncode != 0 and "spec.clusterIPs[0]" in proc.stderr
    server.kubectl("patch", "svc", "grow", "-p", '{"spec":{"ipFamilyPolicy":"SingleStack"}}')
    spec = get(server, "svc", "grow")["spec"]
    assert spec["ipFamilies"] == ["IPv4"] and spec["clusterIPs"] == [primary]
    wait_for("the secondary IPAddress released",
             lambda: secondary not in {a["metadata"]["name"] for a in get(server, "ipaddresses")["items"]})
    server.kubectl("delete", "svc", "grow")


def pod(name: str, labels: dict) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                       "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 8080}]}]}})


def test_endpoint_slices_per_address_type(lab):
    server, fam, _ = lab
    ips = {"ipv4": ["10.244.1.5"], "ipv6": ["fd00:10:244:1::5"], "dual": ["10.244.1.5", "fd00:10:244:1::5"]}[fam]
    server.kubectl("create", "-f", "-", input=pod("web-1", {"app": "web"}))
    status = {"status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips],
                         "conditions": [{"type": "Ready", "status": "True"}]}}
    server.kubectl("patch", "pod", "web-1", "--subresource=status", "--type=merge", "-p", json.dumps(status))
    server.kubectl("create", "-f", "-", input=service("web", "PreferDualStack"))

    def slices():
        items = get(server, "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
        return {s["addressType"]: [a for ep in s.get("endpoints") or [] for a in ep["addresses"]] for s in items}
    want = {family(ip): [ip] for ip in ips}
    wait_for(f"slices {want}", lambda: slices() == want)
    for s in get(server, "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]:
        assert s["metadata"]["name"].startswith("web-")
        assert s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    # the Endpoints carries the Service's primary family
    wait_for("the Endpoints", lambda: get(server, "endpoints", "web").get("subsets"))
    assert [a["ip"] for a in get(server, "endpoints", "web")["subsets"][0]["addresses"]] == ips[:1]
    server.kubectl("delete", "svc", "web")
    server.kubectl("delete", "pod", "web-1", "--grace-period=0", "--force")


def test_node_pod_cidrs_per_family(lab):
    server, fam, _ = lab
    for name in ("dsn1", "dsn2"):
        server.kubectl("create", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
    want = {"ipv4": ["10.244.0.0/24"], "ipv6": ["fd00:10:244::/64"], "dual": ["10.244.0.0/24", "fd00:10:244::/64"]}
    node = wait_for("podCIDRs", lambda: get(server, "node", "dsn1")["spec"].get("podCIDRs") and
                    get(server, "node", "dsn1")["spec"])
    assert node["podCIDRs"] == want[fam] and node["podCIDR"] == want[fam][0]
    other = wait_for("podCIDRs", lambda: get(server, "node", "dsn2")["spec"].get("podCIDRs"))
    assert len(other) == len(want[fam]) and not set(other) & set(want[fam])
    proc = server.kubectl("patch", "node", "dsn1", "-p", '{"spec":{"podCIDRs":["10.244.9.0/24"]}}', check=False)
    assert proc.returncode != 0
    server.kubectl("delete", "node", "dsn1", "dsn2")


def test_load_balancer_address_per_family_and_the_table(lab):
    server, fam, _ = lab
    server.kubectl("create", "-f", "-", input=service("lb", "PreferDualStack", "LoadBalancer"))
    ingress = wait_for("LoadBalancer ingress", lambda: (get(server, "svc", "lb")["status"].get("loadBalancer") or {})
                       .get("ingress"))
    spec = get(server, "svc", "lb")["spec"]
    assert [family(i["ip"]) for i in ingress] == spec["ipFamilies"] == ALL[fam]
    row = server.kubectl("get", "svc", "lb", "--no-headers").stdout.split()
    assert row[2] == spec["clusterIP"] and row[3] == ",".join(sorted(i["ip"] for i in ingress))
    described = server.kubectl("describe", "svc", "lb").stdout
    assert "IP Family Policy:         PreferDualStack" in described
    assert f"IP Families:              {','.join(ALL[fam])}" in described
    server.kubectl("delete", "svc", "lb")
