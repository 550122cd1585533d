"""What an overlay backend does, as flannel's backends do: set up this node's end and say which
of its attributes the node publishes (Node annotations), the pod MTU it allows, which kernel
entries reach another node's podCIDR, which nodes it cannot reach, and how its entries are
read back and cleaned up. VXLAN (vxlan.py) and host-gw (hostgw.py) implement it.

plan_node, check and unreachable are pure; setup, read_state and cleanup do netlink I/O in the
node's network namespace. The controller (controller.py) applies the diff between the state
read back and the plan (plan.py) with kernel.apply_ops, in the order diff_overlay gives.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pyroute2 import IPRoute

from .plan import NodeInfo, OverlayState, Underlay


class Backend(ABC):
    """One IP family's: the underlay's address family is the family of the podCIDRs it routes."""
    name: ClassVar[str]           # the --overlay value and the backend-type annotation

    def __init__(self, underlay: Underlay):
        self.underlay = underlay

    @property
    def family(self) -> int:
        return self.underlay.family

    @property
    @abstractmethod
    def pod_mtu(self) -> int:
        """The largest MTU a pod interface may have for its packets to cross this backend."""

    @abstractmethod
    def setup(self, ipr: IPRoute, pod_cidr: str) -> dict[str, str | None]:
        """Make this node's end (a device, its address) and return the Node annotations it
        publishes for the other nodes (None: remove that annotation)."""

    @abstractmethod
    def plan_node(self, node: NodeInfo) -> OverlayState:
        """The routes (and neighbours, FDB entries) that reach `node`'s podCIDR: empty while
        the node has not published what this backend needs of it."""

    def unreachable(self, nodes: list[NodeInfo]) -> list[NodeInfo]:
        """Of the remote `nodes`, those this backend cannot route to from here."""
        return []

    def check(self, nodes: list[NodeInfo]) -> None:
        """Raise OverlayConfigError if this backend cannot carry the remote `nodes`."""

    @abstractmethod
    def read_state(self, ipr: IPRoute) -> OverlayState:
        """The entries of this backend that the kernel holds (a previous run's)."""

    @abstractmethod
    def cleanup(self, ipr: IPRoute) -> None:
        """Remove what this backend put in the kernel (the node switched to another backend)."""
