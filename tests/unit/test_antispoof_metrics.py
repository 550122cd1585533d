"""kubeweft.proxy.antispoof_metrics: the bridge table's named counters as a labelled counter."""
from __future__ import annotations

from kubeweft.proxy import antispoof_metrics
from prometheus_client import REGISTRY


def _samples() -> dict[tuple[str, str], float]:
    return {(s.labels["family"], s.labels["reason"]): s.value for m in REGISTRY.collect()
            if m.name == antispoof_metrics.NAME for s in m.samples if s.name.endswith("_total")}


def test_every_reason_is_a_sample_labelled_with_its_family():
    fam = antispoof_metrics.render_family({"ipv4": 5, "arp": 2, "unknown": 9})
    got = {(s.labels["family"], s.labels["reason"]): s.value for s in fam.samples}
    assert got == {("ethernet", "mac"): 0, ("ipv4", "ipv4"): 5, ("arp", "arp"): 2,
                   ("ipv6", "ipv6"): 0, ("ipv6", "ndp"): 0, ("ethernet", "ethertype"): 0}


def test_a_scrape_reads_the_counters_again():
    counters = {"ipv4": 1}
    collector = antispoof_metrics.register_metrics(lambda: dict(counters))
    try:
        assert _samples()[("ipv4", "ipv4")] == 1
        counters["ipv4"] = 4
        assert _samples()[("ipv4", "ipv4")] == 4
    finally:
        antispoof_metrics.unregister_metrics(collector)


def test_a_failing_read_yields_zeros_not_an_error():
    def broken():
        raise OSError("no nft")
    collector = antispoof_metrics.register_metrics(broken)
    try:
        assert set(_samples().values()) == {0}
    finally:
        antispoof_metrics.unregister_metrics(collector)
