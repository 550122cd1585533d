"""Server-side printing: the meta.k8s.io/v1 Table that `kubectl get` asks for. Pure.

Columns and cells follow kubernetes/pkg/printers/internalversion for the kinds the lab serves;
priority 0 columns are always shown, priority 1 only with -o wide.
"""
from __future__ import annotations

import datetime

Column = tuple[str, str, int]       # (name, type, priority)

_NAME: Column = ("Name", "string", 0)
_AGE: Column = ("Age", "string", 0)

COLUMNS: dict[str, list[Column]] = {
    "Pod": [_NAME, ("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "string", 0), _AGE,
            ("IP", "string", 1), ("Node", "string", 1), ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1)],
    "Service": [_NAME, ("Type", "string", 0), ("Cluster-IP", "string", 0), ("External-IP", "string", 0),
                ("Port(s)", "string", 0), _AGE, ("Selector", "string", 1)],
    "Node": [_NAME, ("Status", "string", 0), ("Roles", "string", 0), _AGE, ("Version", "string", 0),
             ("Internal-IP", "string", 1), ("External-IP", "string", 1), ("OS-Image", "string", 1),
             ("Kernel-Version", "string", 1), ("Container-Runtime", "string", 1)],
    "EndpointSlice": [_NAME, ("AddressType", "string", 0), ("Ports", "string", 0),
                      ("Endpoints", "string", 0), _AGE],
    "NetworkPolicy": [_NAME, ("Pod-Selector", "string", 0), _AGE],
    "Ingress": [_NAME, ("Class", "string", 0), ("Hosts", "string", 0), ("Address", "string", 0),
                ("Ports", "string", 0), _AGE],
    "IngressClass": [_NAME, ("Controller", "string", 0), ("Parameters", "string", 0), _AGE],
    "Namespace": [_NAME, ("Status", "string", 0), _AGE],
    "Event": [("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
              ("Object", "string", 0), ("Message", "string", 0)],
    "ConfigMap": [_NAME, ("Data", "string", 0), _AGE],
    "Secret": [_NAME, ("Type", "string", 0), ("Data", "string", 0), _AGE],
    "ServiceAccount": [_NAME, ("Secrets", "string", 0), _AGE],
    "Endpoints": [_NAME, ("Endpoints", "string", 0), _AGE],
    "Role": [_NAME, ("Created At", "date", 0)],
    "ClusterRole": [_NAME, ("Created At", "date", 0)],
    "CustomResourceDefinition": [_NAME, ("Created At", "date", 0)],
    "RoleBinding": [_NAME, ("Role", "string", 0), _AGE, ("Users", "string", 1), ("Groups", "string", 1),
                    ("ServiceAccounts", "string", 1)],
    "ClusterRoleBinding": [_NAME, ("Role", "string", 0), _AGE, ("Users", "string", 1), ("Groups", "string", 1),
                           ("ServiceAccounts", "string", 1)],
    "Lease": [_NAME, ("Holder", "string", 0), _AGE],
    "ServiceCIDR": [_NAME, ("CIDRs", "string", 0), _AGE],
    "ClusterNetworkPolicy": [_NAME, ("Tier", "string", 0), ("Priority", "string", 0), _AGE],
    "IPAddress": [_NAME, ("ParentRef", "string", 0)],
    "Deployment": [_NAME, ("Ready", "string", 0), ("Up-to-date", "string", 0), ("Available", "string", 0),
                   _AGE, ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)],
    "ReplicaSet": [_NAME, ("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0),
                   _AGE, ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)],
    "DaemonSet": [_NAME, ("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0),
                  ("Up-to-date", "integer", 0), ("Available", "integer", 0), ("Node Selector", "string", 0),
                  _AGE, ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)],
    "ControllerRevision": [_NAME, ("Controller", "string", 0), ("Revision", "integer", 0), _AGE],
}


def parse_time(ts: str | None) -> datetime.datetime | None:
    if not ts:
        return None
    try:
        return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y{d % 365}d" if d < 365 * 8 else f"{d // 365}y"


def _age(obj: dict, now: datetime.datetime) -> str:
    t = parse_time(obj.get("metadata", {}).get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration((now - t).total_seconds())


def _terminated_reason(t: dict, prefix: str = "") -> str:
    if t.get("reason"):
        return prefix + t["reason"]
    if t.get("signal"):
        return f"{prefix}Signal:{t['signal']}"
    return f"{prefix}ExitCode:{t.get('exitCode', 0)}"


def _later_restart(c: dict, last: datetime.datetime | None) -> datetime.datetime | None:
    """The later of `last` and when container status `c` last finished (its lastState)."""
    t = parse_time(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
    return last if t is None or (last is not None and last >= t) else t


def _pod_row(o: dict, now: datetime.datetime) -> list:
    """As kubectl's printPod: the STATUS column from init containers, then containers (last one
    wins), Terminating over all; RESTARTS with how long ago the last one was."""
    spec, status, meta = o.get("spec", {}), o.get("status", {}), o.get("metadata", {})
    containers = spec.get("containers") or []
    reason = status.get("reason") or status.get("phase") or "Pending"
    restarts, ready, last_restart = 0, 0, None
    initializing = False
    inits = status.get("initContainerStatuses") or []
    for i, c in enumerate(inits):
        restarts += int(c.get("restartCount", 0))
        last_restart = _later_restart(c, last_restart)
        state = c.get("state") or {}
        term, waiting = state.get("terminated"), state.get("waiting")
        if term is not None and term.get("exitCode") == 0:
            continue
        if term is not None:
            reason = _terminated_reason(term, "Init:")
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or inits)}"
        initializing = True
        break
    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True"
                      for c in status.get("conditions") or [])
    if not initializing or initialized:
        restarts, has_running = 0, False
        for c in reversed(status.get("containerStatuses") or []):
            restarts += int(c.get("restartCount", 0))
            last_restart = _later_restart(c, last_restart)
            state = c.get("state") or {}
            waiting, term = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif term is not None:
                reason = _terminated_reason(term)
            elif c.get("ready") and "running" in state:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if any(c.get("type") == "Ready" and c.get("status") == "True"
                                      for c in status.get("conditions") or []) else "NotReady"
    if meta.get("deletionTimestamp") and status.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    gates = spec.get("readinessGates") or []
    return [meta.get("name"), f"{ready}/{len(containers)}", reason, restarts_text, _age(o, now),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", f"0/{len(gates)}" if gates else "<none>"]


def _service_ports(spec: dict) -> str:
    parts = []
    for p in spec.get("ports") or []:
        proto = p.get("protocol") or "TCP"
        if p.get("nodePort"):
            parts.append(f"{p.get('port')}:{p['nodePort']}/{proto}")
        else:
            parts.append(f"{p.get('port')}/{proto}")
    return ",".join(parts) or "<none>"


def _service_row(o: dict, now: datetime.datetime) -> list:
    spec, status = o.get("spec", {}), o.get("status", {})
    stype = spec.get("type") or "ClusterIP"
    external = list(spec.get("externalIPs") or [])
    if stype == "LoadBalancer":
        # the real printer lists the ingress addresses as a sorted set (a dual-stack Service's two
        # addresses in string order, whatever the family order), then the externalIPs
        ingress = sorted({i.get("ip") or i.get("hostname")
                          for i in (status.get("loadBalancer") or {}).get("ingress") or []} - {None, ""})
        external = ingress + external or ["<pending>"]
    elif stype == "ExternalName":
        external = [spec.get("externalName", "")]
    selector = spec.get("selector") or {}
    return [o["metadata"].get("name"), stype, spec.get("clusterIP") or "<none>",
            ",".join(external) if external else "<none>", _service_ports(spec), _age(o, now),
            ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"]


def _node_row(o: dict, now: datetime.datetime) -> list:
    spec, status, meta = o.get("spec", {}), o.get("status", {}), o.get("metadata", {})
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Unknown" if ready is None else ("Ready" if ready.get("status") == "True" else "NotReady")
    if spec.get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in (meta.get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    addrs = status.get("addresses") or []

    def addr(kind: str) -> str:
        return next((a.get("address") for a in addrs if a.get("type") == kind), "<none>")
    info = status.get("nodeInfo") or {}
    return [meta.get("name"), state, ",".join(roles) or "<none>", _age(o, now),
            info.get("kubeletVersion", ""), addr("InternalIP"), addr("ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def _slice_row(o: dict, now: datetime.datetime) -> list:
    ports = ",".join(str(p.get("port")) for p in o.get("ports") or [] if p.get("port") is not None)
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    eps = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [o["metadata"].get("name"), o.get("addressType", ""), ports or "<unset>", eps or "<unset>",
            _age(o, now)]


def format_selector(sel: dict | None) -> str:
    """metav1.FormatLabelSelector."""
    if not sel:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op, key, vals = e.get("operator", ""), e.get("key", ""), e.get("values") or []
        if op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {op.lower()} ({','.join(vals)})")
    return ",".join(parts) or "<none>"


def _ingress_row(o: dict, now: datetime.datetime) -> list:
    """printIngress: the first three hosts, the load-balancer addresses sorted (the server
    prints wide, so never cut), and 80 or "80, 443" when TLS is configured."""
    spec = o.get("spec") or {}
    rules = spec.get("rules") or []
    hosts: list[str] = []
    more = False
    for rule in rules:                  # formatHosts, step by step (rules without a host count too)
        more = more or len(hosts) == 3
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    text = ",".join(hosts) or "*"
    if more and hosts:
        text += f" + {len(rules) - 3} more..."
    lb = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addresses = sorted({i.get("ip") or i.get("hostname") for i in lb if i.get("ip") or i.get("hostname")})
    return [o["metadata"].get("name"), spec.get("ingressClassName") or "<none>", text, ",".join(addresses),
            "80, 443" if spec.get("tls") else "80", _age(o, now)]


def _ingress_class_row(o: dict, now: datetime.datetime) -> list:
    spec = o.get("spec") or {}
    params = spec.get("parameters")
    shown = "<none>"
    if params:
        kind = params.get("kind", "") + (f".{params['apiGroup']}" if params.get("apiGroup") else "")
        shown = f"{kind}/{params.get('name', '')}"
    return [o["metadata"].get("name"), spec.get("controller", ""), shown, _age(o, now)]


def _event_row(o: dict, now: datetime.datetime) -> list:
    last = parse_time(o.get("lastTimestamp") or o.get("eventTime") or
                      o.get("metadata", {}).get("creationTimestamp"))
    inv = o.get("involvedObject") or {}
    return [human_duration((now - last).total_seconds()) if last else "<unknown>", o.get("type", ""),
            o.get("reason", ""), f"{(inv.get('kind') or '').lower()}/{inv.get('name', '')}",
            o.get("message", "")]


def format_endpoints(subsets: list[dict]) -> str:
    """printers' formatEndpoints: ready ip:port pairs, three at most, then "+ N more..."."""
    shown: list[str] = []
    count = 0
    for ss in subsets:
        addrs = [a.get("ip", "") for a in ss.get("addresses") or []]
        ports = ss.get("ports") or []
        targets = [list(addrs)] if not ports else [
            [f"[{ip}]:{p.get('port')}" if ":" in ip else f"{ip}:{p.get('port')}" for ip in addrs] for p in ports]
        for group in targets:
            count += len(group)
            shown.extend(group[:max(0, 3 - len(shown))])
    text = ",".join(shown)
    if count > len(shown):
        return f"{text} + {count - len(shown)} more..."
    return text or "<none>"


def _binding_row(o: dict, now: datetime.datetime) -> list:
    ref = o.get("roleRef") or {}
    subjects = o.get("subjects") or []

    def names(kind: str) -> str:
        return ", ".join(s.get("name", "") for s in subjects if s.get("kind") == kind)
    sas = ", ".join(f"{s.get('namespace', '')}/{s.get('name', '')}" for s in subjects
                    if s.get("kind") == "ServiceAccount")
    return [o["metadata"].get("name"), f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(o, now),
            names("User"), names("Group"), sas]


def _created_at(o: dict, now: datetime.datetime) -> list:
    return [o["metadata"].get("name"), o["metadata"].get("creationTimestamp", "")]


def _template_cells(o: dict) -> list[str]:
    """Containers, images and selector of a workload (the -o wide columns)."""
    spec = o.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    selector = format_selector(spec.get("selector"))
    return [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers),
            "" if selector == "<none>" else selector]


def _deployment_row(o: dict, now: datetime.datetime) -> list:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    return [o["metadata"].get("name"), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), _age(o, now),
            *_template_cells(o)]


def _replicaset_row(o: dict, now: datetime.datetime) -> list:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    return [o["metadata"].get("name"), spec.get("replicas", 1), status.get("replicas", 0),
            status.get("readyReplicas", 0), _age(o, now), *_template_cells(o)]


def _daemonset_row(o: dict, now: datetime.datetime) -> list:
    status = o.get("status") or {}
    node_selector = ((((o.get("spec") or {}).get("template") or {}).get("spec") or {})
                     .get("nodeSelector") or {})
    return [o["metadata"].get("name"), status.get("desiredNumberScheduled", 0),
            status.get("currentNumberScheduled", 0), status.get("numberReady", 0),
            status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0),
            ",".join(f"{k}={v}" for k, v in sorted(node_selector.items())) or "<none>", _age(o, now),
            *_template_cells(o)]


def _revision_row(o: dict, now: datetime.datetime) -> list:
    owner = next((r for r in o["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
    controller = "<none>"
    if owner is not None:
        group = owner.get("apiVersion", "").rpartition("/")[0]
        kind = f"{owner.get('kind', '')}.{group}" if group else owner.get("kind", "")
        controller = f"{kind.lower()}/{owner.get('name', '')}"
    return [o["metadata"].get("name"), controller, o.get("revision", 0), _age(o, now)]


_ROWS = {
    "Pod": _pod_row, "Service": _service_row, "Node": _node_row, "EndpointSlice": _slice_row,
    "NetworkPolicy": lambda o, now: [o["metadata"].get("name"),
                                     format_selector((o.get("spec") or {}).get("podSelector")),
                                     _age(o, now)],
    "Ingress": _ingress_row, "IngressClass": _ingress_class_row,
    "Namespace": lambda o, now: [o["metadata"].get("name"),
                                 (o.get("status") or {}).get("phase") or "Active", _age(o, now)],
    "Event": _event_row,
    "ConfigMap": lambda o, now: [o["metadata"].get("name"),
                                 len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o, now)],
    "Secret": lambda o, now: [o["metadata"].get("name"), o.get("type", ""), len(o.get("data") or {}),
                              _age(o, now)],
    "ServiceAccount": lambda o, now: [o["metadata"].get("name"), len(o.get("secrets") or []), _age(o, now)],
    "Endpoints": lambda o, now: [o["metadata"].get("name"), format_endpoints(o.get("subsets") or []),
                                 _age(o, now)],
    "Role": _created_at,
    "ClusterRole": _created_at,
    "CustomResourceDefinition": _created_at,
    "RoleBinding": _binding_row,
    "ClusterRoleBinding": _binding_row,
    "Lease": lambda o, now: [o["metadata"].get("name"), (o.get("spec") or {}).get("holderIdentity", "<unknown>"),
                             _age(o, now)],
    "Deployment": _deployment_row, "ReplicaSet": _replicaset_row, "DaemonSet": _daemonset_row,
    "ControllerRevision": _revision_row,
    "ClusterNetworkPolicy": lambda o, now: [o["metadata"].get("name"), str((o.get("spec") or {}).get("tier", "")),
                                            str((o.get("spec") or {}).get("priority", "")), _age(o, now)],
    "ServiceCIDR": lambda o, now: [o["metadata"].get("name"), ",".join((o.get("spec") or {}).get("cidrs") or []),
                                   _age(o, now)],
    "IPAddress": lambda o, now: [o["metadata"].get("name"), format_parent_ref((o.get("spec") or {}).get("parentRef"))],
}


def format_parent_ref(ref: dict | None) -> str:
    """kubectl's ParentRef column: resource[.group][/namespace]/name, lower case."""
    if not ref:
        return "<none>"
    out = (ref.get("resource", "") + (f".{ref['group']}" if ref.get("group") else "")).lower()
    if ref.get("namespace"):
        out += "/" + ref["namespace"]
    return out + "/" + ref.get("name", "")


def _row_object(o: dict, include: str) -> dict | None:
    if include == "None":
        return None
    if include == "Object":
        return o
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata", {})}


def render_table(kind: str, objs: list[dict], now: datetime.datetime, resource_version: str | None,
                 include_object: str = "Metadata", with_columns: bool = True) -> dict:
    """A meta.k8s.io/v1 Table of `objs` (all of one kind)."""
    cols = COLUMNS.get(kind, [_NAME, _AGE])
    row_of = _ROWS.get(kind, lambda o, n: [o["metadata"].get("name"), _age(o, n)])
    table: dict = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}}
    if resource_version is not None:
        table["metadata"]["resourceVersion"] = resource_version
    if with_columns:
        table["columnDefinitions"] = [
            {"name": name, "type": typ, "format": "name" if name == "Name" else "",
             "description": name, "priority": prio} for name, typ, prio in cols]
    else:
        table["columnDefinitions"] = None
    table["rows"] = [{"cells": row_of(o, now), "object": _row_object(o, include_object)} for o in objs]
    return table
