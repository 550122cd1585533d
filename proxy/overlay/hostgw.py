"""The host-gw backend, after flannel's: a plain route to each remote podCIDR via the remote
node's address on the underlay device. No encapsulation, so pods get the underlay's full MTU;
the price is that every node must be on one L2 segment (the next hop directly connected).
An IPv6 podCIDR is routed via the node's IPv6 address on that segment.
"""
from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

from . import kernel
from .backend import Backend
from .plan import NodeInfo, OverlayConfigError, OverlayState, Route, diff_overlay, vtep_mac_annotation


class HostGwBackend(Backend):
    name = "host-gw"

    @property
    def pod_mtu(self) -> int:
        return self.underlay.mtu

    def setup(self, ipr: IPRoute, pod_cidr: str) -> dict[str, str | None]:
        # No device of its own. A VTEP MAC left from a vxlan run is withdrawn: no node may send
        # VXLAN here any more.
        return {vtep_mac_annotation(self.family): None}

    def unreachable(self, nodes: list[NodeInfo]) -> list[NodeInfo]:
        """The nodes whose address is on none of the underlay's connected subnets: host-gw
        cannot route to their pods, since its next hop must be directly connected."""
        subnets = [ipaddress.ip_network(s, strict=False) for s in self.underlay.subnets]
        return [n for n in nodes if not any(ipaddress.ip_address(n.address) in s for s in subnets)]

    def check(self, nodes: list[NodeInfo]) -> None:
        bad = self.unreachable(nodes)
        if bad:
            raise OverlayConfigError(
                "host-gw: " + "; ".join(f"node {n.name} ({n.address})" for n in bad)
                + f" not directly reachable on {self.underlay.dev} (local subnets: "
                f"{', '.join(self.underlay.subnets) or 'none'}); use the vxlan backend")

    def plan_node(self, node: NodeInfo) -> OverlayState:
        dst = str(ipaddress.ip_network(node.pod_cidr, strict=False))
        return OverlayState(routes=frozenset({Route(dst, node.address, self.underlay.dev)}))

    def read_state(self, ipr: IPRoute) -> OverlayState:
        return OverlayState(routes=frozenset(kernel.read_routes(ipr, self.underlay.dev, self.family)))

    def cleanup(self, ipr: IPRoute) -> None:
        kernel.apply_ops(ipr, diff_overlay(self.read_state(ipr), OverlayState()))
