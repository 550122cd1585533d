"""Announces LoadBalancer ingress addresses to the lab's router, as a BGP speaker (MetalLB's BGP
mode, Calico's service advertisement) does to a real one.

Every Service of type LoadBalancer with no loadBalancerClass (a Service with one belongs to
whoever owns that class) and an ingress IP is announced from the nodes that can serve it:
every Ready node for externalTrafficPolicy Cluster, and only the Ready nodes with a ready local
endpoint for Local (as MetalLB and kube-proxy's health check node port arrange it). The router,
the underlay namespace that is the external host's gateway, then holds one route per address:
`IP/32 proto bgp metric 100` (`IP/128` for IPv6) with a next hop per announcing node (ECMP), each
next hop the node's InternalIP of the address's family (a node without one does not announce it). The external host
reaches the address with no route of its own; when the Service, its address or its last
eligible node goes, so does the route.

The plan (`plan_announcements`) is pure; `RouteTable` writes it with `ip route` in the
underlay namespace on a thread of its own, so the API server's loop never waits on a command.
A route that someone else added for the same address with a lower metric (a test pinning an
address to one node) wins in the kernel and is never touched here.
"""
from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..resources import BY_PLURAL
from .loadbalancer import ingress_ips, is_ours
from .loop import Reconciler

log = logging.getLogger(__name__)

SERVICES = BY_PLURAL[("", "services")]
SLICES = BY_PLURAL[("discovery.k8s.io", "endpointslices")]
NODES = BY_PLURAL[("", "nodes")]

ROUTE_PROTOCOL = "bgp"      # rtnetlink's RTPROT_BGP (186): marks the routes this controller owns
ROUTE_METRIC = 100          # above a hand-made route's 0, so such a route wins and is left alone
ALL = "all"                 # the single key this controller reconciles: the whole table at once

Announcements = dict[str, tuple[str, ...]]      # ingress IP -> next-hop node addresses, sorted


@dataclass(frozen=True)
class NodeView:
    name: str
    addresses: tuple[str, ...]     # InternalIPs, primary family first
    ready: bool

    def address(self, version: int) -> str | None:
        """The InternalIP of this IP version, or None."""
        return next((a for a in self.addresses if ipaddress.ip_address(a).version == version), None)


@dataclass(frozen=True)
class ServiceView:
    key: tuple[str, str]
    ips: tuple[str, ...]
    local: bool                 # externalTrafficPolicy Local


def node_view(node: Mapping) -> NodeView:
    status = node.get("status") or {}
    addresses = []
    for a in status.get("addresses") or []:
        if a.get("type") == "InternalIP" and a.get("address"):
            try:
                ipaddress.ip_address(a["address"])
            except ValueError:
                continue
            addresses.append(a["address"])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return NodeView(node["metadata"]["name"], tuple(addresses), ready)


def service_view(svc: Mapping) -> ServiceView | None:
    """The Service as this controller sees it, or None when there is nothing to announce."""
    if not is_ours(svc):
        return None
    ips = tuple(ingress_ips(svc))
    if not ips:
        return None
    meta = svc["metadata"]
    local = (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local"
    return ServiceView((meta.get("namespace", ""), meta["name"]), ips, local)


def ready_endpoint_nodes(slices: Iterable[Mapping]) -> set[str]:
    """Nodes holding a ready endpoint in these EndpointSlices."""
    return {ep["nodeName"] for s in slices for ep in s.get("endpoints") or []
            if ep.get("nodeName") and (ep.get("conditions") or {}).get("ready") is not False}


def plan_announcements(services: Iterable[ServiceView], nodes: Iterable[NodeView],
                       local_nodes: Mapping[tuple[str, str], set[str]]) -> Announcements:
    """Which node addresses announce each ingress IP. An IP with no eligible node is absent."""
    ready = {n.name: n for n in nodes if n.ready}
    out: Announcements = {}
    for svc in services:
        names = ready.keys() & local_nodes.get(svc.key, set()) if svc.local else ready.keys()
        for ip in svc.ips:
            try:
                version = ipaddress.ip_address(ip).version
            except ValueError:
                continue
            hops = {hop for hop in (ready[n].address(version) for n in names) if hop}
            if hops:
                out[ip] = tuple(sorted(set(out.get(ip, ())) | hops))
    return out


def _host_route(ip: str) -> str:
    return f"{ip}/{128 if ':' in ip else 32}"


def plan_route_commands(netns: str, want: Announcements, have: Announcements) -> list[list[str]]:
    """`ip` commands that turn the routes in `have` into those in `want`."""
    cmds = []
    for ip in sorted(have.keys() - want.keys()):
        cmds.append(["ip", "-n", netns, "route", "del", _host_route(ip), "proto", ROUTE_PROTOCOL,
                     "metric", str(ROUTE_METRIC)])
    for ip, hops in sorted(want.items()):
        if have.get(ip) != hops:
            nexthops = [w for hop in hops for w in ("nexthop", "via", hop)]
            cmds.append(["ip", "-n", netns, "route", "replace", _host_route(ip), "proto", ROUTE_PROTOCOL,
                         "metric", str(ROUTE_METRIC), *nexthops])
    return cmds


class RouteTable:
    """The router's announced routes, written by one worker thread in the order planned."""

    def __init__(self, netns: str):
        self.netns = netns
        self.applied: Announcements = {}
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="announcer")

    def present(self) -> bool:
        return os.path.exists(f"/run/netns/{self.netns}")

    def sync(self, want: Announcements) -> concurrent.futures.Future | None:
        if want == self.applied:
            return None
        cmds = plan_route_commands(self.netns, want, self.applied)
        self.applied = dict(want)
        return self._worker.submit(self._run, cmds)

    def _run(self, cmds: list[list[str]]) -> None:
        for cmd in cmds:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            if proc.returncode != 0 and not (cmd[4] == "del" and "No such process" in proc.stderr):
                log.warning("%s: %s", " ".join(cmd), proc.stderr.strip())


class LoadBalancerAnnouncer(Reconciler):
    """Keeps caches of the LoadBalancer Services, the Nodes and the nodes with ready endpoints
    per Service (all updated from store events, so a pass never lists 30k Services) and
    re-plans the whole (small) route table when one of them changes."""
    name = "loadbalancer-announcer"

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        self.routes = RouteTable(cfg.underlay_netns)
        self.services: dict[tuple[str, str], ServiceView] = {}
        self.nodes: dict[str, NodeView] = {}
        self.slice_nodes: dict[tuple[str, str], tuple[tuple[str, str], frozenset[str]]] = {}
        self._absent_logged = False

    def prime(self) -> None:
        for resource in (SERVICES, NODES, SLICES):
            for obj in self.store.list(resource)[0]:
                self._cache(resource, obj, deleted=False)
        self.mark(ALL)

    def _cache(self, resource, obj: Mapping, deleted: bool) -> bool:
        """Update the cache from one object; True when the plan may change."""
        meta = obj["metadata"]
        if resource is NODES:
            if deleted:
                self.nodes.pop(meta["name"], None)
            else:
                self.nodes[meta["name"]] = node_view(obj)
            return True
        key = (meta.get("namespace", ""), meta["name"])
        if resource is SERVICES:
            view = None if deleted else service_view(obj)
            before = self.services.pop(key, None)
            if view is not None:
                self.services[key] = view
            return view != before
        owner = (key[0], ((meta.get("labels") or {}).get("kubernetes.io/service-name") or ""))
        before = self.slice_nodes.pop(key, None)
        if not deleted:
            self.slice_nodes[key] = (owner, frozenset(ready_endpoint_nodes([obj])))
        return owner in self.services and before != self.slice_nodes.get(key)

    def on_event(self, ev) -> None:
        if ev.resource in (SERVICES, SLICES, NODES) and self._cache(ev.resource, ev.obj, ev.type == "DELETED"):
            self.mark(ALL)

    def local_nodes(self) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {}
        for owner, nodes in self.slice_nodes.values():
            if owner in self.services and self.services[owner].local:
                out.setdefault(owner, set()).update(nodes)
        return out

    def sync(self, key) -> None:
        want = plan_announcements(self.services.values(), self.nodes.values(), self.local_nodes())
        if not self.routes.present():           # an API server without a lab around it (tests)
            if not self._absent_logged:
                log.info("no router namespace %s: LoadBalancer addresses are not announced",
                         self.routes.netns)
                self._absent_logged = True
            return
        self.routes.sync(want)
