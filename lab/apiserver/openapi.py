"""OpenAPI v3 and v2 documents: what kubectl 1.35 needs of them. Pure.

kubectl reads /openapi/v3 to learn whether the server supports the fieldValidation query
parameter (it looks for a PATCH operation tagged with the kind's group-version-kind that lists
it); if so it validates server-side and never asks for /openapi/v2. The PATCH operations carry
no requestBody on purpose: kubectl then computes apply's strategic merge patch from its
built-in Go types, which know the merge keys of every kind the lab serves. The create-only reviews
have a POST operation instead. Each document's components carry the kinds' schemas
(lab.apiserver.schemas), which `kubectl explain` reads.

/openapi/v2: kubectl asks for it (as application/com.github.proto-openapi.spec.v2@v1.0+protobuf,
and only parses protobuf) when it validates a v1 List client-side (`kubectl apply -f` of
`kubectl get -o yaml` output), and when apply looks for patch metadata. It gets a Document with no
definitions: kubectl then skips client-side validation of the items (the server still checks each
with fieldValidation=Strict) and keeps computing patches from its built-in types, as it does with
the v3 documents. A JSON client gets the Swagger 2.0 document with every kind's definition.
"""
from __future__ import annotations

import hashlib
import json

from kubeweft.cni import protowire

from ..resources import RESOURCES, groups
from . import schemas

_QUERY_PARAMS = ("fieldValidation", "fieldManager", "dryRun", "force")


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def render_v3_group_version(gv: str) -> dict | None:
    """The document for "api/v1" or "apis/<group>/<version>", or None if not served."""
    gv = gv.strip("/")
    match = [(g, v) for g, v in groups() if _gv_path(g, v) == gv]
    if not match:
        return None
    group, version = match[0]
    paths = {}
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        base = "/" + _gv_path(group, version)
        item = (f"{base}/namespaces/{{namespace}}/{r.plural}/{{name}}" if r.namespaced
                else f"{base}/{r.plural}/{{name}}")
        gvk = {"group": group, "version": version, "kind": r.kind}
        if not r.stored:
            collection = (f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}")
            paths[collection] = {"post": {
                "operationId": f"create{r.kind}", "x-kubernetes-action": "post",
                "x-kubernetes-group-version-kind": gvk, "responses": {"201": {"description": "Created"}}}}
            continue
        paths[item] = {"patch": {
            "operationId": f"patch{r.kind}", "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [{"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                           for p in _QUERY_PARAMS],
            "responses": {"200": {"description": "OK"}}}}
    kinds = [(group, version, r.kind) for r in RESOURCES if (r.group, r.version) == (group, version)]
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.35.0"},
            "paths": paths, "components": {"schemas": schemas.render_schemas(kinds, "#/components/schemas/")}}


def render_v2() -> dict:
    """The Swagger 2.0 document for JSON clients: every served kind's definition."""
    kinds = [(r.group, r.version, r.kind) for r in RESOURCES]
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.35.0"}, "paths": {},
            "definitions": schemas.render_schemas(kinds, "#/definitions/")}


def render_v2_protobuf() -> bytes:
    """gnostic's openapi_v2.Document {swagger: "2.0", info: {title, version}}: no definitions."""
    info = protowire.encode_bytes_field(1, b"Kubernetes") + protowire.encode_bytes_field(2, b"v1.35.0")
    return protowire.encode_bytes_field(1, b"2.0") + protowire.encode_bytes_field(2, info)


def render_v3_index() -> dict:
    paths = {}
    for group, version in groups():
        gv = _gv_path(group, version)
        digest = hashlib.sha256(json.dumps(render_v3_group_version(gv), sort_keys=True).encode())
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest.hexdigest()[:32].upper()}"}
    return {"paths": paths}
