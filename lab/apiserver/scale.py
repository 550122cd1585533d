"""The scale subresource (autoscaling/v1 Scale) of Deployments and ReplicaSets. Pure.

`kubectl scale` GETs it and PUTs it back with spec.replicas changed (the Scale's
resourceVersion is a precondition on the parent), `kubectl autoscale` and HPAs read
status.selector from it.
"""
from __future__ import annotations

import copy

from .. import errors
from ..admission.fields import fmt_value
from .tables import format_selector


def render_scale(obj: dict) -> dict:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    selector = format_selector(spec.get("selector"))
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": spec.get("replicas", 0)},
            "status": {"replicas": status.get("replicas", 0),
                       "selector": "" if selector == "<none>" else selector}}


def apply_scale(obj: dict, scale: object) -> dict:
    """The parent `obj` with the Scale's spec.replicas; its resourceVersion, when set, carries
    over as the write's precondition. Raises 400/422 as the real server for a bad Scale."""
    if not isinstance(scale, dict):
        raise errors.bad_request("the body of the request was empty or not an object")
    if scale.get("kind") not in (None, "Scale"):
        raise errors.bad_request(f"the kind in the data ({scale['kind']}) does not match the expected "
                                 "kind (Scale)")
    name = obj["metadata"]["name"]
    meta = scale.get("metadata") or {}
    if meta.get("name") not in (None, name):
        raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on "
                                 f"the URL ({name})")
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise errors.bad_request(f'Scale in version "v1" cannot be handled as a Scale: '
                                 f"json: cannot unmarshal {type(replicas).__name__} into Go struct "
                                 "field ScaleSpec.spec.replicas of type int32")
    if replicas < 0:
        raise errors.invalid("autoscaling", "Scale", name, [errors.Cause(
            "spec.replicas", "FieldValueInvalid",
            f"Invalid value: {fmt_value(replicas)}: must be greater than or equal to 0")])
    new = copy.deepcopy(obj)
    new["spec"]["replicas"] = replicas
    if meta.get("resourceVersion"):
        new["metadata"]["resourceVersion"] = meta["resourceVersion"]
    else:
        new["metadata"].pop("resourceVersion", None)
    return new
