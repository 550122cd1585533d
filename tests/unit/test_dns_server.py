"""The DNS server's message handling without sockets: flags, truncation over UDP at the client's
size (and none over TCP), malformed and unsupported messages, and the CoreDNS-named metrics."""
from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype as T
from kubeweft.lab.dns import records, views
from kubeweft.lab.dns.index import Cluster
from kubeweft.lab.dns.metrics import Metrics
from kubeweft.lab.dns.server import DnsServer, Listen, parse_listen
from prometheus_client.parser import text_string_to_metric_families

LISTEN = Listen("0.0.0.0", 53)


def big_cluster(endpoints: int) -> Cluster:
    c = Cluster()
    svc = {"metadata": {"namespace": "default", "name": "many"}, "spec": {"clusterIP": "None"}}
    c.set_service(("default", "many"), views.service_from(svc))
    sl = {"metadata": {"namespace": "default", "name": "many-1",
                       "labels": {"kubernetes.io/service-name": "many"}},
          "addressType": "IPv4", "endpoints": [{"addresses": [f"10.244.{i // 250}.{i % 250 + 1}"]}
                                               for i in range(endpoints)]}
    c.set_slice(("default", "many-1"), views.slice_from(sl))
    c.set_service(("default", "web"), views.service_from(
        {"metadata": {"namespace": "default", "name": "web"}, "spec": {"clusterIP": "10.96.0.7"}}))
    return c


def server(endpoints: int = 3) -> DnsServer:
    return DnsServer(big_cluster(endpoints), records.Config(), [LISTEN], Metrics())


def exchange(srv: DnsServer, query: dns.message.Message, proto: str = "udp") -> dns.message.Message:
    return dns.message.from_wire(srv.respond(query.to_wire(), proto, LISTEN))


def test_an_answer_is_authoritative_and_echoes_the_question():
    q = dns.message.make_query("Web.default.svc.cluster.local.", T.A)
    r = exchange(server(), q)
    assert r.id == q.id and r.flags & dns.flags.QR and r.flags & dns.flags.AA and r.flags & dns.flags.RD
    assert r.question == q.question and r.rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rd in r.answer[0]] == ["10.96.0.7"]


def test_large_udp_answers_are_truncated_to_the_clients_size_and_whole_over_tcp():
    srv = server(200)                          # 200 A records: ~3.2 kB
    q = dns.message.make_query("many.default.svc.cluster.local.", T.A)      # no EDNS: 512 bytes
    wire = srv.respond(q.to_wire(), "udp", LISTEN)
    r = dns.message.from_wire(wire)
    assert len(wire) <= 512 and r.flags & dns.flags.TC and r.rcode() == dns.rcode.NOERROR
    q_edns = dns.message.make_query("many.default.svc.cluster.local.", T.A, use_edns=0, payload=4096)
    wire = srv.respond(q_edns.to_wire(), "udp", LISTEN)
    assert len(wire) <= 1232 and dns.message.from_wire(wire).flags & dns.flags.TC     # ours is 1232
    r = exchange(srv, q, "tcp")
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 200


def test_small_answers_are_not_truncated():
    srv = server(20)
    q = dns.message.make_query("many.default.svc.cluster.local.", T.A)
    r = exchange(srv, q)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 20


def test_malformed_and_unsupported_messages():
    srv = server()
    q = dns.message.make_query("web.default.svc.cluster.local.", T.A)
    garbage = q.to_wire()[:12] + b"\x07broken"
    r = dns.message.from_wire(srv.respond(garbage, "udp", LISTEN))
    assert r.id == q.id and r.rcode() == dns.rcode.FORMERR and r.flags & dns.flags.QR
    assert srv.respond(b"\x01\x02", "udp", LISTEN) is None                 # not even a header
    response = dns.message.make_response(q)
    assert srv.respond(response.to_wire(), "udp", LISTEN) is None          # never answer an answer
    notify = dns.message.make_query("web.default.svc.cluster.local.", T.SOA)
    notify.set_opcode(dns.opcode.NOTIFY)
    assert exchange(srv, notify).rcode() == dns.rcode.NOTIMP
    chaos = dns.message.make_query("version.bind.", T.TXT, rdclass=3)
    assert exchange(srv, chaos).rcode() == dns.rcode.REFUSED


def test_metrics_are_named_and_labelled_as_coredns():
    srv = server()
    for name, qtype in (("web.default.svc.cluster.local.", T.A), ("nope.default.svc.cluster.local.", T.AAAA),
                        ("example.com.", T.A)):
        srv.respond(dns.message.make_query(name, qtype).to_wire(), "udp", LISTEN)
    srv.respond(dns.message.make_query("web.default.svc.cluster.local.", T.SRV).to_wire(), "tcp", LISTEN)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(srv.metrics.exposition().decode())
               for s in fam.samples}

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0)

    base = {"server": "dns://:53", "zone": ".", "view": ""}
    assert value("coredns_dns_requests_total", **base, proto="udp", family="1", type="A") == 2
    assert value("coredns_dns_requests_total", **base, proto="tcp", family="1", type="SRV") == 1
    assert value("coredns_dns_responses_total", **base, rcode="NOERROR", plugin="kubernetes") == 2
    assert value("coredns_dns_responses_total", **base, rcode="NXDOMAIN", plugin="kubernetes") == 1
    assert value("coredns_dns_responses_total", **base, rcode="REFUSED", plugin="") == 1
    assert value("coredns_dns_request_duration_seconds_count", **base, type="A") == 2


def test_listen_addresses():
    assert parse_listen("10.0.0.10") == Listen("10.0.0.10", 53)
    assert parse_listen("10.0.0.10:1053") == Listen("10.0.0.10", 1053)
    assert parse_listen(":5353") == Listen("0.0.0.0", 5353)
    assert parse_listen("[fd00::a]:53") == Listen("fd00::a", 53)
    assert parse_listen("fd00::a", 1053) == Listen("fd00::a", 1053)
    assert Listen("fd00::a", 53).server_label == "dns://[fd00::a]:53"


def test_coredns_flags_and_the_corefile(tmp_path, monkeypatch):
    from kubeweft.lab.dns.__main__ import _parser, settings_from
    monkeypatch.delenv("KUBECONFIG", raising=False)
    # the CoreDNS image's args with no Corefile on disk: kubeadm's, with the port of -dns.port
    s = settings_from(_parser().parse_args(["-conf", str(tmp_path / "Corefile"), "-dns.port", "1053"]))
    assert (s.port, s.pods, s.ttl, s.metrics, s.ready, s.binds) == (1053, "insecure", 30, ":9153", ":8181", [])
    conf = tmp_path / "Corefile"
    conf.write_text(".:53 {\n  kubernetes kw.test in-addr.arpa {\n    pods verified\n  }\n}\n")
    s = settings_from(_parser().parse_args(["-conf", str(conf), "--listen", "10.96.0.10", "--ttl", "7"]))
    assert (s.zone, s.pods, s.ttl, s.binds, s.metrics, s.port) == ("kw.test", "verified", 7, ["10.96.0.10"], "", 53)
    monkeypatch.setenv("KUBECONFIG", "/k")
    assert settings_from(_parser().parse_args([])).kubeconfig == "/k"
    assert settings_from(_parser().parse_args(["--kubeconfig", "/x"])).kubeconfig == "/x"


def test_lameduck_from_the_corefile_and_the_flag(tmp_path):
    from kubeweft.lab.dns import corefile
    from kubeweft.lab.dns.__main__ import _parser, settings_from
    assert corefile.parse(corefile.KUBEADM_COREFILE).lameduck == 5.0
    assert corefile.parse(".:53 {\n  health\n}\n").lameduck == 0.0
    assert [corefile.parse_duration(d) for d in ("5s", "250ms", "1m30s", "0s")] == [5.0, 0.25, 90.0, 0.0]
    for bad in ("5", "s", "5x", "5s "):
        try:
            corefile.parse_duration(bad)
        except corefile.CorefileError:
            continue
        raise AssertionError(f"{bad!r} parsed")
    s = settings_from(_parser().parse_args(["-conf", str(tmp_path / "none"), "--lameduck", "0s"]))
    assert s.lameduck == 0.0
