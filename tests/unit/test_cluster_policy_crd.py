"""deploy/'s ClusterNetworkPolicy CRD: what every overlay installs, that its schema is structural
and takes the shapes of network-policy-api's conformance policies (and the agent's parser reads
them), that it refuses what the API refuses, and that the lab's API server accepts it as a real
one does (Established) while it stays honest about a kind it cannot serve. The CEL rules
(x-kubernetes-validations: isCIDR, start < end, no named port with nodes or networks) need a
Kubernetes CEL environment and are checked here only for being present."""
from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from kubeweft.lab import admission, errors
from kubeweft.lab.apiserver.tables import COLUMNS
from kubeweft.lab.config import LabConfig
from kubeweft.lab.resources import BY_PLURAL, CLUSTER_NETWORK_POLICIES
from kubeweft.lab.store import Store
from kubeweft.proxy import cluster_policy_model as cm

from .test_deploy_manifests import render
from .test_watch_edge_hostile import replaced

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "deploy" / "base" / "crds" / "clusternetworkpolicies.yaml"
CRDS = BY_PLURAL[("apiextensions.k8s.io", "customresourcedefinitions")]


def crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def version() -> dict:
    (v,) = crd()["spec"]["versions"]
    return v


def validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(version()["schema"]["openAPIV3Schema"])


def ns(name: str) -> dict:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def cnp(spec: dict, name: str = "p") -> dict:
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}


def tcp_range(start: int, end: int) -> dict:
    return {"tcp": {"destinationPort": {"range": {"start": start, "end": end}}}}


# the shapes of the conformance suite's policies: port ranges of each transport, pods peers,
# nodes and networks peers, named ports, Pass, both tiers, status written by an implementation
SAMPLES = {
    "port-ranges": cnp({"tier": "Admin", "priority": 9, "subject": {"namespaces": ns("gryffindor")},
                        "egress": [{"name": "tcp-range", "action": "Accept", "to": [{"namespaces": ns("ravenclaw")}],
                                    "protocols": [tcp_range(80, 8080)]},
                                   {"name": "udp-range", "action": "Accept", "to": [{"namespaces": ns("hufflepuff")}],
                                    "protocols": [{"udp": {"destinationPort": {"range": {"start": 53, "end": 5353}}}}]},
                                   {"name": "deny-all", "action": "Deny", "to": [{"namespaces": {"matchExpressions": [
                                       {"key": "conformance-house", "operator": "Exists"}]}}]}],
                        "ingress": [{"action": "Accept", "from": [{"namespaces": ns("slytherin")}],
                                     "protocols": [{"sctp": {"destinationPort": {"number": 9003}}}]}]}),
    "nodes-and-networks": cnp({"tier": "Admin", "priority": 75, "subject": {"pods": {
        "namespaceSelector": {"matchLabels": {"conformance-house": "gryffindor"}},
        "podSelector": {"matchLabels": {"conformance-house": "gryffindor"}}}},
        "egress": [{"name": "nodes-tcp", "action": "Accept", "to": [{"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}],
                    "protocols": [{"tcp": {"destinationPort": {"number": 34345}}}]},
                   {"name": "nodes-udp", "action": "Pass", "to": [{"nodes": {}}],
                    "protocols": [{"udp": {"destinationPort": {"number": 34347}}}]},
                   {"name": "deny-rest", "action": "Deny", "to": [
                       {"pods": {"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}},
                                 "podSelector": {}}},
                       {"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}},
                       {"networks": ["0.0.0.0/0", "::/0"]}]}]}),
    "baseline-named-port": cnp({"tier": "Baseline", "priority": 0, "subject": {"pods": {"podSelector": {}}},
                                "ingress": [{"action": "Deny", "from": [{"pods": {"podSelector": {"matchLabels": {"a": "b"}}}}],
                                             "protocols": [{"destinationNamedPort": "http"}]}]}),
    "domain-names": cnp({"tier": "Admin", "priority": 1000, "subject": {"namespaces": {}},
                         "egress": [{"action": "Accept", "to": [{"domainNames": ["kubernetes.io", "*.example.com"]}]}]}),
    "with-status": dict(cnp({"tier": "Baseline", "priority": 3, "subject": {"namespaces": {}}}), status={"conditions": [
        {"type": "Accepted", "status": "True", "reason": "Enforced", "message": "",
         "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_conformance_shapes_validate_and_the_agent_reads_them(name):
    obj = SAMPLES[name]
    errs = sorted(e.message for e in validator().iter_errors(obj))
    assert not errs, errs
    pol = cm.parse_cluster_policy(obj)
    assert pol.tier == obj["spec"]["tier"] and pol.priority == obj["spec"]["priority"]
    assert len(pol.egress) == len(obj["spec"].get("egress", []))


BASE = SAMPLES["port-ranges"]
INVALID = {
    "tier": (("spec", "tier"), "Developer"),
    "priority above 1000": (("spec", "priority"), 1001),
    "negative priority": (("spec", "priority"), -1),
    "two subject fields": (("spec", "subject"), {"namespaces": {}, "pods": {"podSelector": {}}}),
    "empty subject": (("spec", "subject"), {}),
    "action": (("spec", "egress", 0, "action"), "Allow"),
    "no peers": (("spec", "egress", 0, "to"), []),
    "two fields in a peer": (("spec", "egress", 0, "to"), [{"namespaces": {}, "networks": ["10.0.0.0/8"]}]),
    "port 0": (("spec", "ingress", 0, "protocols"), [{"tcp": {"destinationPort": {"number": 0}}}]),
    "number and range": (("spec", "ingress", 0, "protocols"), [{"tcp": {"destinationPort": {
        "number": 80, "range": {"start": 1, "end": 2}}}}]),
    "two transports in one entry": (("spec", "ingress", 0, "protocols"), [{"tcp": {}, "udp": {}}]),
    "26 rules": (("spec", "ingress"), [BASE["spec"]["ingress"][0]] * 26),
    "rule name of 101": (("spec", "egress", 0, "name"), "x" * 101),
    "pods peer without podSelector": (("spec", "ingress", 0, "from"), [{"pods": {"namespaceSelector": {}}}]),
    "domain with a wildcard inside": (("spec", "egress", 0, "to"), [{"domainNames": ["a.*.example.com"]}]),
    "nodes peer in ingress is not a field there, and nothing else is set": (
        ("spec", "ingress", 0, "from"), [{"nodes": {}}]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_the_schema_refuses_what_the_api_refuses(case):
    path, value = INVALID[case]
    bad = replaced(BASE, path, value)
    if case.startswith("nodes peer in ingress"):
        # unknown fields are pruned by the server: the peer is then empty, which minProperties refuses
        bad["spec"]["ingress"][0]["from"] = [{}]
    assert list(validator().iter_errors(bad)), case


def test_the_schema_is_structural():
    """Every property and item has a type (a structural schema: the server prunes by it)."""
    def walk(node: dict, where: str) -> None:
        assert "type" in node, where
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.{key}")
        if "items" in node:
            walk(node["items"], f"{where}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}{{}}")
    walk(version()["schema"]["openAPIV3Schema"], "")


def test_names_scope_columns_and_status_are_upstreams_and_the_labs():
    doc, r = crd(), CLUSTER_NETWORK_POLICIES
    spec = doc["spec"]
    assert doc["metadata"]["name"] == f"{r.plural}.{r.group}"
    assert (spec["group"], spec["names"]["plural"], spec["names"]["kind"]) == (r.group, r.plural, r.kind)
    assert spec["scope"] == "Cluster" and not r.namespaced
    assert spec["names"]["shortNames"] == list(r.short_names) == ["cnp"]
    assert spec["names"]["singular"] == r.singular
    v = version()
    assert v["name"] == r.version and v["served"] and v["storage"]
    assert v["subresources"] == {"status": {}} and "status" in r.subresources
    assert [(c["name"], c["jsonPath"]) for c in v["additionalPrinterColumns"]] == [
        ("Tier", ".spec.tier"), ("Priority", ".spec.priority"), ("Age", ".metadata.creationTimestamp")]
    assert [c[0] for c in COLUMNS["ClusterNetworkPolicy"]] == ["Name", "Tier", "Priority", "Age"]
    rules = [r["rule"] for r in _cel_rules(v["schema"]["openAPIV3Schema"])]
    assert "isCIDR(self)" in rules and "self.start < self.end" in rules
    assert any("destinationNamedPort" in r for r in rules)
    status = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert status["x-kubernetes-list-type"] == "map" and status["x-kubernetes-list-map-keys"] == ["type"]


def _cel_rules(node: dict):
    yield from node.get("x-kubernetes-validations", [])
    for sub in (node.get("properties") or {}).values():
        yield from _cel_rules(sub)
    if "items" in node:
        yield from _cel_rules(node["items"])


@pytest.mark.parametrize("folder", ("base", "kind", "kind-dual", "k3s", "lab"))
def test_every_install_carries_the_crd(folder):
    (doc,) = [d for d in render(folder) if d["kind"] == "CustomResourceDefinition"]
    assert doc == crd()


def test_the_lab_establishes_the_crd_of_a_kind_it_serves():
    obj = admission.admit(Store(), LabConfig(name="x"), CRDS, "CREATE", crd(), None)
    conds = {c["type"]: c for c in obj["status"]["conditions"]}
    assert conds["Established"]["status"] == "True" and conds["NamesAccepted"]["status"] == "True"
    assert obj["status"]["acceptedNames"]["shortNames"] == ["cnp"]
    assert obj["status"]["storedVersions"] == ["v1alpha2"]


def test_the_lab_stores_a_crd_of_another_kind_as_not_established():
    other = crd()
    other["spec"]["names"] = {"kind": "Widget", "plural": "widgets"}
    other["metadata"]["name"] = "widgets.policy.networking.k8s.io"
    obj = admission.admit(Store(), LabConfig(name="x"), CRDS, "CREATE", other, None)
    (established,) = [c for c in obj["status"]["conditions"] if c["type"] == "Established"]
    assert established["status"] == "False" and established["reason"] == "NotServed"
    namespaced = crd()
    namespaced["spec"]["scope"] = "Namespaced"      # the lab serves the kind cluster-scoped only
    obj = admission.admit(Store(), LabConfig(name="x"), CRDS, "CREATE", namespaced, None)
    assert [c["status"] for c in obj["status"]["conditions"] if c["type"] == "Established"] == ["False"]


def test_the_lab_refuses_a_crd_whose_name_is_not_plural_dot_group():
    bad = crd()
    bad["metadata"]["name"] = "cnps.policy.networking.k8s.io"
    with pytest.raises(errors.APIError) as e:
        admission.admit(Store(), LabConfig(name="x"), CRDS, "CREATE", bad, None)
    assert e.value.code == 422 and 'must be spec.names.plural+"."+spec.group' in str(e.value.status())
