"""The agent's overlay loop: set up this node's end, publish it on the Node, watch every Node,
keep the kernel's routes, neighbours and FDB entries equal to the plan.

One backend runs per IP family of the node's podCIDRs (spec.podCIDRs), each over the underlay
address of its own family; the plan is the union of theirs. The pod MTU is the smallest of the
families' (VXLAN over IPv6 costs 20 bytes more than over IPv4): a pod has one interface for both
families, and a per-route MTU inside the pod would leave that interface's MTU, which the kernel
uses for every packet it receives, at the larger one.

At start the controller reads what the kernel already holds (routes carry kubeweft's protocol
number), so a restarted agent diffs against reality and changes nothing that is right: no
flap, no lost packet. After that it diffs against what it last applied (never re-reads).
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from pyroute2 import IPRoute

from ..informer import Informer
from . import kernel
from .backend import Backend
from .hostgw import HostGwBackend
from .plan import (
    ANNOTATION_BACKEND,
    FAMILIES,
    Op,
    OverlayConfigError,
    OverlayState,
    diff_overlay,
    family_of,
    internal_ip,
    node_info_from_object,
    plan_overlay,
    public_ip_annotation,
    remote_nodes,
    vtep_mac_annotation,
)
from .underlay import UnderlaySelector
from .vxlan import DEVICES, VxlanBackend, remove_vxlan_device

if TYPE_CHECKING:       # the kubernetes package imports PyYAML and more: only where it is called
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (VxlanBackend, HostGwBackend)}


class OverlayController:
    def __init__(self, api: ApiClient, node_name: str, mode: str = "vxlan"):
        if mode not in BACKENDS:
            raise OverlayConfigError(f"unknown backend {mode!r}: expected {' or '.join(BACKENDS)}")
        from kubernetes.client import CoreV1Api

        self.api = api
        self.core = CoreV1Api(api)
        self.node_name = node_name
        self.mode = mode
        self.ipr = IPRoute()
        self.lock = threading.Lock()
        self.backends: list[Backend] = []     # one per IP family, the primary first
        self.applied = OverlayState()
        self.informer: Informer | None = None
        self.unreachable: set[tuple[str, str]] = set()   # nodes the backends skip (logged once)
        self.applies = 0

    @property
    def pod_mtu(self) -> int:
        return min(b.pod_mtu for b in self.backends)

    def start(self, pod_cidrs: list[str] | tuple[str, ...], selector: UnderlaySelector | None = None) -> None:
        """Set up this node's end for each of its podCIDRs (one per IP family) and start
        following the Node objects. Raises OverlayConfigError at once for a cluster the backend
        cannot carry (host-gw across an L3 hop), an underlay selector that matches nothing, or a
        family the node has no underlay address of."""
        selector = selector or UnderlaySelector()
        own = json.loads(self.core.read_node(self.node_name, _preload_content=False).data)
        annotations: dict[str, str | None] = {ANNOTATION_BACKEND: self.mode}
        for pod_cidr in pod_cidrs:
            family = family_of(pod_cidr)
            node_ip = selector.node_ip if selector.node_ip and family_of(selector.node_ip) == family \
                else internal_ip(own, family)
            choice = kernel.discover_underlay(self.ipr, replace(selector, node_ip=node_ip), family)
            underlay = choice.underlay
            log.info("overlay: underlay %s %s (mtu %d), chosen by %s", underlay.dev, underlay.address,
                     underlay.mtu, choice.why)
            backend = BACKENDS[self.mode](underlay)
            for other in BACKENDS.values():        # what a run with another backend left behind
                if other is not type(backend):
                    other(underlay).cleanup(self.ipr)
            annotations |= {public_ip_annotation(family): underlay.address, **backend.setup(self.ipr, pod_cidr)}
            self.backends.append(backend)
        for family in set(FAMILIES) - {b.family for b in self.backends}:   # a family the cluster dropped
            annotations |= {public_ip_annotation(family): None, vtep_mac_annotation(family): None}
            remove_vxlan_device(self.ipr, DEVICES[family])
        # through the status subresource, as flannel does: the agent's ServiceAccount may patch
        # nodes/status, which carries metadata but never the spec (deploy/base/rbac.yaml)
        self.core.patch_node_status(self.node_name, {"metadata": {"annotations": annotations}})
        for backend in self.backends:
            self.applied |= backend.read_state(self.ipr)
        # First plan synchronously, so a misconfigured host-gw cluster fails at start.
        nodes = self.core.list_node(_preload_content=False)
        self.reconcile(json.loads(nodes.data)["items"], strict=True)
        self.informer = Informer(self.api, "/api/v1/nodes", on_event=lambda *_: self._on_change(),
                                 on_sync=lambda _: self._on_change(), name="nodes").start()

    def _on_change(self) -> None:
        if self.informer is None:
            return
        try:
            self.reconcile(list(self.informer.objects.values()))
        except Exception:                      # keep following; the next event retries
            log.exception("overlay: reconcile failed")

    def reconcile(self, nodes: list[dict], strict: bool = False) -> list[Op]:
        """Bring the kernel to the plan for the Node objects `nodes` (JSON form), in every
        family. strict (the start): a node a backend cannot reach raises OverlayConfigError;
        later such a node is logged and skipped."""
        with self.lock:
            want, bad = OverlayState(), set()
            for backend in self.backends:
                infos = [node_info_from_object(o, backend.family) for o in nodes]
                bad |= {(n.name, n.address) for n in backend.unreachable(remote_nodes(self.node_name, infos))}
                want |= plan_overlay(backend, self.node_name, infos, strict=strict)
            if bad and not strict and bad != self.unreachable:
                underlays = {b.underlay for b in self.backends}
                log.error("overlay: %s cannot reach %s directly on %s (local subnets %s): "
                          "skipped; pods there are unreachable from this node", self.mode,
                          ", ".join(f"{n} ({a})" for n, a in sorted(bad)),
                          ", ".join(sorted({u.dev for u in underlays})),
                          ", ".join(s for u in underlays for s in u.subnets))
            self.unreachable = bad
            ops = diff_overlay(self.applied, want)
            if ops:
                kernel.apply_ops(self.ipr, ops)
                self.applies += 1
                log.info("overlay: %s", "; ".join(map(str, ops)))
            self.applied = want
            return ops

    def stop(self) -> None:
        if self.informer:
            self.informer.stop()
        self.ipr.close()
