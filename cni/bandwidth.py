"""The "bandwidth" capability: token-bucket (tc tbf) shaping of a pod's traffic.

runtimeConfig.bandwidth = {ingressRate, ingressBurst, egressRate, egressBurst}, rates in bit/s and
bursts in bits, as the reference bandwidth plugin reads them.

- ingress (traffic to the pod): tbf as the root qdisc of the host veth, in the node netns.
- egress (traffic from the pod): tbf as the root qdisc of the pod's interface, in the sandbox.
  The reference plugin redirects the host veth's ingress to an ifb device instead; shaping at
  the pod's own egress has the same effect without an extra device per pod, and a pod without
  CAP_NET_ADMIN cannot remove it.
Both go away with the veth pair, so DEL needs nothing here.
"""
from __future__ import annotations

from dataclasses import dataclass

from kubeweft.cni.errors import DATAPATH_FAILURE, INVALID_NETWORK_CONFIG, CniError

LATENCY_MS = 25                 # the reference plugin's queue latency
MIN_BURST_BYTES = 3000          # at least two full-size frames, or tbf drops everything


@dataclass(frozen=True)
class Tbf:
    rate_bits: int
    burst_bytes: int


def plan_bandwidth(bandwidth: dict) -> tuple[Tbf | None, Tbf | None]:
    """(ingress, egress) shapers from the runtime's bandwidth entry; None where no rate is set.
    A missing burst defaults to what the rate sends in 100 ms."""
    out = []
    for side in ("ingress", "egress"):
        rate, burst = bandwidth.get(f"{side}Rate"), bandwidth.get(f"{side}Burst")
        if not rate:
            out.append(None)
            continue
        try:
            rate = int(rate)
            burst_bytes = int(burst) // 8 if burst else rate // 80
        except (TypeError, ValueError) as e:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid bandwidth {bandwidth!r}", str(e)) from None
        if rate < 8 or rate >= 2**32 * 8:
            raise CniError(INVALID_NETWORK_CONFIG, f"{side}Rate {rate} bit/s is out of range")
        out.append(Tbf(rate, max(burst_bytes, MIN_BURST_BYTES)))
    return out[0], out[1]


def check_fits(tbf: Tbf, side: str) -> None:
    """tbf keeps the burst as the time it takes at the rate, in scheduler ticks, in 32 bits: a
    burst that lasts longer at its rate (2**32 ticks: 274 s with this machine's tc clock; a
    2**31-bit burst at 8 bit/s lasts 8.5 years) cannot be set up. Refused as configuration, not
    failed in the kernel."""
    from pyroute2.netlink.rtnl.tcmsg.common import calc_xmittime

    if calc_xmittime(tbf.rate_bits / 8, tbf.burst_bytes) >= 2**32:
        raise CniError(INVALID_NETWORK_CONFIG, f"{side}Burst is too large for {side}Rate",
                       f"{tbf.burst_bytes * 8} bits at {tbf.rate_bits} bit/s: tc tbf holds bursts of at "
                       f"most {2**32 // calc_xmittime(1, 1)} s at the rate")


def _apply(ipr, index: int, tbf: Tbf) -> None:
    ipr.tc("replace", "tbf", index, handle="1:", rate=f"{tbf.rate_bits}bit", burst=tbf.burst_bytes,
           latency=f"{LATENCY_MS}ms")


def apply_bandwidth(netns_path: str, pod_ifname: str, host_veth: str, bandwidth: dict) -> None:
    """Shape the pod's traffic (see the module doc). Runs in the node netns, after wire_pod."""
    from kubeweft.cni import datapath
    from pyroute2.netlink.exceptions import NetlinkError

    ingress, egress = plan_bandwidth(bandwidth)
    for tbf, side in ((ingress, "ingress"), (egress, "egress")):
        if tbf:
            check_fits(tbf, side)
    try:
        if ingress:
            with datapath.open_node() as node:
                idx = datapath.link_index(node, host_veth)
                if idx is None:
                    raise CniError(DATAPATH_FAILURE, f"host veth {host_veth} does not exist")
                _apply(node, idx, ingress)
        if egress:
            pod = datapath.open_sandbox(netns_path)
            try:
                idx = datapath.link_index(pod, pod_ifname)
                if idx is None:
                    raise CniError(DATAPATH_FAILURE, f"{pod_ifname} does not exist in {netns_path}")
                _apply(pod, idx, egress)
            finally:
                pod.close()
    except NetlinkError as e:
        raise CniError(DATAPATH_FAILURE, "cannot set up bandwidth shaping", str(e)) from None
