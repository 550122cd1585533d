"""The DNS server's Prometheus metrics, named and labelled as CoreDNS's (plugin/metrics/vars), so
that dashboards and alerts written for CoreDNS read them: requests by server, zone, protocol,
address family and type; responses by rcode and the plugin that wrote them; the request
duration histogram with CoreDNS's buckets; request and response sizes.

Each server owns its registry, so that two servers in one process (tests) do not collide.
"""
from __future__ import annotations

import dns.rcode
import dns.rdatatype
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# CoreDNS reports these types by name and every other one as "other"
MONITORED_TYPES = frozenset(["A", "AAAA", "NS", "PTR", "SOA", "MX", "TXT", "SRV", "CNAME", "DS", "DNSKEY",
                             "NAPTR", "HTTPS", "SVCB", "IXFR", "AXFR", "ANY"])
# prometheus.ExponentialBuckets(0.00025, 2, 16), CoreDNS's duration buckets
DURATION_BUCKETS = tuple(0.00025 * 2 ** i for i in range(16))
SIZE_BUCKETS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)
VERSION = "1.11.1"


def type_label(qtype: int) -> str:
    name = dns.rdatatype.to_text(qtype)
    return name if name in MONITORED_TYPES else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("coredns_dns_requests", "Counter of DNS requests made per zone, protocol "
                                "and family.", ["server", "zone", "view", "proto", "family", "type"], registry=r)
        self.responses = Counter("coredns_dns_responses", "Counter of response status codes.",
                                 ["server", "zone", "view", "rcode", "plugin"], registry=r)
        self.duration = Histogram("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) "
                                  "each request took per zone.", ["server", "zone", "view", "type"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.request_size = Histogram("coredns_dns_request_size_bytes", "Size of the request in bytes.",
                                      ["server", "zone", "view", "proto"], buckets=SIZE_BUCKETS, registry=r)
        self.response_size = Histogram("coredns_dns_response_size_bytes", "Size of the returned response in "
                                       "bytes.", ["server", "zone", "view", "proto"], buckets=SIZE_BUCKETS,
                                       registry=r)
        build = Gauge("coredns_build_info", "A metric with a constant '1' value labeled by version, revision, "
                      "and goversion from which CoreDNS was built.", ["version", "revision", "goversion"],
                      registry=r)
        build.labels(VERSION, "kubeweft", "python").set(1)

    def observe(self, *, server: str, zone: str, proto: str, family: int, qtype: int, rcode: int,
                plugin: str, seconds: float, request_bytes: int, response_bytes: int) -> None:
        t = type_label(qtype)
        self.requests.labels(server, zone, "", proto, str(family), t).inc()
        self.responses.labels(server, zone, "", dns.rcode.to_text(rcode), plugin).inc()
        self.duration.labels(server, zone, "", t).observe(seconds)
        self.request_size.labels(server, zone, "", proto).observe(request_bytes)
        self.response_size.labels(server, zone, "", proto).observe(response_bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
