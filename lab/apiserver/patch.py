"""PATCH bodies applied to stored objects: JSON patch, JSON merge patch and a strategic merge
patch close enough to the real one for the kinds the lab serves. Pure.

Strategic merge, as apimachinery does it for these kinds: maps merge recursively, null deletes
a key, lists of objects with a merge key (containers by name, ports by port+protocol, env by
name, conditions by type, ...) merge item by item, every other list is replaced. Directives:
`$patch: replace|delete` on maps and list items, `$deleteFromPrimitiveList/<f>`; the ordering
and retain directives (`$setElementOrder/<f>`, `$retainKeys`) are accepted and ignored.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonpatch

from .. import errors

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_DELETE = object()       # "this map was deleted by $patch: delete"


def _proto(item: dict) -> str:
    return item.get("protocol") or "TCP"


# field name -> the key that identifies an item of that list
_MERGE_KEYS: dict[str, Callable[[dict], Any]] = {
    "containers": lambda i: i.get("name"),
    "initContainers": lambda i: i.get("name"),
    "ephemeralContainers": lambda i: i.get("name"),
    "env": lambda i: i.get("name"),
    "volumes": lambda i: i.get("name"),
    "volumeMounts": lambda i: i.get("mountPath"),
    "volumeDevices": lambda i: i.get("devicePath"),
    "conditions": lambda i: i.get("type"),
    "imagePullSecrets": lambda i: i.get("name"),
    "hostAliases": lambda i: i.get("ip"),
    "topologySpreadConstraints": lambda i: (i.get("topologyKey"), i.get("whenUnsatisfiable")),
    "addresses": lambda i: i.get("type"),
    "taints": lambda i: (i.get("key"), i.get("effect")),
    "ownerReferences": lambda i: i.get("uid"),
}
_PRIMITIVE_MERGE = {"finalizers"}      # primitive lists that merge as sets instead of replacing


def _ports_key(items: list) -> Callable[[dict], Any] | None:
    """Container ports merge by containerPort+protocol, Service ports by port+protocol."""
    if any(isinstance(i, dict) and "containerPort" in i for i in items):
        return lambda i: (i.get("containerPort"), _proto(i))
    if any(isinstance(i, dict) and "port" in i for i in items):
        return lambda i: (i.get("port"), _proto(i))
    return None


def _strip(value: Any) -> Any:
    """A patch value with its directives removed, for parts that are added as they are."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()
                if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _merge_list(field: str, orig: Any, patch: list) -> list:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    orig_list = orig if isinstance(orig, list) else []
    if field in _PRIMITIVE_MERGE:
        return list(dict.fromkeys([*orig_list, *patch]))
    key = _MERGE_KEYS.get(field) or (_ports_key(orig_list + patch) if field == "ports" else None)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [_strip(v) for v in patch]
    result = list(orig_list)
    for item in patch:
        k = key(item)
        idx = next((n for n, o in enumerate(result) if isinstance(o, dict) and key(o) == k), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
            continue
        if idx is None:
            result.append(_strip(item))
        else:
            result[idx] = strategic_merge(result[idx], item)
    return result


def strategic_merge(orig: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to `orig` (neither is changed); return the new value."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return _strip(patch)
    if patch.get("$patch") == "delete":
        return _DELETE
    result = dict(orig) if isinstance(orig, dict) else {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [x for x in result[field] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge(result.get(k), v)
            if merged is _DELETE:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list):
            result[k] = _merge_list(k, result.get(k), v)
        else:
            result[k] = v
    return result


def merge_patch(orig: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(orig) if isinstance(orig, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def apply_json_patch(orig: dict, ops: Any) -> dict:
    if not isinstance(ops, list):
        raise errors.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        return jsonpatch.apply_patch(orig, ops, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise errors.APIError(422, "Invalid", f"the server rejected our request due to an error in "
                                              f"our request: {e}") from None


def apply_patch(content_type: str, orig: dict, body: bytes) -> dict:
    """The patched object for a PATCH request with this Content-Type (parameters ignored)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH):
        raise errors.unsupported_media_type(content_type)
    try:
        doc = json.loads(body or b"null")
    except ValueError as e:
        raise errors.bad_request(f"error decoding patch: {e}") from None
    if ctype == JSON_PATCH:
        return apply_json_patch(orig, doc)
    if not isinstance(doc, dict):
        raise errors.bad_request("error decoding patch: the patch is not a JSON object")
    if ctype == MERGE_PATCH:
        return merge_patch(orig, doc)
    return strategic_merge(orig, doc)
