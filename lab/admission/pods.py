"""Pods at admission: the real defaults, QoS class, validation and the pod-update rule."""
from __future__ import annotations

import difflib
import json

from ..errors import Cause
from .fields import (
    DNS1123_LABEL,
    DNS1123_LABEL_MSG,
    DNS1123_SUBDOMAIN,
    DNS1123_SUBDOMAIN_MSG,
    PROTOCOLS,
    check_port_name,
    check_port_number,
    duplicate,
    fmt_value,
    forbidden,
    invalid,
    required,
    unsupported,
)

# The pod-update rule, worded as kube-apiserver 1.3x prints it.
POD_UPDATABLE = ("`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                 "`spec.tolerations` (only additions to existing tolerations),"
                 "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
                 "negative)")


def default_pod(pod: dict) -> dict:
    """SetDefaults_Pod / PodSpec / Container, plus DefaultTolerationSeconds (in place)."""
    spec = default_pod_spec(pod.setdefault("spec", {}))
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key and t.get("effect") in (None, "", "NoExecute") for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300})
    return pod


def default_pod_spec(spec: dict) -> dict:
    """SetDefaults_PodSpec and SetDefaults_Container (in place): what a pod template in a
    Deployment, ReplicaSet or DaemonSet gets too. The rest of default_pod happens to pods only."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        image = c.get("image", "")
        tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
        c.setdefault("imagePullPolicy",
                     "IfNotPresent" if tagged and not image.endswith(":latest") else "Always")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        res = c.setdefault("resources", {})
        if res.get("limits") and not res.get("requests"):
            res["requests"] = dict(res["limits"])
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")
        for key in ("livenessProbe", "readinessProbe", "startupProbe"):
            if isinstance(c.get(key), dict):
                default_probe(c[key])
    return spec


def default_probe(probe: dict) -> dict:
    """SetDefaults_Probe and SetDefaults_HTTPGetAction (in place)."""
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        probe.setdefault(key, value)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")
    return probe


def plan_qos_class(spec: dict) -> str:
    """BestEffort without any requests or limits, Guaranteed when every container's cpu and memory
    limits equal its requests, Burstable otherwise."""
    containers = spec.get("containers") or []
    any_set, guaranteed = False, bool(containers)
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        any_set = any_set or bool(req) or bool(lim)
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim[r]) != lim[r]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def validate_pod(pod: dict) -> list[Cause]:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    out: list[Cause] = []
    name = meta.get("name", "")
    if name and (len(name) > 253 or not DNS1123_SUBDOMAIN.match(name)):
        out.append(invalid("metadata.name", name, DNS1123_SUBDOMAIN_MSG))
    containers = spec.get("containers") or []
    if not containers:
        out.append(required("spec.containers"))
    names: set[str] = set()
    for i, c in enumerate(containers):
        path = f"spec.containers[{i}]"
        cname = c.get("name", "")
        if not cname:
            out.append(required(f"{path}.name"))
        elif not DNS1123_LABEL.match(cname):
            out.append(invalid(f"{path}.name", cname, DNS1123_LABEL_MSG))
        elif cname in names:
            out.append(duplicate(f"{path}.name", fmt_value(cname)))
        names.add(cname)
        if not c.get("image"):
            out.append(required(f"{path}.image"))
        for j, p in enumerate(c.get("ports") or []):
            ppath = f"{path}.ports[{j}]"
            if p.get("name"):
                out += check_port_name(f"{ppath}.name", p["name"])
            out += check_port_number(f"{ppath}.containerPort", p.get("containerPort"))
            if p.get("hostPort"):
                out += check_port_number(f"{ppath}.hostPort", p["hostPort"])
            if p.get("protocol") not in PROTOCOLS:
                out.append(unsupported(f"{ppath}.protocol", p.get("protocol"), PROTOCOLS))
    if spec.get("restartPolicy") not in ("Always", "OnFailure", "Never"):
        out.append(unsupported("spec.restartPolicy", spec.get("restartPolicy"),
                                ("Always", "OnFailure", "Never")))
    return out


def _mutable_view(spec: dict, old: dict) -> dict:
    """`spec` with the fields a pod update may change replaced by the old values (as the real
    ValidatePodUpdate munges them), so what remains must be equal."""
    view = dict(spec)
    for group in ("containers", "initContainers"):
        new_cs, old_cs = spec.get(group) or [], old.get(group) or []
        if group in old or new_cs:
            view[group] = new_cs
        else:
            view.pop(group, None)
        if len(new_cs) == len(old_cs) and new_cs:
            view[group] = [dict(c, image=o.get("image")) for c, o in zip(new_cs, old_cs)]
    ads, old_ads = spec.get("activeDeadlineSeconds"), old.get("activeDeadlineSeconds")
    if ads is not None and (old_ads is None or ads <= old_ads):     # set, or shortened: allowed
        if old_ads is None:
            view.pop("activeDeadlineSeconds", None)
        else:
            view["activeDeadlineSeconds"] = old_ads
    grace, old_grace = spec.get("terminationGracePeriodSeconds"), old.get("terminationGracePeriodSeconds")
    if old_grace is not None and old_grace < 0 and grace == 1:
        view["terminationGracePeriodSeconds"] = old_grace
    new_t, old_t = spec.get("tolerations") or [], old.get("tolerations") or []
    if all(t in new_t for t in old_t):          # additions only
        view["tolerations"] = old.get("tolerations", [])
    if not spec.get("nodeName") and old.get("nodeName"):
        view["nodeName"] = old["nodeName"]       # a client that never saw the binding
    return view


def validate_pod_update(pod: dict, old: dict) -> list[Cause]:
    spec, ospec = pod.get("spec") or {}, old.get("spec") or {}
    view = _mutable_view(spec, ospec)
    if view == ospec:
        if not spec.get("nodeName") and ospec.get("nodeName"):
            spec["nodeName"] = ospec["nodeName"]
        return []
    diff = "\n".join(difflib.unified_diff(
        json.dumps(ospec, indent=2, sort_keys=True).splitlines(),
        json.dumps(view, indent=2, sort_keys=True).splitlines(), "old", "new", lineterm="", n=1))
    return [forbidden("spec", f"pod updates may not change fields other than {POD_UPDATABLE}\n{diff}")]

