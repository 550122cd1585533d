"""OpenAPI documents for kubectl explain and for client-side validation of a v1 List. Pure."""
from kubeweft.cni.protowire import fields
from kubeweft.lab.apiserver import openapi
from kubeweft.lab.resources import RESOURCES


def test_v3_documents_carry_every_served_kind_for_explain():
    for r in RESOURCES:
        gv = f"api/{r.version}" if not r.group else f"apis/{r.group}/{r.version}"
        doc = openapi.render_v3_group_version(gv)
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        schemas = [s for s in doc["components"]["schemas"].values()
                   if gvk in s.get("x-kubernetes-group-version-kind", [])]
        assert len(schemas) == 1, r.kind
        assert {"apiVersion", "kind", "metadata"} <= set(schemas[0]["properties"])
        assert all(p.get("description") for p in schemas[0]["properties"].values()), r.kind
        # explain finds the kind through an operation on one of its paths
        ops = [op for path in doc["paths"].values() for op in path.values()
               if op.get("x-kubernetes-group-version-kind") == gvk]
        assert ops, r.kind
    core = openapi.render_v3_group_version("api/v1")["components"]["schemas"]
    cm = core["io.k8s.api.core.v1.ConfigMap"]["properties"]["data"]
    assert cm["type"] == "object" and cm["additionalProperties"] == {"type": "string"}
    assert core["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]
    assert "io.k8s.api.core.v1.Container" in core
    # the reviews are create-only: a POST on their collection, and no PATCH kubectl could use
    authz = openapi.render_v3_group_version("apis/authorization.k8s.io/v1")["paths"]
    assert set(authz["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"]) == {"post"}


def test_v2_protobuf_is_an_empty_document():
    doc = {num: val for num, _, val in fields(openapi.render_v2_protobuf())}
    assert doc[1] == b"2.0"
    assert {num: val for num, _, val in fields(doc[2])} == {1: b"Kubernetes", 2: b"v1.35.0"}
    assert 9 not in doc                       # no definitions: kubectl skips client-side validation
    v2 = openapi.render_v2()
    assert v2["swagger"] == "2.0"
    assert v2["definitions"]["io.k8s.api.rbac.v1.Role"]["properties"]["rules"]["items"] == {
        "$ref": "#/definitions/io.k8s.api.rbac.v1.PolicyRule"}
