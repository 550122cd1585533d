"""apps/v1 at admission: Deployment, ReplicaSet, DaemonSet and ControllerRevision defaults and
validation as the real registry does them, worded as kube-apiserver 1.35 prints them. Pure."""
from __future__ import annotations

import re

from ..errors import Cause
from ..selectors import selector_matches
from .fields import fmt_value, forbidden, invalid, required, unsupported
from .pods import default_pod_spec, validate_pod

# the DaemonSet's template generation, kept by the registry (the controller's IsPodUpdated reads it)
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
NONNEGATIVE = "must be greater than or equal to 0"
_PERCENT = re.compile(r"^[0-9]+%$")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def drop_nulls(value):
    """`value` without null members: a template decoded by the real server has no nulls (kubectl
    rollout undo sends `creationTimestamp: null`), and template comparisons must not see them."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


# --- defaults ---------------------------------------------------------------------------------------

def default_template(spec: dict) -> None:
    template = drop_nulls(spec.get("template") or {})
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}))
    spec["template"] = template


def default_deployment(obj: dict) -> dict:
    """SetDefaults_Deployment (apps/v1)."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    default_template(spec)
    return obj


def default_replicaset(obj: dict) -> dict:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    default_template(spec)
    return obj


def default_daemonset(obj: dict) -> dict:
    spec = obj.setdefault("spec", {})
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", 1)
        ru.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    default_template(spec)
    return obj


def plan_template_generation(obj: dict, old: dict | None) -> dict:
    """The DaemonSet's template generation annotation: 1 at creation, one more with every
    template change, untouched by anything else (clients cannot set it)."""
    ann = obj.setdefault("metadata", {}).setdefault("annotations", {})
    if old is None:
        ann[TEMPLATE_GENERATION] = "1"
        return obj
    before = ((old.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_GENERATION, "1")
    changed = (obj.get("spec") or {}).get("template") != (old.get("spec") or {}).get("template")
    ann[TEMPLATE_GENERATION] = str(int(before) + 1) if changed else before
    return obj


# --- validation -------------------------------------------------------------------------------------

def _nonnegative(path: str, value) -> list[Cause]:
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return [invalid(path, value, NONNEGATIVE)]
    return []


def _int_or_percent(value) -> int | None:
    """The number an IntOrString stands for (a percentage's number), None when malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _PERCENT.match(value):
        return int(value[:-1])
    return None


def _check_int_or_percent(path: str, value) -> list[Cause]:
    if isinstance(value, str) and not _PERCENT.match(value):
        return [invalid(path, value, "a valid percent string must be a numeric string followed by an "
                                     "ending '%' (e.g. '1%',  or '93%', regex used for validation is "
                                     "'[0-9]+%')")]
    if isinstance(value, int) and not isinstance(value, bool):
        return _nonnegative(path, value)
    if value is not None and not isinstance(value, str):
        return [invalid(path, value, "must be an integer or percentage (e.g '5%%')")]
    return []


def _not_over_100(path: str, value) -> list[Cause]:
    if isinstance(value, str) and _PERCENT.match(value) and int(value[:-1]) > 100:
        return [invalid(path, value, "must not be greater than 100%")]
    return []


def validate_selector(selector, path: str, what: str) -> list[Cause]:
    if selector is None:
        return [required(path)]
    if not isinstance(selector, dict):
        return [invalid(path, selector, "invalid label selector")]
    out = []
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        op = expr.get("operator")
        if op not in _OPERATORS:
            out.append(unsupported(f"{path}.matchExpressions[{i}].operator", op, _OPERATORS))
        elif op in ("In", "NotIn") and not expr.get("values"):
            out.append(required(f"{path}.matchExpressions[{i}].values"))
        elif op in ("Exists", "DoesNotExist") and expr.get("values"):
            out.append(forbidden(f"{path}.matchExpressions[{i}].values",
                                 "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        out.append(invalid(path, selector, f"empty selector is invalid for {what}"))
    return out


def validate_template(spec: dict, path: str, kind: str) -> list[Cause]:
    """The pod template: its labels match the selector, it is a valid pod, restartPolicy Always."""
    template = spec.get("template")
    if not isinstance(template, dict) or not template.get("spec"):
        return [required(f"{path}.template")]
    out = []
    labels = (template.get("metadata") or {}).get("labels") or {}
    selector = spec.get("selector")
    if isinstance(selector, dict) and (selector.get("matchLabels") or selector.get("matchExpressions")):
        try:
            ok = selector_matches(selector, labels)
        except (ValueError, KeyError):
            ok = True           # an invalid selector was reported already
        if not ok:
            out.append(Cause(f"{path}.template.metadata.labels", "FieldValueInvalid",
                             f"Invalid value: {fmt_value(labels)}: `selector` does not match template `labels`"))
    for c in validate_pod({"metadata": {}, "spec": template["spec"]}):
        out.append(Cause(f"{path}.template.{c.field}", c.reason, c.message))
    tspec = template["spec"]
    if tspec.get("restartPolicy") != "Always" and not any(c.field.endswith("restartPolicy") for c in out):
        out.append(unsupported(f"{path}.template.spec.restartPolicy", tspec.get("restartPolicy"), ("Always",)))
    if tspec.get("activeDeadlineSeconds") is not None:
        out.append(forbidden(f"{path}.template.spec.activeDeadlineSeconds",
                             f"activeDeadlineSeconds in {kind} is not Supported"))
    return out


def validate_replicaset(obj: dict) -> list[Cause]:
    """A ReplicaSet, and what a Deployment shares with it."""
    spec = obj.get("spec") or {}
    out = _nonnegative("spec.replicas", spec.get("replicas"))
    out += _nonnegative("spec.minReadySeconds", spec.get("minReadySeconds", 0))
    # the real ReplicaSet validation says "deployment" here too
    out += validate_selector(spec.get("selector"), "spec.selector", "deployment")
    out += validate_template(spec, "spec", "ReplicaSet")
    return out


def validate_deployment(obj: dict) -> list[Cause]:
    spec = obj.get("spec") or {}
    out = validate_replicaset(obj)
    strategy = spec.get("strategy") or {}
    stype = strategy.get("type")
    if stype == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            out.append(forbidden("spec.strategy.rollingUpdate",
                                 "may not be specified when strategy `type` is 'Recreate'"))
    elif stype == "RollingUpdate":
        ru = strategy.get("rollingUpdate") or {}
        unavailable, surge = ru.get("maxUnavailable"), ru.get("maxSurge")
        out += _check_int_or_percent("spec.strategy.rollingUpdate.maxUnavailable", unavailable)
        out += _check_int_or_percent("spec.strategy.rollingUpdate.maxSurge", surge)
        if _int_or_percent(unavailable) == 0 and _int_or_percent(surge) == 0:
            out.append(invalid("spec.strategy.rollingUpdate.maxUnavailable", unavailable,
                               "may not be 0 when `maxSurge` is 0"))
        out += _not_over_100("spec.strategy.rollingUpdate.maxUnavailable", unavailable)
    else:
        out.append(unsupported("spec.strategy", strategy, ("Recreate", "RollingUpdate")))
    out += _nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    deadline = spec.get("progressDeadlineSeconds")
    if isinstance(deadline, int):
        out += _nonnegative("spec.progressDeadlineSeconds", deadline)
        if deadline <= (spec.get("minReadySeconds") or 0):
            out.append(invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"))
    return out


def validate_daemonset(obj: dict) -> list[Cause]:
    spec = obj.get("spec") or {}
    out = validate_selector(spec.get("selector"), "spec.selector", "daemonset")
    out += validate_template(spec, "spec", "DaemonSet")
    out += _nonnegative("spec.minReadySeconds", spec.get("minReadySeconds", 0))
    strategy = spec.get("updateStrategy") or {}
    stype = strategy.get("type")
    if stype == "RollingUpdate":
        ru = strategy.get("rollingUpdate")
        if ru is None:
            out.append(required("spec.updateStrategy.rollingUpdate"))
        else:
            path = "spec.updateStrategy.rollingUpdate"
            unavailable, surge = ru.get("maxUnavailable"), ru.get("maxSurge")
            out += _check_int_or_percent(f"{path}.maxUnavailable", unavailable)
            out += _check_int_or_percent(f"{path}.maxSurge", surge)
            out += _not_over_100(f"{path}.maxUnavailable", unavailable)
            out += _not_over_100(f"{path}.maxSurge", surge)
            has_unavailable, has_surge = _int_or_percent(unavailable) not in (0, None), \
                _int_or_percent(surge) not in (0, None)
            if has_unavailable and has_surge:
                out.append(invalid(f"{path}.maxSurge", surge, "may not be set when maxUnavailable is non-zero"))
            elif not has_unavailable and not has_surge:
                out.append(Cause(f"{path}.maxUnavailable", "FieldValueRequired",
                                 "Required value: cannot be 0 when maxSurge is 0"))
    elif stype != "OnDelete":
        out.append(unsupported("spec.updateStrategy", strategy, ("RollingUpdate", "OnDelete")))
    out += _nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    return out


def validate_controller_revision(obj: dict) -> list[Cause]:
    out = []
    if obj.get("data") is None:
        out.append(Cause("data", "FieldValueRequired", "Required value: data is mandatory"))
    out += _nonnegative("revision", obj.get("revision", 0))
    return out


def validate_immutable(obj: dict, old: dict, path: str) -> list[Cause]:
    """A field an update may not change (apps/v1 selectors, a revision's data)."""
    def at(o: dict):
        for step in path.split("."):
            o = (o or {}).get(step) if isinstance(o, dict) else None
        return o
    new_value = at(obj)
    if new_value != at(old):
        return [invalid(path, new_value, "field is immutable")]
    return []


# --- the entry point ----------------------------------------------------------------------------------

_DEFAULTS = {"Deployment": default_deployment, "ReplicaSet": default_replicaset,
             "DaemonSet": default_daemonset}
_VALIDATE = {"Deployment": validate_deployment, "ReplicaSet": validate_replicaset,
             "DaemonSet": validate_daemonset, "ControllerRevision": validate_controller_revision}
KINDS = tuple(_VALIDATE)


def admit_workload(kind: str, operation: str, obj: dict, old: dict | None) -> list[Cause]:
    """Default `obj` in place and return what is wrong with it (empty: admit it)."""
    if kind in _DEFAULTS:
        _DEFAULTS[kind](obj)
    if kind == "DaemonSet":
        plan_template_generation(obj, old if operation == "UPDATE" else None)
    causes = _VALIDATE[kind](obj)
    if operation == "UPDATE" and old is not None:
        if kind in _DEFAULTS:
            causes += validate_immutable(obj, old, "spec.selector")
        else:
            causes += validate_immutable(obj, old, "data")
    return causes

