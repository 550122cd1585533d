"""ClusterIP and NodePort allocation, derived from the store.

Allocations are not bookkept separately: an `Allocations` index per store is built once by
scanning the Services in it and then kept in step by a store hook, so whatever is in the store is
allocated and a deleted Service frees its addresses and ports by being gone.

ClusterIPs come from the ServiceCIDR objects (networking.k8s.io/v1, KEP-1880): the default one,
`kubernetes` (the API server's --service-cluster-ip-range, made at start), first, then the others
by name; an address is valid in any of them of its family. A Service gets one address per
family of its spec.ipFamilies, in that order. Each allocated address has its IPAddress object
(named by the address, parentRef the Service), made and deleted with the Service's address as
the real API server's allocator does.
"""
from __future__ import annotations

import contextlib
import ipaddress
import weakref
from typing import Any

from .. import errors
from ..errors import Cause
from .fields import invalid, raise_if

# What a Service's type asks for (used by allocation and by the update rules in services.py).

def needs_cluster_ip(svc: dict) -> bool:
    return (svc.get("spec") or {}).get("type", "ClusterIP") != "ExternalName"


def needs_node_ports(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    t = spec.get("type", "ClusterIP")
    return t == "NodePort" or (t == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True))


def needs_health_check_port(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


DEFAULT_SERVICE_CIDR = "kubernetes"
LABEL_IP_FAMILY = "ipaddress.kubernetes.io/ip-family"
LABEL_MANAGED_BY = "ipaddress.kubernetes.io/managed-by"
MANAGED_BY = "ipallocator.k8s.io"


def plan_service_cidrs(objs: list[dict], fallback: tuple[str, ...]
                       ) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks ClusterIPs come from: every ServiceCIDR's cidrs, `kubernetes` first, then by
    name; the fallback (the configured ranges, one per family) when there is none. A ServiceCIDR
    being deleted gives no new addresses."""
    live = [o for o in objs if not o["metadata"].get("deletionTimestamp")]
    live.sort(key=lambda o: (o["metadata"]["name"] != DEFAULT_SERVICE_CIDR, o["metadata"]["name"]))
    nets = []
    for o in live:
        for cidr in (o.get("spec") or {}).get("cidrs") or []:
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(cidr))
    return nets or [ipaddress.ip_network(c) for c in fallback]


def render_ip_address(ip: str, owner: tuple[str, str]) -> dict:
    """The IPAddress object of a Service's ClusterIP."""
    family = "IPv6" if ":" in ip else "IPv4"
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
            "metadata": {"name": ip, "labels": {LABEL_IP_FAMILY: family, LABEL_MANAGED_BY: MANAGED_BY}},
            "spec": {"parentRef": {"group": "", "resource": "services", "namespace": owner[0], "name": owner[1]}}}


def _cluster_ips(svc: dict | None) -> set[str]:
    return {ip for ip in ((svc or {}).get("spec") or {}).get("clusterIPs") or [] if ip and ip != "None"}


class Allocations:
    """ClusterIPs and nodePorts in use, derived from the store's Services and kept in step with it
    by a store hook: what the store holds is allocated, nothing else."""

    def __init__(self, store, cfg, services):
        from ..resources import IP_ADDRESSES, SERVICE_CIDRS

        self.store, self.fallback = store, cfg.service_cidrs
        self.cidr_kind, self.address_kind = SERVICE_CIDRS, IP_ADDRESSES
        self.nets = plan_service_cidrs(store.list(SERVICE_CIDRS)[0], cfg.service_cidrs)
        self.ports_lo, self.ports_hi = cfg.nodeport_range
        self.ips: dict[int, tuple[str, str]] = {}        # address as int -> owning service key
        self.ports: dict[int, tuple[str, str]] = {}      # nodePort (and health-check port) -> owner
        self._ip_cursor: dict[str, int] = {}            # network -> last offset handed out
        self._port_cursor = 0
        self.services = services
        for svc in store.list(services)[0]:
            self._add(svc)
            self._sync_addresses(None, svc)
        store.add_hook(self._on_event)

    @property
    def net(self):
        """The first (default) service network."""
        return self.nets[0]

    def _on_event(self, ev) -> None:
        if ev.resource is self.cidr_kind:
            self.nets = plan_service_cidrs(self.store.list(self.cidr_kind)[0], self.fallback)
            return
        if ev.resource is not self.services:
            return
        if ev.old is not None:
            self._remove(ev.old)
        if ev.type != "DELETED":
            self._add(ev.obj)
        self._sync_addresses(ev.old, None if ev.type == "DELETED" else ev.obj)

    def _sync_addresses(self, old: dict | None, new: dict | None) -> None:
        """IPAddress objects for the ClusterIPs a write added, none for those it dropped."""
        before, after = _cluster_ips(old), _cluster_ips(new)
        for ip in sorted(before - after):
            found = self.store.try_get(self.address_kind, "", ip)
            ref = ((found or {}).get("spec") or {}).get("parentRef") or {}
            if found is not None and (ref.get("namespace"), ref.get("name")) == self.key(old):
                self.store.delete(self.address_kind, "", ip)
        for ip in sorted(after):
            if self.store.try_get(self.address_kind, "", ip) is None:
                self.store.create(self.address_kind, render_ip_address(ip, self.key(new)))

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
        """None when `ip` can be used by `owner`, else why not (the ranges named are those of
        the address's family: each family has its own allocator)."""
        addr = ipaddress.ip_address(ip)
        nets = [net for net in self.nets if net.version == addr.version]
        if not any(int(net.network_address) < int(addr) < int(net.broadcast_address) for net in nets):
            return (f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is "
                    f"{','.join(map(str, nets))}")
        if self.ips.get(int(addr), owner) != owner:
            return "provided IP is already allocated"
        return None

    def next_ip(self, version: int = 4) -> str | None:
        """A free address of this IP version from the first ServiceCIDR that has one (round the
        network from where the last one was handed out)."""
        for net in self.nets:
            if net.version != version:
                continue
            base, size = int(net.network_address), net.num_addresses - 2
            cursor = self._ip_cursor.get(str(net), 0)
            for step in range(size):
                offset = (cursor + step) % size + 1     # skips the network address
                if base + offset not in self.ips:
                    self._ip_cursor[str(net)] = offset
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


ALLOCATIONS: weakref.WeakKeyDictionary[Any, Allocations] = weakref.WeakKeyDictionary()


def allocations(store, cfg, services) -> Allocations:
    a = ALLOCATIONS.get(store)
    if a is None:
        a = ALLOCATIONS[store] = Allocations(store, cfg, services)
    return a


def internal(message: str) -> errors.APIError:
    return errors.APIError(500, "InternalError", f"Internal error occurred: {message}",
                           {"causes": [{"message": message}]})


def allocate(alloc: Allocations, svc: dict) -> None:
    """Fill in clusterIP(s), nodePorts and healthCheckNodePort (in place), or raise 422/500."""
    spec = svc["spec"]
    owner = alloc.key(svc)
    causes: list[Cause] = []
    if needs_cluster_ip(svc) and (spec.get("clusterIPs") or [""])[0] != "None":
        # one address per family of spec.ipFamilies (set by admission), in that order
        ips = list(spec.get("clusterIPs") or [])
        for i, family in enumerate(spec.get("ipFamilies") or []):
            if i < len(ips) and ips[i]:
                why = alloc.claim_ip(ips[i], owner)
                if why:
                    causes.append(invalid("spec.clusterIPs", ips, f"failed to allocate IP {ips[i]}: {why}"))
                    break
                continue
            ip = alloc.next_ip(6 if family == "IPv6" else 4)
            if ip is None:
                raise internal("failed to allocate a serviceIP: range is full")
            ips[i:i + 1] = [ip]
        if not causes and ips:
            spec["clusterIP"], spec["clusterIPs"] = ips[0], ips
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
                        causes.append(invalid(f"spec.ports[{i}].nodePort", want, why))
                        continue
                p["nodePort"] = want
            else:
                got = alloc.next_port(taken)
                if got is None:
                    raise internal("failed to allocate a nodePort: range is full")
                p["nodePort"] = got
            taken.add(p["nodePort"])
            by_port[p.get("port")] = p["nodePort"]
        if needs_health_check_port(svc):
            hc = spec.get("healthCheckNodePort")
            if hc:
                why = alloc.claim_port(hc, owner) if hc not in taken else "provided port is already allocated"
                if why:
                    causes.append(invalid("spec.healthCheckNodePort", hc,
                                           f"failed to allocate requested HealthCheck NodePort {hc}: {why}"))
            else:
                got = alloc.next_port(taken)
                if got is None:
                    raise internal("failed to allocate a nodePort: range is full")
                spec["healthCheckNodePort"] = got
    elif needs_health_check_port(svc) and not spec.get("healthCheckNodePort"):
        got = alloc.next_port(set())
        if got is None:
            raise internal("failed to allocate a nodePort: range is full")
        spec["healthCheckNodePort"] = got
    raise_if(causes, "", "Service", svc)
