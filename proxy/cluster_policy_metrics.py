"""The ClusterNetworkPolicy controller's Prometheus metrics, collected at scrape time by a
collector registered while the controller runs (the agent serves the default registry on 10249):

    kubeweft_clusternetworkpolicy_packets_total{tier,policy,direction,rule,action}
        first packets of new connections each rule matched, from the table's named counters
        (c<id>_<e|i><R>_n); action="Deny" are the drops
    kubeweft_clusternetworkpolicy_policies               policies in the table
    kubeweft_clusternetworkpolicy_sync_failures_total, _last_sync_timestamp_seconds
        its sync loop's (proxy/sync_loop.py)
"""
from __future__ import annotations

import logging
import time

from . import render_cluster_policy as rc
from .nftables import Nft

log = logging.getLogger("kubeweft.cnp")

COUNTER_MAX_AGE = 2.0            # seconds a scrape reuses the last listing


class RuleCounters:
    """The table's counters, read for a scrape through an nft context of its own (a scrape must not
    wait for the sync's lock) and reused for COUNTER_MAX_AGE."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self._reader: Nft | None = None
        self._last: tuple[float, dict[str, tuple[int, int]]] = (-COUNTER_MAX_AGE, {})

    def read(self) -> dict[str, tuple[int, int]]:
        if time.monotonic() - self._last[0] < COUNTER_MAX_AGE:
            return self._last[1]
        if self._reader is None:
            self._reader = Nft(self.netns) if self.netns is not None else Nft()
        out = rc.parse_counts(self._reader.list(f"table {rc.T}"))
        self._last = (time.monotonic(), out)
        return out


def register_metrics(ctl):
    """Register a collector of `ctl` (a ClusterPolicyController); returned for unregister_metrics."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self):
            packets = CounterMetricFamily(
                "kubeweft_clusternetworkpolicy_packets", "first packets of new connections a "
                "ClusterNetworkPolicy rule matched (action Deny: dropped)",
                labels=["tier", "policy", "direction", "rule", "action"])
            refs = ctl.rule_refs()
            try:
                counts = ctl.counters.read()
            except Exception as e:  # noqa: BLE001 - a scrape must not take the agent down
                log.warning("reading cluster policy counters: %s", e)
                counts = {}
            for name, ref in sorted(refs.items()):
                if name in counts:
                    packets.add_metric([ref.tier, ref.policy, ref.direction, ref.rule, ref.action], counts[name][0])
            yield packets
            yield GaugeMetricFamily("kubeweft_clusternetworkpolicy_policies", "ClusterNetworkPolicies in "
                                    "the table", value=len(ctl.policy_names()))
            yield CounterMetricFamily("kubeweft_clusternetworkpolicy_sync_failures", "cluster policy syncs "
                                      "that failed (retried with backoff)", value=ctl.loop.failures)
            yield GaugeMetricFamily("kubeweft_clusternetworkpolicy_last_sync_timestamp_seconds", "wall "
                                    "clock of the last successful sync", value=ctl.loop.last_success)

    collector = Collector()
    REGISTRY.register(collector)
    return collector


def unregister_metrics(collector) -> None:
    from prometheus_client import REGISTRY
    REGISTRY.unregister(collector)
