"""The cluster DNS's answers against the Kubernetes DNS-Based Service Discovery specification's
cases (kubernetes/dns docs/specification.md) and CoreDNS's behaviour where the spec is silent:
the index is filled from raw API objects through the watch-edge views, as the server fills it."""
from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype as T
import pytest
from kubeweft.lab.dns import corefile, records, views
from kubeweft.lab.dns.index import Cluster

NXDOMAIN, NOERROR, REFUSED = dns.rcode.NXDOMAIN, dns.rcode.NOERROR, dns.rcode.REFUSED
CFG = records.Config(ttl=5, pods="insecure")


def service(name, ns="default", *, cluster_ips=(), ports=(), type_="ClusterIP", external_name=None):
    spec = {"type": type_, "ports": [dict(p) for p in ports]}
    if cluster_ips:
        spec["clusterIP"], spec["clusterIPs"] = cluster_ips[0], list(cluster_ips)
    elif type_ != "ExternalName":
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
    if external_name:
        spec["externalName"] = external_name
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def endpoint_slice(name, svc, ns="default", *, endpoints=(), ports=(), address_type="IPv4"):
    return {"metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": address_type, "ports": list(ports), "endpoints": list(endpoints)}


def ep(ip, hostname=None, ready=True):
    e = {"addresses": [ip], "conditions": {"ready": ready}}
    if hostname:
        e["hostname"] = hostname
    return e


def pod(name, ip, ns="default"):
    return {"metadata": {"namespace": ns, "name": name}, "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}


def key(obj):
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def add(cluster: Cluster, *objs):
    for o in objs:
        if "addressType" in o:
            cluster.set_slice(key(o), views.slice_from(o))
        elif "spec" in o:
            cluster.set_service(key(o), views.service_from(o))
        else:
            cluster.set_pod(key(o), views.pod_from(o))
    return cluster


HTTPS = {"name": "https", "port": 443, "protocol": "TCP"}


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster()
    add(c,
        service("kubernetes", cluster_ips=["10.3.0.1"], ports=[HTTPS]),
        service("dual", cluster_ips=["10.3.0.2", "fd00:10:96::2"],
                ports=[{"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 9153, "protocol": "TCP"}]),
        service("v6only", cluster_ips=["fd00:10:96::3"]),
        service("headless", ports=[HTTPS]),
        endpoint_slice("headless-a", "headless",
                       ports=[{"name": "https", "port": 8443, "protocol": "TCP"}],
                       endpoints=[ep("10.3.0.100", "my-pet"), ep("10.3.0.101", "my-pet-2"),
                                  ep("10.3.0.102"), ep("10.3.0.103", "sick", ready=False)]),
        service("empty-headless"),
        endpoint_slice("empty-headless-a", "empty-headless", endpoints=[ep("10.3.0.110", ready=False)]),
        service("foo", type_="ExternalName", external_name="www.example.com"),
        service("alias", type_="ExternalName", external_name="kubernetes.default.svc.cluster.local."))
    return c


def ask(cluster, qname, qtype, cfg=CFG) -> records.Answer:
    return records.answer(cluster, cfg, qname, qtype)


def rdata(a: records.Answer) -> list[str]:
    return sorted(rd.to_text() for rrset in a.answer for rd in rrset)


def soa_only(a: records.Answer, zone="cluster.local."):
    return not a.answer and [(str(r.name), r.rdtype) for r in a.authority] == [(zone, T.SOA)]


# --- 2.2 schema version -----------------------------------------------------------------------

def test_dns_version_txt(cluster):
    a = ask(cluster, "dns-version.cluster.local.", T.TXT)
    assert a.rcode == NOERROR and rdata(a) == ['"1.1.0"']


# --- 2.3 Services with a ClusterIP -------------------------------------------------------------

def test_clusterip_a_record(cluster):
    a = ask(cluster, "kubernetes.default.svc.cluster.local.", T.A)
    assert a.rcode == NOERROR and a.authoritative
    assert [(str(r.name), r.ttl, r.rdtype) for r in a.answer] == \
        [("kubernetes.default.svc.cluster.local.", 5, T.A)]
    assert rdata(a) == ["10.3.0.1"]


def test_aaaa_for_the_ipv6_family_of_a_dual_stack_service(cluster):
    assert rdata(ask(cluster, "dual.default.svc.cluster.local.", T.A)) == ["10.3.0.2"]
    assert rdata(ask(cluster, "dual.default.svc.cluster.local.", T.AAAA)) == ["fd00:10:96::2"]
    assert rdata(ask(cluster, "v6only.default.svc.cluster.local.", T.AAAA)) == ["fd00:10:96::3"]


def test_a_name_that_exists_without_the_type_is_nodata_with_the_soa(cluster):
    for qname, qtype in (("v6only.default.svc.cluster.local.", T.A),
                         ("kubernetes.default.svc.cluster.local.", T.TXT),
                         ("kubernetes.default.svc.cluster.local.", T.MX)):
        a = ask(cluster, qname, qtype)
        assert a.rcode == NOERROR and soa_only(a), (qname, qtype)
    soa = ask(cluster, "kubernetes.default.svc.cluster.local.", T.TXT).authority[0][0]
    assert (str(soa.mname), str(soa.rname), soa.minimum) == \
        ("ns.dns.cluster.local.", "hostmaster.cluster.local.", 5)


def test_clusterip_srv_for_a_named_port_with_the_service_a_record_in_additional(cluster):
    a = ask(cluster, "_https._tcp.kubernetes.default.svc.cluster.local.", T.SRV)
    assert a.rcode == NOERROR
    assert rdata(a) == ["0 100 443 kubernetes.default.svc.cluster.local."]
    assert [(str(r.name), r.rdtype, [x.to_text() for x in r]) for r in a.additional] == \
        [("kubernetes.default.svc.cluster.local.", T.A, ["10.3.0.1"])]
    udp = ask(cluster, "_dns._udp.dual.default.svc.cluster.local.", T.SRV)
    assert rdata(udp) == ["0 100 53 dual.default.svc.cluster.local."]
    assert {r.rdtype for r in udp.additional} == {T.A, T.AAAA}


def test_no_srv_for_an_unnamed_port_or_another_protocol(cluster):
    for qname in ("_https._udp.kubernetes.default.svc.cluster.local.",
                  "_http._tcp.kubernetes.default.svc.cluster.local.",
                  "__tcp.dual.default.svc.cluster.local.",
                  "_https._tcp.nothere.default.svc.cluster.local."):
        assert ask(cluster, qname, T.SRV).rcode == NXDOMAIN, qname


def test_srv_on_the_service_name_lists_every_port_as_coredns(cluster):
    assert rdata(ask(cluster, "dual.default.svc.cluster.local.", T.SRV)) == \
        ["0 50 53 dual.default.svc.cluster.local.", "0 50 9153 dual.default.svc.cluster.local."]


def test_ptr_for_cluster_ips(cluster):
    a = ask(cluster, "1.0.3.10.in-addr.arpa.", T.PTR)
    assert a.rcode == NOERROR and rdata(a) == ["kubernetes.default.svc.cluster.local."]
    v6 = dns.name.from_text("2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.")
    assert rdata(ask(cluster, v6, T.PTR)) == ["dual.default.svc.cluster.local."]
    missing = ask(cluster, "9.9.9.10.in-addr.arpa.", T.PTR)
    assert missing.rcode == NXDOMAIN and soa_only(missing, "in-addr.arpa.")


# --- 2.4 headless Services ---------------------------------------------------------------------

def test_headless_a_records_are_the_ready_endpoints(cluster):
    a = ask(cluster, "headless.default.svc.cluster.local.", T.A)
    assert a.rcode == NOERROR
    assert rdata(a) == ["10.3.0.100", "10.3.0.101", "10.3.0.102"]


def test_headless_without_ready_endpoints_is_nxdomain(cluster):
    a = ask(cluster, "empty-headless.default.svc.cluster.local.", T.A)
    assert a.rcode == NXDOMAIN and soa_only(a)


def test_endpoint_hostname_records(cluster):
    assert rdata(ask(cluster, "my-pet.headless.default.svc.cluster.local.", T.A)) == ["10.3.0.100"]
    # an endpoint without a hostname is named by its dashed address (CoreDNS's identifier)
    assert rdata(ask(cluster, "10-3-0-102.headless.default.svc.cluster.local.", T.A)) == ["10.3.0.102"]
    assert ask(cluster, "sick.headless.default.svc.cluster.local.", T.A).rcode == NXDOMAIN
    assert ask(cluster, "nobody.headless.default.svc.cluster.local.", T.A).rcode == NXDOMAIN


def test_a_hostname_with_several_addresses_has_one_record_each():
    c = add(Cluster(), service("db"),
            endpoint_slice("db-1", "db", endpoints=[ep("10.1.0.1", "primary")]),
            endpoint_slice("db-2", "db", endpoints=[ep("10.1.0.2", "primary")]))
    assert rdata(ask(c, "primary.db.default.svc.cluster.local.", T.A)) == ["10.1.0.1", "10.1.0.2"]


def test_headless_srv_is_ready_endpoints_times_named_ports(cluster):
    a = ask(cluster, "_https._tcp.headless.default.svc.cluster.local.", T.SRV)
    assert rdata(a) == ["0 33 8443 10-3-0-102.headless.default.svc.cluster.local.",
                        "0 33 8443 my-pet-2.headless.default.svc.cluster.local.",
                        "0 33 8443 my-pet.headless.default.svc.cluster.local."]
    glue = {str(r.name): [x.to_text() for x in r] for r in a.additional}
    assert glue["my-pet.headless.default.svc.cluster.local."] == ["10.3.0.100"]
    c = add(Cluster(), service("two"),
            endpoint_slice("two-a", "two", ports=[{"name": "a", "port": 1, "protocol": "TCP"},
                                                  {"name": "b", "port": 2, "protocol": "TCP"}],
                           endpoints=[ep("10.0.0.1", "x"), ep("10.0.0.2", "y")]))
    assert len(rdata(ask(c, "two.default.svc.cluster.local.", T.SRV))) == 4      # N x M
    assert rdata(ask(c, "_b._tcp.two.default.svc.cluster.local.", T.SRV)) == \
        ["0 50 2 x.two.default.svc.cluster.local.", "0 50 2 y.two.default.svc.cluster.local."]


def test_ptr_for_ready_endpoints_names_their_hostname(cluster):
    assert rdata(ask(cluster, "100.0.3.10.in-addr.arpa.", T.PTR)) == ["my-pet.headless.default.svc.cluster.local."]
    assert rdata(ask(cluster, "102.0.3.10.in-addr.arpa.", T.PTR)) == \
        ["10-3-0-102.headless.default.svc.cluster.local."]
    assert ask(cluster, "103.0.3.10.in-addr.arpa.", T.PTR).rcode == NXDOMAIN      # not ready
    nodata = ask(cluster, "100.0.3.10.in-addr.arpa.", T.A)
    assert nodata.rcode == NOERROR and soa_only(nodata, "in-addr.arpa.")


def test_ipv6_endpoints_answer_aaaa():
    c = add(Cluster(), service("six"),
            endpoint_slice("six-a", "six", address_type="IPv6", endpoints=[ep("fd00:244::5")]))
    assert rdata(ask(c, "six.default.svc.cluster.local.", T.AAAA)) == ["fd00:244::5"]
    assert ask(c, "six.default.svc.cluster.local.", T.A).rcode == NOERROR
    assert rdata(ask(c, "fd00-244--5.six.default.svc.cluster.local.", T.AAAA)) == ["fd00:244::5"]


# --- 2.5 ExternalName --------------------------------------------------------------------------

def test_externalname_is_a_cname_for_every_type(cluster):
    for qtype in (T.A, T.AAAA, T.CNAME):
        a = ask(cluster, "foo.default.svc.cluster.local.", qtype)
        assert a.rcode == NOERROR and not a.authority
        assert [(str(r.name), r.rdtype) for r in a.answer] == [("foo.default.svc.cluster.local.", T.CNAME)]
        assert rdata(a) == ["www.example.com."]


def test_a_cname_into_the_cluster_zone_is_followed(cluster):
    a = ask(cluster, "alias.default.svc.cluster.local.", T.A)
    assert [(str(r.name), r.rdtype) for r in a.answer] == [
        ("alias.default.svc.cluster.local.", T.CNAME), ("kubernetes.default.svc.cluster.local.", T.A)]
    c = add(Cluster(), service("loop", type_="ExternalName", external_name="loop.default.svc.cluster.local"))
    assert len(ask(c, "loop.default.svc.cluster.local.", T.A).answer) == 1


# --- 2.6 pod records ---------------------------------------------------------------------------

def test_pod_a_records_per_mode():
    c = add(Cluster(), pod("p", "10.244.1.5"), pod("q", "fd00:244::7", ns="other"))
    name = "10-244-1-5.default.pod.cluster.local."
    assert rdata(ask(c, name, T.A)) == ["10.244.1.5"]
    assert rdata(ask(c, "1-2-3-4.anywhere.pod.cluster.local.", T.A)) == ["1.2.3.4"]    # insecure
    verified = records.Config(pods="verified")
    assert rdata(ask(c, name, T.A, verified)) == ["10.244.1.5"]
    assert ask(c, "10-244-1-5.other.pod.cluster.local.", T.A, verified).rcode == NXDOMAIN
    assert ask(c, "1-2-3-4.default.pod.cluster.local.", T.A, verified).rcode == NXDOMAIN
    assert rdata(ask(c, "fd00-244--7.other.pod.cluster.local.", T.AAAA, verified)) == ["fd00:244::7"]
    assert ask(c, name, T.A, records.Config(pods="disabled")).rcode == NXDOMAIN
    assert ask(c, "not-an-ip.default.pod.cluster.local.", T.A).rcode == NXDOMAIN
    c.set_pod(("default", "p"), None)
    assert ask(c, name, T.A, verified).rcode == NXDOMAIN


def test_pod_hostname_and_subdomain_through_the_headless_service():
    # hostname: web-0, subdomain: web: the EndpointSlice controller writes the hostname
    c = add(Cluster(), service("web"), endpoint_slice("web-x", "web", endpoints=[ep("10.244.2.9", "web-0")]))
    assert rdata(ask(c, "web-0.web.default.svc.cluster.local.", T.A)) == ["10.244.2.9"]


# --- names that do not exist, and names outside the zones ---------------------------------------

def test_missing_names_are_nxdomain_with_the_soa(cluster):
    for qname in ("nothere.default.svc.cluster.local.", "kubernetes.nons.svc.cluster.local.",
                  "nons.svc.cluster.local.", "a.b.c.d.e.f.svc.cluster.local.", "what.cluster.local.",
                  "x.kubernetes.default.svc.cluster.local."):
        a = ask(cluster, qname, T.A)
        assert a.rcode == NXDOMAIN and soa_only(a), qname


def test_empty_non_terminals_exist(cluster):
    for qname in ("svc.cluster.local.", "default.svc.cluster.local.", "cluster.local.", "pod.cluster.local."):
        a = ask(cluster, qname, T.A)
        assert a.rcode == NOERROR and soa_only(a), qname
    assert [r.rdtype for r in ask(cluster, "cluster.local.", T.SOA).answer] == [T.SOA]
    assert rdata(ask(cluster, "cluster.local.", T.NS)) == ["ns.dns.cluster.local."]


def test_names_outside_the_served_zones_are_refused(cluster):
    for qname in ("www.example.com.", "local.", "kubernetes.default.", "kubernetes.default.svc."):
        a = ask(cluster, qname, T.A)
        assert (a.rcode, a.answer, a.authority, a.authoritative) == (REFUSED, [], [], False), qname


def test_search_expansion_is_the_resolvers_job(cluster):
    """`kubernetes` and `kubernetes.default` are what a pod types; its resolver appends the search
    domains. Asked as they are, they are names outside the zone."""
    assert ask(cluster, "kubernetes.", T.A).rcode == REFUSED
    assert ask(cluster, "kubernetes.default.", T.A).rcode == REFUSED


def test_case_insensitive_and_the_question_spelling_kept(cluster):
    a = ask(cluster, "KUBERNETES.Default.SVC.Cluster.Local.", T.A)
    assert rdata(a) == ["10.3.0.1"] and str(a.answer[0].name) == "KUBERNETES.Default.SVC.Cluster.Local."
    assert rdata(ask(cluster, "_HTTPS._TCP.Headless.default.svc.cluster.local.", T.SRV))
    assert rdata(ask(cluster, "My-Pet.headless.default.svc.cluster.local.", T.A)) == ["10.3.0.100"]
    assert rdata(ask(cluster, "1.0.3.10.IN-ADDR.ARPA.", T.PTR)) == ["kubernetes.default.svc.cluster.local."]


def test_with_and_without_the_trailing_dot(cluster):
    assert rdata(ask(cluster, "kubernetes.default.svc.cluster.local", T.A)) == \
        rdata(ask(cluster, "kubernetes.default.svc.cluster.local.", T.A)) == ["10.3.0.1"]


def test_another_cluster_domain():
    cfg = records.Config(zone=dns.name.from_text("kw.test"))
    c = add(Cluster(), service("web", cluster_ips=["10.96.0.9"]))
    assert rdata(ask(c, "web.default.svc.kw.test.", T.A, cfg)) == ["10.96.0.9"]
    assert ask(c, "web.default.svc.cluster.local.", T.A, cfg).rcode == REFUSED
    assert rdata(ask(c, "9.0.96.10.in-addr.arpa.", T.PTR, cfg)) == ["web.default.svc.kw.test."]


# --- the index follows events -----------------------------------------------------------------

def test_updates_and_deletes_follow_the_events(cluster):
    cluster.set_service(("default", "kubernetes"), None)
    assert ask(cluster, "kubernetes.default.svc.cluster.local.", T.A).rcode == NXDOMAIN
    assert ask(cluster, "1.0.3.10.in-addr.arpa.", T.PTR).rcode == NXDOMAIN
    add(cluster, service("kubernetes", cluster_ips=["10.3.0.7"]))
    assert rdata(ask(cluster, "kubernetes.default.svc.cluster.local.", T.A)) == ["10.3.0.7"]
    # an endpoint turning ready appears; a slice deleted takes its endpoints and PTRs away
    add(cluster, endpoint_slice("empty-headless-a", "empty-headless", endpoints=[ep("10.3.0.110")]))
    assert rdata(ask(cluster, "empty-headless.default.svc.cluster.local.", T.A)) == ["10.3.0.110"]
    cluster.set_slice(("default", "headless-a"), None)
    assert ask(cluster, "headless.default.svc.cluster.local.", T.A).rcode == NXDOMAIN
    assert ask(cluster, "100.0.3.10.in-addr.arpa.", T.PTR).rcode == NXDOMAIN
    # the last Service of a namespace gone: the namespace name is gone too
    add(cluster, service("only", ns="lonely", cluster_ips=["10.3.9.9"]))
    assert ask(cluster, "lonely.svc.cluster.local.", T.A).rcode == NOERROR
    cluster.set_service(("lonely", "only"), None)
    assert ask(cluster, "lonely.svc.cluster.local.", T.A).rcode == NXDOMAIN


def test_a_slice_relabelled_to_another_service_moves():
    c = add(Cluster(), service("a"), service("b"),
            endpoint_slice("s", "a", endpoints=[ep("10.0.0.1")]))
    add(c, endpoint_slice("s", "b", endpoints=[ep("10.0.0.1")]))
    assert ask(c, "a.default.svc.cluster.local.", T.A).rcode == NXDOMAIN
    assert rdata(ask(c, "b.default.svc.cluster.local.", T.A)) == ["10.0.0.1"]
    assert rdata(ask(c, "1.0.0.10.in-addr.arpa.", T.PTR)) == ["10-0-0-1.b.default.svc.cluster.local."]


def test_a_relist_replaces_everything(cluster):
    kept = service("kubernetes", cluster_ips=["10.3.0.1"], ports=[HTTPS])
    cluster.replace_services({key(kept): views.service_from(kept)})
    cluster.replace_slices({})
    assert rdata(ask(cluster, "kubernetes.default.svc.cluster.local.", T.A)) == ["10.3.0.1"]
    for gone in ("dual", "headless", "foo"):
        assert ask(cluster, f"{gone}.default.svc.cluster.local.", T.A).rcode == NXDOMAIN
    assert ask(cluster, "100.0.3.10.in-addr.arpa.", T.PTR).rcode == NXDOMAIN
    assert ask(cluster, "2.0.3.10.in-addr.arpa.", T.PTR).rcode == NXDOMAIN


def test_broken_objects_are_skipped():
    assert views.service_from({"metadata": {"name": "x"}}) is None                      # no namespace
    assert views.service_from({"metadata": {"namespace": "d", "name": "x"},
                               "spec": {"type": "ExternalName"}}) is None              # no target
    assert views.slice_from(endpoint_slice("s", "a", address_type="FQDN")) is None
    s = views.slice_from(endpoint_slice("s", "a", endpoints=[{"addresses": ["nope"]}, ep("10.0.0.1")]))
    assert [e.addresses for e in s.endpoints] == [("10.0.0.1",)]
    assert views.slice_from({"metadata": {"namespace": "d", "name": "s"}, "addressType": "IPv4"}) is None


# --- the Corefile ------------------------------------------------------------------------------

def test_kubeadms_corefile():
    s = corefile.parse(corefile.KUBEADM_COREFILE)
    assert (s.port, s.zone, s.reverse_zones, s.pods, s.ttl) == \
        (53, "cluster.local", ["in-addr.arpa", "ip6.arpa"], "insecure", 30)
    assert (s.metrics, s.health, s.ready) == (":9153", ":8080", ":8181")


def test_a_corefile_with_another_domain_and_bind():
    s = corefile.parse(".:1053 {\n  bind 10.0.0.10\n  kubernetes kw.test 10.in-addr.arpa {\n"
                       "    pods verified\n  }\n}\n")
    assert (s.port, s.binds, s.zone, s.reverse_zones, s.pods, s.metrics) == \
        (1053, ["10.0.0.10"], "kw.test", ["10.in-addr.arpa"], "verified", "")
    with pytest.raises(corefile.CorefileError):
        corefile.parse(".:53 {\n kubernetes {\n")


def test_response_is_well_formed_wire(cluster):
    """The records render through dnspython into a message a client parses back."""
    q = dns.message.make_query("_https._tcp.headless.default.svc.cluster.local.", T.SRV)
    r = dns.message.make_response(q)
    a = ask(cluster, q.question[0].name, T.SRV)
    r.answer, r.additional = a.answer, a.additional
    r.flags |= dns.flags.AA
    back = dns.message.from_wire(r.to_wire())
    assert len(back.answer[0]) == 3 and len(back.additional) == 3
