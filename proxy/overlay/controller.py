"""The agent's overlay loop: set up this node's end, publish it on the Node, watch every Node,
keep the kernel's routes, neighbours and FDB entries equal to the plan.

At start the controller reads what the kernel already holds (routes carry kubeweft's protocol
number), so a restarted agent diffs against reality and changes nothing that is right: no
flap, no lost packet. After that it diffs against what it last applied (never re-reads).
"""
from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING

from pyroute2 import IPRoute

from ..informer import Informer
from . import kernel
from .backend import Backend
from .hostgw import HostGwBackend
from .plan import (
    ANNOTATION_BACKEND,
    ANNOTATION_PUBLIC_IP,
    NodeInfo,
    Op,
    OverlayConfigError,
    OverlayState,
    diff_overlay,
    node_info_from_object,
    plan_overlay,
    remote_nodes,
)
from .underlay import UnderlaySelector
from .vxlan import VxlanBackend

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
        self.backend: Backend | None = None
        self.applied = OverlayState()
        self.informer: Informer | None = None
        self.unreachable: set[tuple[str, str]] = set()   # nodes the backend skips (logged once)
        self.applies = 0

    @property
    def pod_mtu(self) -> int:
        return self.backend.pod_mtu

    def start(self, pod_cidr: str, selector: UnderlaySelector | None = None) -> None:
        """Set up this node's end and start following the Node objects. Raises
        OverlayConfigError at once for a cluster the backend cannot carry (host-gw across an
        L3 hop) or an underlay selector that matches nothing."""
        choice = kernel.discover_underlay(self.ipr, selector or UnderlaySelector())
        underlay = choice.underlay
        log.info("overlay: underlay %s %s (mtu %d), chosen by %s", underlay.dev, underlay.address,
                 underlay.mtu, choice.why)
        self.backend = BACKENDS[self.mode](underlay)
        for other in BACKENDS.values():        # what a run with another backend left behind
            if other is not type(self.backend):
                other(underlay).cleanup(self.ipr)
        attrs = self.backend.setup(self.ipr, pod_cidr)
        # through the status subresource, as flannel does: the agent's ServiceAccount may patch
        # nodes/status, which carries metadata but never the spec (deploy/base/rbac.yaml)
        self.core.patch_node_status(self.node_name, {"metadata": {"annotations": {
            ANNOTATION_PUBLIC_IP: underlay.address, ANNOTATION_BACKEND: self.mode, **attrs}}})
        self.applied = self.backend.read_state(self.ipr)
        # First plan synchronously, so a misconfigured host-gw cluster fails at start.
        nodes = self.core.list_node(_preload_content=False)
        self.reconcile([node_info_from_object(o) for o in json.loads(nodes.data)["items"]], strict=True)
        self.informer = Informer(self.api, "/api/v1/nodes", on_event=lambda *_: self._on_change(),
                                 on_sync=lambda _: self._on_change(), name="nodes").start()

    def _on_change(self) -> None:
        if self.informer is None:
            return
        nodes = [node_info_from_object(o) for o in list(self.informer.objects.values())]
        try:
            self.reconcile(nodes)
        except Exception:                      # keep following; the next event retries
            log.exception("overlay: reconcile failed")

    def reconcile(self, nodes: list[NodeInfo], strict: bool = False) -> list[Op]:
        """Bring the kernel to the plan for `nodes`. strict (the start): a node the backend
        cannot reach raises OverlayConfigError; later such a node is logged and skipped."""
        with self.lock:
            bad = {(n.name, n.address) for n in self.backend.unreachable(remote_nodes(self.node_name, nodes))}
            if bad and not strict and bad != self.unreachable:
                log.error("overlay: %s cannot reach %s directly on %s (local subnets %s): "
                          "skipped; pods there are unreachable from this node", self.mode,
                          ", ".join(f"{n} ({a})" for n, a in sorted(bad)), self.backend.underlay.dev,
                          ", ".join(self.backend.underlay.subnets))
            self.unreachable = bad
            want = plan_overlay(self.backend, self.node_name, nodes, strict=strict)
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
