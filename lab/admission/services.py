"""Services at admission: defaults, what an update keeps, validation (the real wording), and the
ClusterIP / NodePort allocation step."""
from __future__ import annotations

import ipaddress

from ..errors import Cause
from .allocations import allocate, allocations, needs_cluster_ip, needs_health_check_port, needs_node_ports
from .fields import (
    CIDR_MSG,
    DNS1123_LABEL,
    DNS1123_LABEL_MSG,
    PROTOCOLS,
    check_dns1035,
    check_port_name,
    check_port_number,
    duplicate,
    fmt_value,
    forbidden,
    invalid,
    raise_if,
    required,
    unsupported,
)
from .ipfamilies import configured_families, plan_ip_families, validate_family_update

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")


# --- Service: defaults ----------------------------------------------------------------------

def default_service(svc: dict) -> dict:
    """SetDefaults_Service plus what the registry fills in before allocation (in place)."""
    spec = svc.setdefault("spec", {})
    t = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        cfg = spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {})
        cfg.setdefault("timeoutSeconds", 10800)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    if t in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if t == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if t != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        # clusterIP and clusterIPs mirror each other; whichever the user set wins
        if spec.get("clusterIP") and not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif spec.get("clusterIPs") and not spec.get("clusterIP"):
            spec["clusterIP"] = spec["clusterIPs"][0]
    return svc


def plan_service_update(svc: dict, old: dict) -> dict:
    """What the registry does to an update before validating it (in place): drop fields that the
    type no longer uses when the user left them as they were (dropTypeDependentFields), and fill in
    allocated values a client omitted (patchAllocatedValues), so `kubectl replace` of a manifest
    without clusterIP keeps the address."""
    spec, ospec = svc.setdefault("spec", {}), old.get("spec") or {}
    # NormalizeClusterIPs: a patch of clusterIP alone carries the old clusterIPs; make them follow
    if spec.get("clusterIP") != ospec.get("clusterIP") and spec.get("clusterIPs") == ospec.get("clusterIPs"):
        if spec.get("clusterIP"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        else:
            spec.pop("clusterIPs", None)
    if not needs_cluster_ip(svc) and needs_cluster_ip(old) \
            and spec.get("clusterIP") in (None, "", ospec.get("clusterIP")):
        for f in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"):
            spec.pop(f, None)
    if not needs_node_ports(svc) and needs_node_ports(old):
        old_np = {p.get("nodePort") for p in ospec.get("ports") or []}
        for p in spec.get("ports") or []:
            if p.get("nodePort") in old_np:
                p.pop("nodePort", None)
    if not needs_health_check_port(svc) and spec.get("healthCheckNodePort") == ospec.get("healthCheckNodePort"):
        spec.pop("healthCheckNodePort", None)
    if spec.get("type") not in ("NodePort", "LoadBalancer") and \
            spec.get("externalTrafficPolicy") == ospec.get("externalTrafficPolicy"):
        spec.pop("externalTrafficPolicy", None)
    if needs_cluster_ip(svc) and needs_cluster_ip(old) and not spec.get("clusterIP") \
            and not spec.get("clusterIPs"):
        for f in ("clusterIP", "clusterIPs"):
            if f in ospec:
                spec[f] = ospec[f]
    if needs_node_ports(svc) and needs_node_ports(old):
        used = ({p.get("nodePort") for p in ospec.get("ports") or []}
                & {p.get("nodePort") for p in spec.get("ports") or []})
        by_name = {p.get("name", ""): p.get("nodePort") for p in ospec.get("ports") or []}
        for p in spec.get("ports") or []:
            if not p.get("nodePort"):
                was = by_name.get(p.get("name", ""))
                if was and was not in used:
                    p["nodePort"] = was
    if needs_health_check_port(svc) and needs_health_check_port(old) and not spec.get("healthCheckNodePort") \
            and ospec.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = ospec["healthCheckNodePort"]
    return svc


# --- Service: validation --------------------------------------------------------------------

def _go_service_port(port: int, protocol: str) -> str:
    # field.Duplicate(core.ServicePort{Protocol, Port}) prints the Go struct with %#v
    return (f'core.ServicePort{{Name:"", Protocol:"{protocol}", AppProtocol:(*string)(nil), Port:{port}, '
            f'TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:""}}, NodePort:0}}')

def validate_service(svc: dict) -> list[Cause]:
    """ValidateService, the parts users hit, in the real server's order and wording."""
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    out = check_dns1035("metadata.name", meta.get("name", ""))
    t = spec.get("type", "ClusterIP")
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and not headless and t != "ExternalName":
        out.append(required("spec.ports"))
    if t not in SERVICE_TYPES:
        out.append(unsupported("spec.type", t, SERVICE_TYPES))
    if t == "ExternalName" and not spec.get("externalName"):
        out.append(required("spec.externalName"))
    names: set[str] = set()
    for i, p in enumerate(ports):
        path = f"spec.ports[{i}]"
        name = p.get("name", "")
        if len(ports) > 1 and not name:
            out.append(required(f"{path}.name"))
        elif name:
            if not DNS1123_LABEL.match(name) or len(name) > 63:
                out.append(invalid(f"{path}.name", name, DNS1123_LABEL_MSG))
            elif name in names:
                out.append(duplicate(f"{path}.name", fmt_value(name)))
            names.add(name)
        out += check_port_number(f"{path}.port", p.get("port"))
        if p.get("protocol") not in PROTOCOLS:
            out.append(unsupported(f"{path}.protocol", p.get("protocol"), PROTOCOLS))
        tp = p.get("targetPort")
        if isinstance(tp, str):
            out += check_port_name(f"{path}.targetPort", tp)
        else:
            out += check_port_number(f"{path}.targetPort", tp)
        if p.get("nodePort") and t == "ClusterIP":
            out.append(forbidden(f"{path}.nodePort", "may not be used when `type` is 'ClusterIP'"))
    if spec.get("sessionAffinity") not in AFFINITIES:
        out.append(unsupported("spec.sessionAffinity", spec.get("sessionAffinity"), AFFINITIES))
    elif spec.get("sessionAffinity") == "ClientIP":
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
        if not isinstance(timeout, int) or not 0 < timeout <= 86400:
            out.append(invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", timeout,
                                "must be greater than 0 and less than 86400"))
    elif spec.get("sessionAffinityConfig"):
        out.append(forbidden("spec.sessionAffinityConfig",
                              "must not be set when `sessionAffinity` is None"))
    if t == "ExternalName":
        for f in ("ipFamilies", "ipFamilyPolicy"):
            if spec.get(f):
                out.append(forbidden(f"spec.{f}", "may not be set for ExternalName services"))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            out.append(invalid(f"spec.externalIPs[{i}]", ip,
                                "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)"))
    ranges = spec.get("loadBalancerSourceRanges") or []
    if ranges:
        # the real validation's field path is capitalised, a historical accident it keeps
        if spec.get("type") != "LoadBalancer":
            out.append(forbidden("spec.LoadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'"))
        for i, cidr in enumerate(ranges):
            try:
                ipaddress.ip_network(str(cidr).strip(), strict=False)
                ok = isinstance(cidr, str) and "/" in cidr
            except ValueError:
                ok = False
            if not ok:
                out.append(invalid(f"spec.LoadBalancerSourceRanges[{i}]", cidr, CIDR_MSG))
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        key = (p.get("port"), p.get("protocol"))
        if key in seen:
            out.append(duplicate(f"spec.ports[{i}]", _go_service_port(*key)))
        seen.add(key)
    seen_np: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        if not p.get("nodePort"):
            continue
        key = (p["nodePort"], p.get("protocol"))
        if key in seen_np:
            out.append(duplicate(f"spec.ports[{i}].nodePort", fmt_value(p["nodePort"])))
        seen_np.add(key)
    etp = spec.get("externalTrafficPolicy")
    if etp:
        if t not in ("NodePort", "LoadBalancer"):
            out.append(invalid("spec.externalTrafficPolicy", etp,
                                "may only be set when `type` is 'NodePort' or 'LoadBalancer'"))
        elif etp not in TRAFFIC_POLICIES:
            out.append(unsupported("spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES))
    itp = spec.get("internalTrafficPolicy")
    if itp and itp not in TRAFFIC_POLICIES:
        out.append(unsupported("spec.internalTrafficPolicy", itp, TRAFFIC_POLICIES))
    hc = spec.get("healthCheckNodePort")
    if hc and not needs_health_check_port(svc):
        out.append(invalid("spec.healthCheckNodePort", hc,
                            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` "
                            "is 'Local'"))
    lb_ip = spec.get("loadBalancerIP")
    if lb_ip:
        try:
            ipaddress.ip_address(lb_ip)
        except ValueError:
            out.append(invalid("spec.loadBalancerIP", lb_ip, "must be a valid IP address"))
    return out


def validate_service_update(svc: dict, old: dict) -> list[Cause]:
    """The primary clusterIP and family cannot change unless the Service moves to or from
    ExternalName; the secondary ones come and go with the policy (ipfamilies.py)."""
    spec, ospec = svc.get("spec") or {}, old.get("spec") or {}
    if not (needs_cluster_ip(svc) and needs_cluster_ip(old)):
        return []
    out = []
    new_ip, old_ip = spec.get("clusterIP") or "", ospec.get("clusterIP") or ""
    if old_ip and new_ip != old_ip:
        out.append(invalid("spec.clusterIP", new_ip, "field is immutable"))
    return out + validate_family_update(svc, old)


def admit_service(store, cfg, services, operation: str, svc: dict, old: dict | None) -> dict:
    if operation == "UPDATE" and old is not None:
        plan_service_update(svc, old)
    default_service(svc)
    raise_if(plan_ip_families(svc, old, configured_families(cfg.families)), "", "Service", svc)
    causes = validate_service(svc)
    if operation == "UPDATE" and old is not None:
        causes += validate_service_update(svc, old)
    raise_if(causes, "", "Service", svc)
    allocate(allocations(store, cfg, services), svc)
    if operation == "CREATE":
        svc["status"] = {"loadBalancer": {}}    # status is the controllers' to write, not the user's
    return svc

