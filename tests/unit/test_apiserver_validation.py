"""Generic validation: names, unknown fields (fieldValidation), discovery and OpenAPI documents."""
import pytest
from kubeweft.lab import errors
from kubeweft.lab.apiserver import discovery, openapi
from kubeweft.lab.apiserver.validation import check_name, drop_fields, find_unknown_fields, strict_error
from kubeweft.lab.resources import BY_PLURAL

PODS, SVCS, NSS = BY_PLURAL[("", "pods")], BY_PLURAL[("", "services")], BY_PLURAL[("", "namespaces")]
CROLES = BY_PLURAL[("rbac.authorization.k8s.io", "clusterroles")]


@pytest.mark.parametrize("resource,name,ok", [
    (PODS, "web-0", True), (PODS, "a.b.c", True), (PODS, "Web", False), (PODS, "a_b", False),
    (PODS, "-a", False), (SVCS, "web", True), (SVCS, "0web", False), (SVCS, "a.b", False),
    (NSS, "team-a", True), (NSS, "a.b", False), (PODS, "a" * 254, False), (SVCS, "a" * 64, False),
    # RBAC names are path segments, as kubeadm's system:coredns
    (CROLES, "system:coredns", True), (CROLES, "Admin_X", True), (CROLES, "..", False),
    (CROLES, "a/b", False), (CROLES, "a%b", False),
])
def test_names(resource, name, ok):
    if ok:
        check_name(resource, name)
    else:
        with pytest.raises(errors.APIError) as e:
            check_name(resource, name)
        assert e.value.code == 422
        assert f'{resource.kind}' in e.value.message and f'"{name}" is invalid: metadata.name: Invalid value: ' in e.value.message


def test_service_name_message_is_the_real_servers():
    with pytest.raises(errors.APIError) as e:
        check_name(SVCS, "1abc")
    assert "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an " \
           "alphabetic character" in e.value.message


def test_unknown_fields():
    pod = {"apiVersion": "v1", "kind": "Pod", "extra": 1,
           "metadata": {"name": "p", "labelz": {}},
           "spec": {"foo": 1, "containers": [{"name": "c", "image": "i", "bogus": 2,
                                              "ports": [{"containerPort": 1, "hostport": 2}]}]}}
    unknown = find_unknown_fields("Pod", pod)
    assert unknown == ["extra", "metadata.labelz", "spec.foo", "spec.containers[0].bogus",
                       "spec.containers[0].ports[0].hostport"]
    drop_fields(pod, unknown)
    assert find_unknown_fields("Pod", pod) == []
    assert pod["spec"]["containers"][0] == {"name": "c", "image": "i", "ports": [{"containerPort": 1}]}
    svc = {"spec": {"ports": [{"port": 80, "targetport": 1}], "selector": {}}}
    assert find_unknown_fields("Service", svc) == ["spec.ports[0].targetport"]
    assert find_unknown_fields("EndpointSlice", {"addressType": "IPv4", "endpoints": [], "spec": {}}) == ["spec"]


def test_strict_error_wording():
    e = strict_error("Pod", "v1", ["spec.foo", "spec.bar"])
    assert e.code == 400
    assert e.message == ('Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
                         'unknown field "spec.foo", unknown field "spec.bar"')


def test_discovery_documents():
    core = discovery.render_resource_list("", "v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["namespaced"] and not by_name["nodes"]["namespaced"]
    assert "pods/status" in by_name and "watch" in by_name["services"]["verbs"]
    assert by_name["services"]["shortNames"] == ["svc"]
    groups = {g["name"] for g in discovery.render_api_group_list()["groups"]}
    assert {"discovery.k8s.io", "networking.k8s.io", "rbac.authorization.k8s.io", "authorization.k8s.io",
            "authentication.k8s.io", "coordination.k8s.io", "apps"} <= groups
    assert "" not in groups
    assert discovery.render_resource_list("batch", "v1") is None
    # kubectl drain and scale learn the kinds of these subresources from discovery
    assert by_name["pods/eviction"] == {"name": "pods/eviction", "singularName": "", "namespaced": True,
                                        "group": "policy", "version": "v1", "kind": "Eviction",
                                        "verbs": ["create"]}
    apps = {r["name"]: r for r in discovery.render_resource_list("apps", "v1")["resources"]}
    assert (apps["deployments/scale"]["group"], apps["deployments/scale"]["kind"]) == ("autoscaling", "Scale")
    assert apps["daemonsets"]["shortNames"] == ["ds"] and apps["deployments"]["categories"] == ["all"]


def test_openapi_v3_says_field_validation_is_supported():
    index = openapi.render_v3_index()
    assert {"api/v1", "apis/discovery.k8s.io/v1", "apis/networking.k8s.io/v1",
            "apis/rbac.authorization.k8s.io/v1", "apis/coordination.k8s.io/v1", "apis/apps/v1"} <= set(index["paths"])
    doc = openapi.render_v3_group_version("api/v1")
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert {"name": "fieldValidation", "in": "query"}.items() <= patch["parameters"][0].items()
    assert "/api/v1/nodes/{name}" in doc["paths"]
    assert openapi.render_v3_group_version("apis/batch/v1") is None
    apps = openapi.render_v3_group_version("apis/apps/v1")
    assert "/apis/apps/v1/namespaces/{namespace}/deployments/{name}" in apps["paths"]
