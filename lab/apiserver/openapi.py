"""OpenAPI v3 documents: the smallest that kubectl 1.35 needs. Pure.

kubectl reads /openapi/v3 to learn whether the server supports the fieldValidation query
parameter (it looks for a PATCH operation tagged with the kind's group-version-kind that lists
it); if so it validates server-side and never asks for /openapi/v2. The PATCH operations carry
no requestBody on purpose: kubectl then computes apply's strategic merge patch from its
built-in Go types, which know the merge keys of every kind the lab serves.
"""
from __future__ import annotations

import hashlib
import json

from ..resources import RESOURCES, groups

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
        paths[item] = {"patch": {
            "operationId": f"patch{r.kind}", "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [{"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                           for p in _QUERY_PARAMS],
            "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.35.0"},
            "paths": paths, "components": {"schemas": {}}}


def render_v3_index() -> dict:
    paths = {}
    for group, version in groups():
        gv = _gv_path(group, version)
        digest = hashlib.sha256(json.dumps(render_v3_group_version(gv), sort_keys=True).encode())
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest.hexdigest()[:32].upper()}"}
    return {"paths": paths}
