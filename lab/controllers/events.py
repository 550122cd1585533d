"""core/v1 Events as the controllers record them (what `kubectl describe` and `get events` list). Pure."""
from __future__ import annotations


def render_event(obj: dict, kind: str, reason: str, message: str, component: str, now: str,
                 nanos: int, action: str = "") -> dict:
    """An Event about `obj` (`kind` is Normal or Warning), reported by `component`. Its name is
    "<object>.<nanos in hex>" as client-go's recorder makes it, so events sort as they happened."""
    meta = obj["metadata"]
    involved = {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", ""),
                "name": meta["name"], "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", "")}
    if meta.get("namespace"):
        involved["namespace"] = meta["namespace"]
    return {"metadata": {"name": f"{meta['name']}.{nanos:x}", "namespace": meta.get("namespace") or "default"},
            "involvedObject": involved, "reason": reason, "message": message, "type": kind,
            "source": {"component": component}, "reportingComponent": component,
            "reportingInstance": component, "action": action or reason,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1}
