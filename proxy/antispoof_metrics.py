"""The CNI's source checks as a Prometheus metric, collected at scrape time from the named
counters of the bridge table (cni/antispoof.py) in the agent's netns:

    kubeweft_spoofed_packets_total{family,reason}
        frames from pods dropped because their source MAC, address or ethertype was not theirs
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from kubeweft.cni import antispoof

log = logging.getLogger("kubeweft.antispoof")

NAME = "kubeweft_spoofed_packets"


def render_family(counters: dict[str, int]):
    """The metric family of `counters` (reason -> packets): one sample per known reason, 0 for
    one not counted yet (the table is made at the first ADD). Pure."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(NAME, "frames from pods dropped by the source checks (another "
                                 "pod's, the node's or an external address, another MAC, an "
                                 "ethertype pods may not send)", labels=["family", "reason"])
    for reason, fam in antispoof.REASONS.items():
        family.add_metric([fam, reason], counters.get(reason, 0))
    return family


def register_metrics(read: Callable[[], dict[str, int]] = antispoof.read_counters):
    """Register a collector of read()'s counters in the default registry; returned for
    unregister_metrics."""
    from prometheus_client import REGISTRY

    class Collector:
        def collect(self):
            try:
                counters = read()
            except Exception as e:  # noqa: BLE001 - a scrape must not take the agent down
                log.warning("reading anti-spoofing counters: %s", e)
                counters = {}
            yield render_family(counters)

    collector = Collector()
    REGISTRY.register(collector)
    return collector


def unregister_metrics(collector) -> None:
    from prometheus_client import REGISTRY
    REGISTRY.unregister(collector)
