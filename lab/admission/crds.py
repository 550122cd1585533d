"""CustomResourceDefinition (apiextensions.k8s.io/v1): the checks the real server makes on the
names and versions, and the status its apiextensions controllers write. The lab serves only the
kinds built into it (lab/resources.py): a CRD for one of them, with the same group, plural, kind,
scope and a served version, is accepted as a real server accepts it (NamesAccepted and Established
True), which is what `kubectl apply -k deploy/` does before the objects of that kind. A CRD for any
other kind is stored with Established False: the lab cannot serve a kind it was not built with,
and a client waiting for `condition=established` sees why instead of a kind that never answers.
Pure."""
from __future__ import annotations

import datetime

from ..errors import Cause
from ..resources import find
from .fields import invalid, required

SCOPES = ("Namespaced", "Cluster")


def validate_crd(obj: dict) -> list[Cause]:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[Cause] = []
    if not spec.get("group"):
        causes.append(required("spec.group"))
    for field in ("plural", "kind"):
        if not names.get(field):
            causes.append(required(f"spec.names.{field}"))
    if spec.get("scope") not in SCOPES:
        causes.append(invalid("spec.scope", spec.get("scope"), 'must be either "Namespaced" or "Cluster"'))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(required("spec.versions"))
    elif sum(bool(v.get("storage")) for v in versions) != 1:
        causes.append(invalid("spec.versions", versions, "must have exactly one version marked as storage version"))
    name = (obj.get("metadata") or {}).get("name", "")
    if spec.get("group") and names.get("plural") and name != f"{names['plural']}.{spec['group']}":
        causes.append(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    return causes


def served_natively(obj: dict) -> bool:
    """The lab serves this CRD's kind itself: same group, plural, kind, scope and a served version."""
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    r = find(spec.get("group", ""), names.get("plural", ""))
    return (r is not None and r.kind == names.get("kind") and r.namespaced == (spec.get("scope") == "Namespaced")
            and any(v.get("name") == r.version and v.get("served") for v in spec.get("versions") or []))


def render_crd_status(obj: dict, now: datetime.datetime | None = None) -> dict:
    """acceptedNames, the NamesAccepted and Established conditions, storedVersions."""
    when = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    spec = obj.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", names.get("plural", "").lower() and names.get("kind", "").lower())
    names.setdefault("listKind", names.get("kind", "") + "List")
    if served_natively(obj):
        established = {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                       "message": "the initial names have been accepted"}
    else:
        established = {"type": "Established", "status": "False", "reason": "NotServed",
                       "message": "the lab's API server serves only the kinds built into it"}
    return {"acceptedNames": names,
            "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                            "message": "no conflicts found", "lastTransitionTime": when},
                           dict(established, lastTransitionTime=when)],
            "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")]}
