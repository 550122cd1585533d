"""The agent's overlay loop: publish this node's VTEP, watch every Node, keep the kernel's
routes, neighbours and FDB entries equal to the plan.

At start the controller reads what the kernel already holds (routes carry kubeweft's protocol
number), so a restarted agent diffs against reality and changes nothing that is right: no
flap, no lost packet. After that it diffs against what it last applied (never re-reads).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading

from kubernetes.client import ApiClient, CoreV1Api
from kubeweft.cni import overlay as ov
from kubeweft.cni import overlay_apply as oa
from pyroute2 import IPRoute

from .informer import Informer

log = logging.getLogger(__name__)


def discover_underlay(ipr: IPRoute, node_ip: str | None = None) -> tuple[str, str, int, list[str]]:
    """(device, address, mtu, connected subnets) of the underlay: the device holding the node's
    address if known, else the device of the default route."""
    links = {link["index"]: link for link in ipr.get_links()}
    for a in ipr.get_addr(family=socket.AF_INET):
        addr = a.get_attr("IFA_ADDRESS")
        if node_ip and addr == node_ip:
            link = links[a["index"]]
            break
    else:
        defaults = ipr.get_default_routes(family=socket.AF_INET)
        if not defaults:
            raise RuntimeError("no underlay: no address matches the node and there is no default route")
        link = links[defaults[0].get_attr("RTA_OIF")]
        addr = next(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET, index=link["index"]))
    subnets = [str(ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}").network)
               for a in ipr.get_addr(family=socket.AF_INET, index=link["index"])]
    return link.get_attr("IFLA_IFNAME"), addr, link.get_attr("IFLA_MTU"), subnets


class OverlayController:
    def __init__(self, api: ApiClient, node_name: str, mode: ov.Mode = "vxlan"):
        if mode not in ("vxlan", "host-gw"):
            raise ov.OverlayConfigError(f"unknown backend {mode!r}: expected vxlan or host-gw")
        self.api = api
        self.core = CoreV1Api(api)
        self.node_name = node_name
        self.mode = mode
        self.ipr = IPRoute()
        self.lock = threading.Lock()
        self.applied = ov.OverlayState()
        self.informer: Informer | None = None
        self.unreachable: set[tuple[str, str]] = set()   # host-gw nodes skipped (logged once)
        self.underlay_dev = self.local_ip = ""
        self.underlay_mtu = 1500
        self.local_subnets: list[str] = []
        self.vtep_mac: str | None = None
        self.applies = 0

    @property
    def pod_mtu(self) -> int:
        return ov.pod_mtu(self.mode, self.underlay_mtu)

    def devices(self) -> list[str]:
        return [ov.VXLAN_DEVICE] if self.mode == "vxlan" else [self.underlay_dev]

    def start(self, pod_cidr: str, node_ip: str | None = None) -> None:
        """Set up this node's end and start following the Node objects. Raises
        OverlayConfigError at once for a host-gw cluster that is not one L2 segment."""
        self.underlay_dev, self.local_ip, self.underlay_mtu, self.local_subnets = \
            discover_underlay(self.ipr, node_ip)
        if self.mode == "vxlan":
            self.vtep_mac = oa.ensure_vxlan_device(self.ipr, self.local_ip, self.underlay_dev,
                                                   f"{ov.vtep_ip(pod_cidr)}/32", self.pod_mtu)
        else:
            oa.remove_vxlan_device(self.ipr)
        self.publish()
        self.applied = oa.read_state(self.ipr, self.devices())
        # First plan synchronously, so a misconfigured host-gw cluster fails at start.
        nodes = self.core.list_node(_preload_content=False)
        self.reconcile([ov.node_info_from_object(o) for o in json.loads(nodes.data)["items"]], strict=True)
        self.informer = Informer(self.api, "/api/v1/nodes", on_event=lambda *_: self._on_change(),
                                 on_sync=lambda _: self._on_change(), name="nodes").start()

    def publish(self) -> None:
        """Annotate our Node with the VTEP MAC, public IP and backend, as flannel does."""
        ann = {ov.ANNOTATION_PUBLIC_IP: self.local_ip, ov.ANNOTATION_BACKEND: self.mode,
               ov.ANNOTATION_VTEP_MAC: self.vtep_mac}
        self.core.patch_node(self.node_name, {"metadata": {"annotations": ann}})

    def _on_change(self) -> None:
        if self.informer is None:
            return
        nodes = [ov.node_info_from_object(o) for o in list(self.informer.objects.values())]
        try:
            self.reconcile(nodes)
        except Exception:                      # keep following; the next event retries
            log.exception("overlay: reconcile failed")

    def reconcile(self, nodes: list[ov.NodeInfo], strict: bool = False) -> list[ov.Op]:
        """Bring the kernel to the plan for `nodes`. strict (the start): a host-gw node that is
        not directly reachable raises OverlayConfigError; later such a node is logged and skipped."""
        with self.lock:
            if self.mode == "host-gw":
                bad = {(n.name, n.address) for n in ov.unreachable_nodes(self.node_name, nodes,
                                                                        self.local_subnets)}
                if bad and not strict and bad != self.unreachable:
                    log.error("overlay: host-gw cannot reach %s directly on %s (local subnets %s): "
                              "skipped; pods there are unreachable from this node",
                              ", ".join(f"{n} ({a})" for n, a in sorted(bad)), self.underlay_dev,
                              ", ".join(self.local_subnets))
                self.unreachable = bad
            want = ov.plan_overlay(self.mode, self.node_name, nodes, underlay_dev=self.underlay_dev,
                                   local_subnets=self.local_subnets, strict=strict)
            ops = ov.diff_overlay(self.applied, want)
            if ops:
                oa.apply_ops(self.ipr, ops)
                self.applies += 1
                log.info("overlay: %s", "; ".join(map(str, ops)))
            self.applied = want
            return ops

    def stop(self) -> None:
        if self.informer:
            self.informer.stop()
        self.ipr.close()
