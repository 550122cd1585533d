"""The Endpoints controller: a v1 Endpoints per Service with a selector, in step with the
Service's EndpointSlices (the same addresses and ports), as kube-controller-manager's endpoints
controller keeps them.

A ready endpoint is an address, one neither ready nor terminating a notReadyAddress, a terminating
one is left out (a Service with publishNotReadyAddresses has every endpoint ready). Endpoints of
the same ports share a subset, addresses sorted by IP, each the pod's address in the Service's
primary family. The Endpoints carries the Service's labels,
service.kubernetes.io/headless for a headless Service, and endpointslice.kubernetes.io/skip-mirror
so that no slice is mirrored back from it. A Service's Endpoints goes when the Service goes; a
Service without a selector keeps whatever Endpoints its owner writes.
"""
from __future__ import annotations

from ..resources import ENDPOINTS, SERVICES, SLICES
from .endpointslices import (
    LABEL_HEADLESS,
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    MANAGED_BY,
    plan_address_types,
)
from .loop import Reconciler

LABEL_SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"


def _address(ep: dict, ip: str) -> dict:
    out: dict = {"ip": ip}
    if ep.get("hostname"):
        out["hostname"] = ep["hostname"]
    if ep.get("nodeName"):
        out["nodeName"] = ep["nodeName"]
    ref = ep.get("targetRef")
    if ref:
        out["targetRef"] = {k: ref[k] for k in ("kind", "namespace", "name", "uid") if ref.get(k)}
    return out


def _port(p: dict) -> dict:
    out = {k: p[k] for k in ("name", "port", "protocol", "appProtocol") if p.get(k) not in (None, "")}
    out.setdefault("protocol", "TCP")
    return out


def plan_subsets(slices: list[dict], address_type: str = "IPv4") -> list[dict]:
    """EndpointSubsets from a Service's EndpointSlices of one address type (the Service's primary
    family: an Endpoints lists one address per pod), repacked by port set."""
    by_ports: dict[tuple, tuple[list[dict], list[dict], list[dict]]] = {}
    for s in slices:
        if s.get("addressType", "IPv4") != address_type:
            continue
        ports = sorted((_port(p) for p in s.get("ports") or []),
                       key=lambda p: (p.get("name", ""), p.get("port", 0), p["protocol"]))
        key = tuple(tuple(sorted(p.items())) for p in ports)
        _, ready, not_ready = by_ports.setdefault(key, (ports, [], []))
        for ep in s.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            for ip in ep.get("addresses") or []:
                if cond.get("ready", True):
                    ready.append(_address(ep, ip))
                elif not cond.get("terminating"):
                    not_ready.append(_address(ep, ip))
    subsets = []
    for ports, ready, not_ready in by_ports.values():
        if not ready and not not_ready:
            continue
        subset: dict = {}
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: (a["ip"], (a.get("targetRef") or {}).get("uid", "")))
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
        if ports:
            subset["ports"] = ports
        subsets.append(subset)
    return sorted(subsets, key=lambda s: [a["ip"] for a in s.get("addresses") or s.get("notReadyAddresses") or []])


def plan_endpoints(service: dict, slices: list[dict]) -> dict:
    meta, spec = service["metadata"], service.get("spec") or {}
    labels = dict(meta.get("labels") or {})
    labels[LABEL_SKIP_MIRROR] = "true"
    if spec.get("clusterIP") == "None":
        labels[LABEL_HEADLESS] = ""
    out: dict = {"apiVersion": "v1", "kind": "Endpoints",
                 "metadata": {"name": meta["name"], "namespace": meta.get("namespace", ""), "labels": labels}}
    subsets = plan_subsets(slices, plan_address_types(spec)[0])
    if subsets:
        out["subsets"] = subsets
    return out


def _slice_owner(obj: dict | None) -> tuple[str, str] | None:
    """(namespace, Service) of a slice the EndpointSlice controller manages, else None."""
    meta = (obj or {}).get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY or not labels.get(LABEL_SERVICE_NAME):
        return None
    return meta.get("namespace", ""), labels[LABEL_SERVICE_NAME]


class EndpointsController(Reconciler):
    name = "endpoints-controller"

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        # (namespace, Service) -> slice name -> slice: a sync reads only its Service's slices
        self.slices: dict[tuple[str, str], dict[str, dict]] = {}

    def prime(self) -> None:
        for s in self.store.list(SLICES)[0]:
            self._set_slice(s, present=True)
        for svc in self.store.list(SERVICES)[0]:
            self.mark((svc["metadata"].get("namespace", ""), svc["metadata"]["name"]))

    def _set_slice(self, obj: dict | None, present: bool) -> tuple[str, str] | None:
        key = _slice_owner(obj)
        if key is None or obj is None:
            return None
        if present:
            self.slices.setdefault(key, {})[obj["metadata"]["name"]] = obj
        else:
            self.slices.get(key, {}).pop(obj["metadata"]["name"], None)
            if not self.slices.get(key, True):
                del self.slices[key]
        return key

    def on_event(self, ev) -> None:
        meta = ev.obj["metadata"]
        ns = meta.get("namespace", "")
        if ev.resource is SERVICES:
            self.mark((ns, meta["name"]))
        elif ev.resource is SLICES:
            for key in {self._set_slice(ev.old, present=False),
                        self._set_slice(ev.obj, present=ev.type != "DELETED")} - {None}:
                self.mark(key)
        elif ev.resource is ENDPOINTS and ev.type == "DELETED" and not self.syncing:
            self.mark((ns, meta["name"]))

    def sync(self, key: tuple[str, str]) -> None:
        ns, name = key
        svc = self.store.try_get(SERVICES, ns, name)
        have = self.store.try_get(ENDPOINTS, ns, name)
        if svc is None:
            if have is not None:
                self.delete(ENDPOINTS, ns, name)
            return
        spec = svc.get("spec") or {}
        if not spec.get("selector") or spec.get("type") == "ExternalName":
            return
        slices = sorted(self.slices.get(key, {}).values(), key=lambda s: s["metadata"]["name"])
        want = plan_endpoints(svc, slices)
        if have is None:
            self.store.create(ENDPOINTS, want)
            self.writes += 1
        elif have.get("subsets") != want.get("subsets") or have["metadata"].get("labels") != want["metadata"]["labels"]:
            new = {k: v for k, v in have.items() if k != "subsets"}
            new["metadata"] = dict(have["metadata"], labels=want["metadata"]["labels"])
            if "subsets" in want:
                new["subsets"] = want["subsets"]
            self.store.update(ENDPOINTS, new)
            self.writes += 1
