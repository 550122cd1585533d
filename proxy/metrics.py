"""The service proxy's Prometheus metrics, in the default REGISTRY the agent serves on 10249.
kube-proxy's names where the meaning is the same; kubeweft_ for the rest."""
from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families

_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)

# kube-proxy labels these three by ip_family (its Runner: one proxier per family)
SYNC_DURATION = Histogram("kubeproxy_sync_proxy_rules_duration_seconds",
                          "SyncProxyRules latency in seconds", ["ip_family"], buckets=_BUCKETS)
SYNC_FULL_DURATION = Histogram("kubeproxy_sync_full_proxy_rules_duration_seconds",
                               "SyncProxyRules latency in seconds for full resyncs", buckets=_BUCKETS)
SYNC_PARTIAL_DURATION = Histogram("kubeproxy_sync_partial_proxy_rules_duration_seconds",
                                  "SyncProxyRules latency in seconds for partial resyncs", buckets=_BUCKETS)
NETWORK_PROGRAMMING = Histogram("kubeproxy_network_programming_duration_seconds",
                                "In Cluster Network Programming Latency in seconds", buckets=_BUCKETS)
LAST_SYNC = Gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                  "The last time proxy rules were successfully synced", ["ip_family"])
LAST_QUEUED = Gauge("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                    "The last time a sync of proxy rules was queued", ["ip_family"])
ENDPOINT_CHANGES = Counter("kubeproxy_sync_proxy_rules_endpoint_changes",
                           "Cumulative proxy rules Endpoint changes")
SERVICE_CHANGES = Counter("kubeproxy_sync_proxy_rules_service_changes",
                          "Cumulative proxy rules Service changes")
SYNC_FAILURES = Counter("kubeproxy_sync_proxy_rules_nftables_sync_failures",
                        "Cumulative proxy nftables sync failures")
# gauges of one table each: labelled by family, or the two proxiers would overwrite each other
ELEMENTS = Gauge("kubeweft_service_proxy_nftables_elements",
                 "Elements in the service proxy's sets and maps", ["ip_family"])
CHAINS = Gauge("kubeweft_service_proxy_nftables_chains", "On-demand chains of the service proxy", ["ip_family"])
COMMANDS = Histogram("kubeweft_service_proxy_transaction_commands",
                     "nft commands per sync transaction", buckets=(1, 2, 5, 10, 50, 100, 1000, 10000, 100000))
SERVICES = Gauge("kubeweft_service_proxy_services", "Services the proxy programs", ["ip_family"])
CONNTRACK_DELETES = Counter("kubeweft_service_proxy_conntrack_deletes",
                            "conntrack clean-ups of UDP endpoints that went away")


def parse_samples(text: str) -> dict[str, float]:
    """A /metrics page as {'name{label="v",...}': value} (labels sorted; bare name when none),
    read with prometheus_client's own parser: for tests and benchmarks reading the agent."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


HEALTH_PATHS = (("/healthz", "kubeproxy_proxy_healthz", "Cumulative proxy healthz HTTP status"),
                ("/livez", "kubeproxy_proxy_livez", "Cumulative proxy livez HTTP status"))


class HealthCollector:
    """kube-proxy's kubeproxy_proxy_healthz_total and kubeproxy_proxy_livez_total, by status
    code, from the answers the health server counted (it runs before this module is imported)."""

    def __init__(self, health) -> None:
        self.health = health

    def collect(self):
        counts = self.health.counts()
        for path, name, doc in HEALTH_PATHS:
            family = CounterMetricFamily(name, doc, labels=["code"])
            for code in (200, 503):
                family.add_metric([str(code)], counts.get((path, code), 0))
            yield family


def register_health(health) -> None:
    """Export the answers of the agent's health server (an AgentHealth)."""
    REGISTRY.register(HealthCollector(health))
