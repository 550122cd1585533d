"""The policy controller's Prometheus metrics, collected at scrape time by a collector that is
registered while a controller runs:

    kubeweft_networkpolicy_{drops,allowed}_total{namespace,policy,direction}
        packets counted by the table's named counters (p<id>_{in,eg}_{ok,drop})
    kubeweft_networkpolicy_policies_applied, _last_applied_timestamp_seconds,
    _last_event_timestamp_seconds, _pending_events
        the controller's progress (bench/netpol.py times by them)
    kubeweft_networkpolicy_sync_failures_total, _sync_duration_seconds,
    _last_sync_timestamp_seconds
        its sync loop's (proxy/sync_loop.py)
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from . import render_policy as rp
from .nftables import Nft

log = logging.getLogger("kubeweft.policy")

COUNTER_MAX_AGE = 2.0            # seconds a scrape reuses the last counter listing
CounterKey = tuple[str, str, str, str]       # namespace, policy, direction, "ok" | "drop"


def parse_counters(counters: Iterable[tuple[str, int, int]], policy_of: Callable[[str], str]) -> dict[CounterKey, int]:
    """(namespace, policy, direction, "ok"|"drop") -> packets, from the (name, packets, bytes)
    of the policy table's named counters (other names are skipped). Pure."""
    out = {}
    for name, packets, _ in counters:
        parts = name.rsplit("_", 2)
        if len(parts) != 3 or parts[1] not in ("in", "eg") or parts[2] not in ("ok", "drop"):
            continue
        ns, _, pol = policy_of(parts[0]).partition("/")
        out[(ns, pol, "ingress" if parts[1] == "in" else "egress", parts[2])] = packets
    return out


class PolicyCounters:
    """The table's named counters, read for a scrape over netlink (a GETOBJ dump: nft's listing
    would fill its cache with every set element first, 1.5-2.9 s of CPU at 1,000 policies over
    5,000 pods, taken from the syncs). Through a socket of its own (a scrape must not hold up
    the sync's transactions), reused for COUNTER_MAX_AGE."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self._reader: Nft | None = None
        self._last: tuple[float, dict[CounterKey, int]] = (-COUNTER_MAX_AGE, {})

    def read(self, policy_of: Callable[[str], str]) -> dict[CounterKey, int]:
        now = time.monotonic()
        if now - self._last[0] < COUNTER_MAX_AGE:
            return self._last[1]
        if self._reader is None:
            self._reader = Nft(self.netns) if self.netns is not None else Nft()
        out = parse_counters(self._reader.elements.counters(rp.FAMILY, rp.TABLE) or (), policy_of)
        self._last = (time.monotonic(), out)
        return out


def register_metrics(ctl):
    """Register a collector of `ctl` (a PolicyController) in the default registry; returned for
    unregister_metrics."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

    class Collector:
        def collect(self):
            drops = CounterMetricFamily("kubeweft_networkpolicy_drops", "packets denied, by the policy "
                                        "that isolated the pod", labels=["namespace", "policy", "direction"])
            allowed = CounterMetricFamily("kubeweft_networkpolicy_allowed", "new connections' packets "
                                          "allowed by a policy's rules", labels=["namespace", "policy", "direction"])
            try:
                counters = ctl.counters.read(ctl.policy_of)
            except Exception as e:  # noqa: BLE001 - a scrape must not take the agent down
                log.warning("reading policy counters: %s", e)
                counters = {}
            for (ns, name, direction, what), packets in sorted(counters.items()):
                (drops if what == "drop" else allowed).add_metric([ns, name, direction], packets)
            yield drops
            yield allowed
            yield GaugeMetricFamily("kubeweft_networkpolicy_policies_applied", "policies in the "
                                    "table as of the last transaction", value=ctl.applied_policies)
            yield GaugeMetricFamily("kubeweft_networkpolicy_last_applied_timestamp_seconds",
                                    "wall clock of the last policy transaction", value=ctl.last_applied)
            yield GaugeMetricFamily("kubeweft_networkpolicy_last_event_timestamp_seconds",
                                    "wall clock of the last watch event received", value=ctl.last_event)
            yield GaugeMetricFamily("kubeweft_networkpolicy_pending_events", "watch events not yet "
                                    "in the kernel", value=ctl.pending_events())
            loop = ctl.loop
            yield CounterMetricFamily("kubeweft_networkpolicy_sync_failures", "policy syncs that "
                                      "failed (retried with backoff)", value=loop.failures)
            yield SummaryMetricFamily("kubeweft_networkpolicy_sync_duration_seconds", "duration of "
                                      "the sync loop's syncs, failed ones included",
                                      count_value=loop.syncs + loop.failures, sum_value=loop.total_duration)
            yield GaugeMetricFamily("kubeweft_networkpolicy_last_sync_timestamp_seconds", "wall clock "
                                    "of the last successful sync", value=loop.last_success)

    collector = Collector()
    REGISTRY.register(collector)
    return collector


def unregister_metrics(collector) -> None:
    from prometheus_client import REGISTRY
    REGISTRY.unregister(collector)
