"""Defaulting, validation and allocation on create and update: the API server's registry logic.

What a real kube-apiserver does between decoding a request and writing it to etcd, for the kinds
the lab serves: Service defaults, ClusterIP and NodePort allocation, validation with the real
server's wording; Pod defaults and the pod-update rule; Namespace phase.

Allocations are not bookkept separately: an `_Allocations` index per store is built once by
scanning the Services in it and then kept in step by a store hook, so whatever is in the store is
allocated and a deleted Service frees its addresses and ports by being gone. The pure parts
(`default_*`, `validate_*`, `plan_*`) take and return plain dicts and do no I/O.
"""
from __future__ import annotations

import difflib
import ipaddress
import json
import re
import weakref
from typing import Any

from . import errors
from .errors import Cause

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
PROTOCOLS = ("SCTP", "TCP", "UDP")
AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")

DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
               "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
               "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                     "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
                     "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                         "characters, '-' or '.', and must start and end with an alphanumeric character "
                         "(e.g. 'example.com', regex used for validation is "
                         "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"

# The pod-update rule, worded as kube-apiserver 1.3x prints it.
POD_UPDATABLE = ("`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                 "`spec.tolerations` (only additions to existing tolerations),"
                 "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
                 "negative)")


# --- entry points (called by the API server) -------------------------------------------------

def admit(store, cfg, resource, operation: str, obj: dict, old: dict | None,
          subresource: str | None = None) -> dict:
    """Return the object to store, or raise errors.APIError (422 Invalid and friends).
    operation is "CREATE" or "UPDATE"; `old` is the stored object on UPDATE; subresource is
    "status" for writes to .../status (their spec is ignored by the store, so not checked here)."""
    try:
        return _admit(store, cfg, resource, operation, obj, old, subresource)
    except (AttributeError, TypeError, KeyError, ValueError) as e:
        # a field of the wrong JSON type (ports: [80], selector: "x"): the real server fails to
        # decode it; say so with its 400 instead of crashing with a 500
        kind = resource.kind
        raise errors.bad_request(f'{kind} in version "{resource.version}" cannot be handled as a {kind}: '
                                 f"wrong type of field: {e}") from e


def _admit(store, cfg, resource, operation: str, obj: dict, old: dict | None,
           subresource: str | None) -> dict:
    kind = resource.kind
    if kind == "Service":
        if subresource == "status":
            return obj
        return _admit_service(store, cfg, resource, operation, obj, old)
    if kind == "Pod":
        if subresource == "status":
            return obj
        default_pod(obj)
        causes = validate_pod(obj)
        if operation == "UPDATE" and old is not None:
            causes += validate_pod_update(obj, old)
        else:
            obj["status"] = {"phase": "Pending", "qosClass": plan_qos_class(obj.get("spec") or {})}
        _raise_if(causes, "", "Pod", obj)
        return obj
    if kind == "Namespace":
        default_namespace(obj, operation == "CREATE")
        return obj
    if kind == "Node" and operation == "UPDATE" and old is not None and subresource != "status":
        _raise_if(validate_node_update(obj, old), "", "Node", obj)
    return obj


def release(store, cfg, resource, obj: dict) -> None:
    """Called after an object was deleted. Nothing to do: allocations follow the store (its hook
    sees the DELETED event), so a deleted Service's clusterIP and nodePorts are free already."""


def _raise_if(causes: list[Cause], group: str, kind: str, obj: dict) -> None:
    if causes:
        raise errors.invalid(group, kind, (obj.get("metadata") or {}).get("name", ""), causes)


def fmt_value(value: Any) -> str:
    """A bad value as the real server prints it: numbers bare, strings quoted, lists as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def _invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, "FieldValueInvalid", f"Invalid value: {fmt_value(value)}: {detail}")


def _required(path: str) -> Cause:
    return Cause(path, "FieldValueRequired", "Required value")


def _duplicate(path: str, shown: str) -> Cause:
    return Cause(path, "FieldValueDuplicate", f"Duplicate value: {shown}")


def _forbidden(path: str, detail: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"Forbidden: {detail}")


def _unsupported(path: str, value: Any, supported: tuple[str, ...]) -> Cause:
    shown = ", ".join(json.dumps(s) for s in supported)
    return Cause(path, "FieldValueNotSupported",
                 f"Unsupported value: {fmt_value(value)}: supported values: {shown}")


# --- Service: defaults ----------------------------------------------------------------------

def needs_cluster_ip(svc: dict) -> bool:
    return (svc.get("spec") or {}).get("type", "ClusterIP") != "ExternalName"


def needs_node_ports(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    t = spec.get("type", "ClusterIP")
    return t == "NodePort" or (t == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True))


def needs_health_check_port(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


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
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
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


def _validate_dns1035(path: str, name: str) -> list[Cause]:
    if not name:
        return []
    out = []
    if len(name) > 63:
        out.append(_invalid(path, name, "must be no more than 63 characters"))
    if not _DNS1035.match(name):
        out.append(_invalid(path, name, DNS1035_MSG))
    return out


def _validate_port_number(path: str, value: Any) -> list[Cause]:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        return [_invalid(path, value, PORT_RANGE_MSG)]
    return []


def _validate_port_name(path: str, name: str) -> list[Cause]:
    """A named targetPort or containerPort: IANA_SVC_NAME."""
    if len(name) > 15:
        return [_invalid(path, name, "must be no more than 15 characters")]
    if not _IANA_SVC_NAME.match(name):
        return [_invalid(path, name, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")]
    if "--" in name:
        return [_invalid(path, name, "must not contain consecutive hyphens")]
    if name.startswith("-") or name.endswith("-"):
        return [_invalid(path, name, "must not begin or end with a hyphen")]
    if not re.search("[a-z]", name):
        return [_invalid(path, name, "must contain at least one letter (a-z)")]
    return []


def validate_service(svc: dict) -> list[Cause]:
    """ValidateService, the parts users hit, in the real server's order and wording."""
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    out = _validate_dns1035("metadata.name", meta.get("name", ""))
    t = spec.get("type", "ClusterIP")
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and not headless and t != "ExternalName":
        out.append(_required("spec.ports"))
    if t not in SERVICE_TYPES:
        out.append(_unsupported("spec.type", t, SERVICE_TYPES))
    if t == "ExternalName" and not spec.get("externalName"):
        out.append(_required("spec.externalName"))
    names: set[str] = set()
    for i, p in enumerate(ports):
        path = f"spec.ports[{i}]"
        name = p.get("name", "")
        if len(ports) > 1 and not name:
            out.append(_required(f"{path}.name"))
        elif name:
            if not _DNS1123_LABEL.match(name) or len(name) > 63:
                out.append(_invalid(f"{path}.name", name, DNS1123_LABEL_MSG))
            elif name in names:
                out.append(_duplicate(f"{path}.name", fmt_value(name)))
            names.add(name)
        out += _validate_port_number(f"{path}.port", p.get("port"))
        if p.get("protocol") not in PROTOCOLS:
            out.append(_unsupported(f"{path}.protocol", p.get("protocol"), PROTOCOLS))
        tp = p.get("targetPort")
        if isinstance(tp, str):
            out += _validate_port_name(f"{path}.targetPort", tp)
        else:
            out += _validate_port_number(f"{path}.targetPort", tp)
        if p.get("nodePort") and t == "ClusterIP":
            out.append(_forbidden(f"{path}.nodePort", "may not be used when `type` is 'ClusterIP'"))
    if spec.get("sessionAffinity") not in AFFINITIES:
        out.append(_unsupported("spec.sessionAffinity", spec.get("sessionAffinity"), AFFINITIES))
    elif spec.get("sessionAffinity") == "ClientIP":
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
        if not isinstance(timeout, int) or not 0 < timeout <= 86400:
            out.append(_invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", timeout,
                                "must be greater than 0 and less than 86400"))
    elif spec.get("sessionAffinityConfig"):
        out.append(_forbidden("spec.sessionAffinityConfig",
                              "must not be set when `sessionAffinity` is None"))
    for i, fam in enumerate(spec.get("ipFamilies") or []):
        if fam != "IPv4":
            out.append(_invalid(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster"))
    if spec.get("ipFamilyPolicy") == "RequireDualStack":
        out.append(_invalid("spec.ipFamilyPolicy", "RequireDualStack",
                            "this cluster is not configured for dual-stack services"))
    elif spec.get("ipFamilyPolicy") not in (None, "SingleStack", "PreferDualStack"):
        out.append(_unsupported("spec.ipFamilyPolicy", spec["ipFamilyPolicy"],
                                ("PreferDualStack", "RequireDualStack", "SingleStack")))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            out.append(_invalid(f"spec.externalIPs[{i}]", ip,
                                "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)"))
    for i, ip in enumerate(spec.get("clusterIPs") or []):
        if ip == "None" and i == 0:
            continue
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            out.append(_invalid(f"spec.clusterIPs[{i}]", ip,
                                "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)"))
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        key = (p.get("port"), p.get("protocol"))
        if key in seen:
            out.append(_duplicate(f"spec.ports[{i}]", _go_service_port(*key)))
        seen.add(key)
    seen_np: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        if not p.get("nodePort"):
            continue
        key = (p["nodePort"], p.get("protocol"))
        if key in seen_np:
            out.append(_duplicate(f"spec.ports[{i}].nodePort", fmt_value(p["nodePort"])))
        seen_np.add(key)
    etp = spec.get("externalTrafficPolicy")
    if etp:
        if t not in ("NodePort", "LoadBalancer"):
            out.append(_invalid("spec.externalTrafficPolicy", etp,
                                "may only be set when `type` is 'NodePort' or 'LoadBalancer'"))
        elif etp not in TRAFFIC_POLICIES:
            out.append(_unsupported("spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES))
    itp = spec.get("internalTrafficPolicy")
    if itp and itp not in TRAFFIC_POLICIES:
        out.append(_unsupported("spec.internalTrafficPolicy", itp, TRAFFIC_POLICIES))
    hc = spec.get("healthCheckNodePort")
    if hc and not needs_health_check_port(svc):
        out.append(_invalid("spec.healthCheckNodePort", hc,
                            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` "
                            "is 'Local'"))
    lb_ip = spec.get("loadBalancerIP")
    if lb_ip:
        try:
            ipaddress.ip_address(lb_ip)
        except ValueError:
            out.append(_invalid("spec.loadBalancerIP", lb_ip, "must be a valid IP address"))
    return out


def validate_service_update(svc: dict, old: dict) -> list[Cause]:
    """The primary clusterIP cannot change unless the Service moves to or from ExternalName."""
    spec, ospec = svc.get("spec") or {}, old.get("spec") or {}
    if not (needs_cluster_ip(svc) and needs_cluster_ip(old)):
        return []
    new_ip, old_ip = spec.get("clusterIP") or "", ospec.get("clusterIP") or ""
    if old_ip and new_ip != old_ip:
        return [_invalid("spec.clusterIP", new_ip, "field is immutable"),
                _invalid("spec.clusterIPs[0]", spec.get("clusterIPs") or [], "may not change once set")]
    return []


# --- Service: allocation --------------------------------------------------------------------

class _Allocations:
    """ClusterIPs and nodePorts in use, derived from the store's Services and kept in step with it
    by a store hook: what the store holds is allocated, nothing else."""

    def __init__(self, store, cfg, services):
        self.net = ipaddress.ip_network(cfg.service_cidr)
        self.ports_lo, self.ports_hi = cfg.nodeport_range
        self.ips: dict[int, tuple[str, str]] = {}        # address as int -> owning service key
        self.ports: dict[int, tuple[str, str]] = {}      # nodePort (and health-check port) -> owner
        self._ip_cursor = 0
        self._port_cursor = 0
        self.services = services
        for svc in store.list(services)[0]:
            self._add(svc)
        store.add_hook(self._on_event)

    def _on_event(self, ev) -> None:
        if ev.resource is not self.services:
            return
        if ev.old is not None:
            self._remove(ev.old)
        if ev.type != "DELETED":
            self._add(ev.obj)

    @staticmethod
    def key(svc: dict) -> tuple[str, str]:
        m = svc.get("metadata") or {}
        return m.get("namespace", ""), m.get("name", "")

    def _add(self, svc: dict) -> None:
        k = self.key(svc)
        for ip in (svc.get("spec") or {}).get("clusterIPs") or []:
            if ip != "None":
                try:
                    self.ips[int(ipaddress.ip_address(ip))] = k
                except ValueError:
                    pass
        for port in plan_used_node_ports(svc):
            self.ports[port] = k

    def _remove(self, svc: dict) -> None:
        k = self.key(svc)
        for ip in (svc.get("spec") or {}).get("clusterIPs") or []:
            try:
                n = int(ipaddress.ip_address(ip))
            except ValueError:
                continue
            if self.ips.get(n) == k:
                del self.ips[n]
        for port in plan_used_node_ports(svc):
            if self.ports.get(port) == k:
                del self.ports[port]

    # --- cluster IPs ---
    def claim_ip(self, ip: str, owner: tuple[str, str]) -> str | None:
        """None when `ip` can be used by `owner`, else why not."""
        addr = ipaddress.ip_address(ip)
        first, last = int(self.net.network_address) + 1, int(self.net.broadcast_address) - 1
        if addr.version != self.net.version or not first <= int(addr) <= last:
            return (f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is "
                    f"{self.net}")
        if self.ips.get(int(addr), owner) != owner:
            return "provided IP is already allocated"
        return None

    def next_ip(self) -> str | None:
        base, size = int(self.net.network_address), self.net.num_addresses - 2
        for step in range(size):
            offset = (self._ip_cursor + step) % size + 1     # skips the network address
            if base + offset not in self.ips:
                self._ip_cursor = offset
                return str(ipaddress.ip_address(base + offset))
        return None

    # --- node ports ---
    def claim_port(self, port: int, owner: tuple[str, str]) -> str | None:
        if not self.ports_lo <= port <= self.ports_hi:
            return (f"provided port is not in the valid range. The range of valid ports is "
                    f"{self.ports_lo}-{self.ports_hi}")
        if self.ports.get(port, owner) != owner:
            return "provided port is already allocated"
        return None

    def next_port(self, taken: set[int]) -> int | None:
        size = self.ports_hi - self.ports_lo + 1
        for step in range(size):
            offset = (self._port_cursor + step) % size
            port = self.ports_lo + offset
            if port not in self.ports and port not in taken:
                self._port_cursor = offset + 1
                return port
        return None


def plan_used_node_ports(svc: dict) -> set[int]:
    spec = svc.get("spec") or {}
    used = {p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort")}
    if spec.get("healthCheckNodePort"):
        used.add(spec["healthCheckNodePort"])
    return used


_ALLOCATIONS: weakref.WeakKeyDictionary[Any, _Allocations] = weakref.WeakKeyDictionary()


def _allocations(store, cfg, services) -> _Allocations:
    a = _ALLOCATIONS.get(store)
    if a is None:
        a = _ALLOCATIONS[store] = _Allocations(store, cfg, services)
    return a


def _internal(message: str) -> errors.APIError:
    return errors.APIError(500, "InternalError", f"Internal error occurred: {message}",
                           {"causes": [{"message": message}]})


def _allocate(alloc: _Allocations, svc: dict) -> None:
    """Fill in clusterIP(s), nodePorts and healthCheckNodePort (in place), or raise 422/500."""
    spec = svc["spec"]
    owner = alloc.key(svc)
    causes: list[Cause] = []
    if needs_cluster_ip(svc):
        ips = spec.get("clusterIPs") or []
        if ips and ips[0] != "None":
            why = alloc.claim_ip(ips[0], owner)
            if why:
                causes.append(_invalid("spec.clusterIPs", ips, f"failed to allocate IP {ips[0]}: {why}"))
        elif not ips:
            ip = alloc.next_ip()
            if ip is None:
                raise _internal("failed to allocate a serviceIP: range is full")
            spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    if needs_node_ports(svc):
        by_port: dict[int, int] = {}      # service port -> its nodePort: TCP and UDP of one port share
        taken: set[int] = set()
        ports = spec.get("ports") or []
        for i, p in enumerate(ports):
            want = p.get("nodePort") or by_port.get(p.get("port"))
            if not want:
                want = next((q["nodePort"] for q in ports[i + 1:]
                             if q.get("port") == p.get("port") and q.get("nodePort")), 0)
            if want:
                if want not in taken:
                    why = alloc.claim_port(want, owner)
                    if why:
                        causes.append(_invalid(f"spec.ports[{i}].nodePort", want, why))
                        continue
                p["nodePort"] = want
            else:
                got = alloc.next_port(taken)
                if got is None:
                    raise _internal("failed to allocate a nodePort: range is full")
                p["nodePort"] = got
            taken.add(p["nodePort"])
            by_port[p.get("port")] = p["nodePort"]
        if needs_health_check_port(svc):
            hc = spec.get("healthCheckNodePort")
            if hc:
                why = alloc.claim_port(hc, owner) if hc not in taken else "provided port is already allocated"
                if why:
                    causes.append(_invalid("spec.healthCheckNodePort", hc,
                                           f"failed to allocate requested HealthCheck NodePort {hc}: {why}"))
            else:
                got = alloc.next_port(taken)
                if got is None:
                    raise _internal("failed to allocate a nodePort: range is full")
                spec["healthCheckNodePort"] = got
    elif needs_health_check_port(svc) and not spec.get("healthCheckNodePort"):
        got = alloc.next_port(set())
        if got is None:
            raise _internal("failed to allocate a nodePort: range is full")
        spec["healthCheckNodePort"] = got
    _raise_if(causes, "", "Service", svc)


def _admit_service(store, cfg, services, operation: str, svc: dict, old: dict | None) -> dict:
    if operation == "UPDATE" and old is not None:
        plan_service_update(svc, old)
    default_service(svc)
    causes = validate_service(svc)
    if operation == "UPDATE" and old is not None:
        causes += validate_service_update(svc, old)
    _raise_if(causes, "", "Service", svc)
    _allocate(_allocations(store, cfg, services), svc)
    if operation == "CREATE":
        svc["status"] = {"loadBalancer": {}}    # status is the controllers' to write, not the user's
    return svc


# --- Pod ------------------------------------------------------------------------------------

def default_pod(pod: dict) -> dict:
    """SetDefaults_Pod / PodSpec / Container, plus DefaultTolerationSeconds (in place)."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
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
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key and t.get("effect") in (None, "", "NoExecute") for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300})
    return pod


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
    if name and (len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name)):
        out.append(_invalid("metadata.name", name, DNS1123_SUBDOMAIN_MSG))
    containers = spec.get("containers") or []
    if not containers:
        out.append(_required("spec.containers"))
    names: set[str] = set()
    for i, c in enumerate(containers):
        path = f"spec.containers[{i}]"
        cname = c.get("name", "")
        if not cname:
            out.append(_required(f"{path}.name"))
        elif not _DNS1123_LABEL.match(cname):
            out.append(_invalid(f"{path}.name", cname, DNS1123_LABEL_MSG))
        elif cname in names:
            out.append(_duplicate(f"{path}.name", fmt_value(cname)))
        names.add(cname)
        if not c.get("image"):
            out.append(_required(f"{path}.image"))
        for j, p in enumerate(c.get("ports") or []):
            ppath = f"{path}.ports[{j}]"
            if p.get("name"):
                out += _validate_port_name(f"{ppath}.name", p["name"])
            out += _validate_port_number(f"{ppath}.containerPort", p.get("containerPort"))
            if p.get("hostPort"):
                out += _validate_port_number(f"{ppath}.hostPort", p["hostPort"])
            if p.get("protocol") not in PROTOCOLS:
                out.append(_unsupported(f"{ppath}.protocol", p.get("protocol"), PROTOCOLS))
    if spec.get("restartPolicy") not in ("Always", "OnFailure", "Never"):
        out.append(_unsupported("spec.restartPolicy", spec.get("restartPolicy"),
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
    return [_forbidden("spec", f"pod updates may not change fields other than {POD_UPDATABLE}\n{diff}")]


# --- Node -----------------------------------------------------------------------------------

def validate_node_update(node: dict, old: dict) -> list[Cause]:
    """A podCIDR, once assigned, stays (the kubelet and the IPAM controller rely on it)."""
    was = (old.get("spec") or {}).get("podCIDRs") or []
    if was and ((node.get("spec") or {}).get("podCIDRs") or []) != was:
        return [_forbidden("spec.podCIDRs", 'node updates may not change podCIDR except from "" to valid')]
    return []


# --- Namespace ------------------------------------------------------------------------------

def default_namespace(ns: dict, creating: bool) -> dict:
    meta = ns.setdefault("metadata", {})
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    if creating:
        ns["status"] = {"phase": "Active"}
    return ns
