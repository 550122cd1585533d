"""The Ingress controller's pure parts: views of API objects, class selection, the plan of
servers, locations and upstreams (ingress-nginx's semantics), nginx.conf text, status addresses.
Real nginx checks the rendered text in tests/integration/test_ingress.py."""
import base64

import pytest
from kubeweft.lab.ingress import certs, render, status
from kubeweft.lab.ingress.classes import select_ingresses
from kubeweft.lab.ingress.views import (
    ingress_class_view,
    ingress_view,
    secret_view,
    service_view,
    slice_view,
)

SETTINGS = render.Settings("/s", "/s/conf", 80, 443)


def ing(name: str, *rules: dict, created: str = "2026-01-01T00:00:00Z", default: dict | None = None,
        tls: list | None = None, annotations: dict | None = None, cls: str | None = "nginx"):
    spec: dict = {"rules": list(rules)}
    if cls is not None:
        spec["ingressClassName"] = cls
    if default is not None:
        spec["defaultBackend"] = default
    if tls is not None:
        spec["tls"] = tls
    meta = {"namespace": "default", "name": name, "creationTimestamp": created, "annotations": annotations or {}}
    return ingress_view({"metadata": meta, "spec": spec})


def be(svc: str, port: int | str = 80) -> dict:
    return {"service": {"name": svc, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


def rule(host: str, *paths: tuple) -> dict:
    return {"host": host, "http": {"paths": [{"path": p, "pathType": t, "backend": b} for p, t, b in paths]}}


def svc(name: str, *ports: tuple) -> dict:
    return {"metadata": {"namespace": "default", "name": name},
            "spec": {"ports": [{"name": n, "port": p, "targetPort": tp} for n, p, tp in ports]}}


def eps(name: str, service: str, port_name: str, port: int, ready=(), not_ready=()) -> dict:
    return {"metadata": {"namespace": "default", "name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in ready]
            + [{"addresses": [a], "conditions": {"ready": False}} for a in not_ready]}


SERVICES = {("default", s["metadata"]["name"]): service_view(s) for s in (
    svc("web", ("", 80, 8080)), svc("api", ("http", 80, "web"), ("admin", 81, 9000)), svc("empty", ("", 80, 80)))}
SLICES = [slice_view(eps("web-a", "web", "", 8080, ready=["10.244.1.5", "10.244.2.7"], not_ready=["10.244.1.9"])),
          slice_view(eps("api-a", "api", "http", 8081, ready=["10.244.1.6"])),
          slice_view(eps("api-b", "api", "admin", 9000, ready=["10.244.3.1"]))]


def tls_secret(name: str, *hosts: str, broken: bool = False) -> dict:
    cert, key = certs.make_certificate(hosts[0], hosts)
    if broken:
        key = certs.make_certificate("other")[1]
    return {"metadata": {"namespace": "default", "name": name}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}}


def plan(*ingresses, secrets=()):
    views = {(s["metadata"]["namespace"], s["metadata"]["name"]): secret_view(s) for s in secrets}
    return render.plan_config(ingresses, SERVICES, SLICES, views)


def locations(p: render.Plan, host: str) -> dict[str, tuple]:
    server = next(s for s in p.servers if s.host == host)
    return {("= " if loc.exact else "") + loc.path: (loc.action, loc.upstream) for loc in server.locations}


def test_prefix_is_by_path_element_and_exact_keeps_its_own_backend():
    p = plan(ing("a", rule("a.example", ("/foo", "Prefix", be("web")), ("/foo", "Exact", be("api", "http")),
                           ("/bar/", "Prefix", be("web")), ("/baz", "Exact", be("web")),
                           ("/raw", "ImplementationSpecific", be("web")), ("/", "Prefix", be("api", "http")))))
    assert locations(p, "a.example") == {
        "/": ("proxy", "default-api-http"),                 # a rule's / replaces the default root
        "/foo/": ("proxy", "default-web-80"), "= /foo": ("proxy", "default-api-http"),
        "/bar/": ("proxy", "default-web-80"), "= /bar/": ("proxy", "default-web-80"),
        "= /baz": ("proxy", "default-web-80"),
        "/raw": ("proxy", "default-web-80")}


def test_paths_nginx_would_read_as_syntax_are_left_out():
    p = plan(ing("a", rule("a.example", ("/ok-1.2_~", "Exact", be("web")), ("/x;return 200", "Prefix", be("web")),
                           ("/a b", "Exact", be("web")), ("/{x}", "ImplementationSpecific", be("web")))))
    assert set(locations(p, "a.example")) == {"/", "= /ok-1.2_~"}


def test_first_ingress_wins_a_path_and_names_the_host_default_backend():
    old = ing("old", rule("a.example", ("/x", "Prefix", be("web"))), created="2026-01-01T00:00:00Z",
              default=be("api", "admin"))
    new = ing("new", rule("a.example", ("/x", "Prefix", be("api", "http")), ("/y", "Exact", be("api", "http"))),
              created="2026-01-02T00:00:00Z", default=be("web"))
    p = plan(new, old)
    assert locations(p, "a.example") == {"/": ("proxy", "default-api-admin"), "/x/": ("proxy", "default-web-80"),
                                         "= /x": ("proxy", "default-web-80"), "= /y": ("proxy", "default-api-http")}
    # the catch-all takes the last Ingress's defaultBackend, as ingress-nginx overwrites it
    assert locations(p, "_") == {"/": ("proxy", "default-web-80")}


def test_no_default_backend_is_404_and_no_endpoint_is_503():
    p = plan(ing("a", rule("a.example", ("/e", "Prefix", be("empty")), ("/m", "Prefix", be("missing"))),
                 rule("", ("/anyhost", "Exact", be("web")))))
    assert locations(p, "_") == {"/": ("not-found", ""), "= /anyhost": ("proxy", "default-web-80")}
    assert locations(p, "a.example")["/e/"] == ("unavailable", "default-empty-80")
    assert locations(p, "a.example")["= /m"] == ("unavailable", "default-missing-80")
    assert locations(p, "a.example")["/"] == ("not-found", "")
    assert [u.name for u in p.upstreams] == ["default-web-80"]


def test_upstreams_are_the_ready_endpoints_of_the_named_service_port():
    p = plan(ing("a", rule("a.example", ("/", "Prefix", be("web")), ("/n", "Prefix", be("api", "admin")),
                           ("/t", "Prefix", be("api", "web")))))           # targetPort name, as ingress-nginx
    assert {u.name: u.servers for u in p.upstreams} == {
        "default-web-80": ("10.244.1.5:8080", "10.244.2.7:8080"),
        "default-api-admin": ("10.244.3.1:9000",), "default-api-web": ("10.244.1.6:8081",)}


def test_tls_certificate_per_host_and_redirects():
    secrets = [tls_secret("a-tls", "a.example"), tls_secret("wild", "*.w.example"),
               tls_secret("bad", "b.example", broken=True)]
    p = plan(ing("a", rule("a.example", ("/", "Prefix", be("web"))), rule("x.w.example", ("/", "Prefix", be("web"))),
                 rule("b.example", ("/", "Prefix", be("web"))), rule("other.example", ("/", "Prefix", be("web"))),
                 tls=[{"hosts": ["a.example"], "secretName": "a-tls"}, {"secretName": "wild"},
                      {"hosts": ["b.example"], "secretName": "bad"}]),
             ing("nr", rule("n.example", ("/", "Prefix", be("web"))), tls=[{"hosts": ["n.example"],
                                                                             "secretName": "a-tls"}],
                 annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"}),
             ing("p", rule("plain.example", ("/", "Prefix", be("web")))), secrets=secrets)
    by_host = {s.host: s for s in p.servers}
    assert by_host["a.example"].cert.startswith("certs/default-a-tls-")
    assert by_host["x.w.example"].cert.startswith("certs/default-wild-")     # by the certificate's name
    assert by_host["b.example"].cert == render.DEFAULT_CERT and by_host["b.example"].tls   # broken: default
    # a host of an Ingress with TLS that no Secret serves: the default certificate, and redirected
    # (ingress-nginx's behaviour); a host of an Ingress without TLS: neither
    assert by_host["other.example"].cert == render.DEFAULT_CERT and by_host["other.example"].tls
    assert by_host["plain.example"].cert == render.DEFAULT_CERT and not by_host["plain.example"].tls
    assert all(loc.ssl_redirect for loc in by_host["a.example"].locations)
    assert not any(loc.ssl_redirect for loc in by_host["plain.example"].locations)
    assert not any(loc.ssl_redirect for loc in by_host["n.example"].locations)
    assert sorted(name for name, _ in p.certs) == sorted({by_host["a.example"].cert, by_host["x.w.example"].cert})


def test_secret_views_say_why_a_secret_cannot_serve():
    assert secret_view(tls_secret("ok", "a.example")).problem == ""
    assert secret_view(tls_secret("ok", "a.example")).names == ("a.example",)
    assert secret_view(tls_secret("bad", "a.example", broken=True)).problem == "tls.key does not match tls.crt"
    assert secret_view({"metadata": {"name": "x"}, "data": {"tls.crt": "eA=="}}).problem == "no tls.crt and tls.key"


def test_rendered_server_block():
    secret = tls_secret("a-tls", "a.example")
    p = plan(ing("web", rule("a.example", ("/foo", "Prefix", be("web"))),
                 tls=[{"hosts": ["a.example"], "secretName": "a-tls"}]), secrets=[secret])
    cert = f"/s/conf/{render.cert_file(secret_view(secret))}"
    conf = render.render_nginx_conf(p, render.Settings("/s", "/s/conf", 8080, 8443))
    assert f"""    upstream default-web-80 {{
        server 10.244.1.5:8080 max_fails=0;
        server 10.244.2.7:8080 max_fails=0;
        keepalive 32;
    }}
    server {{
        listen 8080 default_server;
        listen 8443 ssl default_server;
        server_name _;
        # default backend
        location / {{
            return 404;
        }}
    }}
    server {{
        listen 8080;
        listen 8443 ssl;
        server_name a.example;
        ssl_certificate {cert};
        ssl_certificate_key {cert};
        # default backend
        location / {{
            if ($scheme = http) {{ return 308 https://$host:8443$request_uri; }}
            return 404;
        }}
        # default/web /foo (Prefix)
        location = /foo {{
            if ($scheme = http) {{ return 308 https://$host:8443$request_uri; }}
            proxy_pass http://default-web-80;
        }}
        # default/web /foo (Prefix)
        location /foo/ {{
            if ($scheme = http) {{ return 308 https://$host:8443$request_uri; }}
            proxy_pass http://default-web-80;
        }}
    }}
}}
""" in conf
    for line in ("pid /s/nginx.pid;", "error_log /s/logs/error.log notice;"):
        assert f"\n{line}\n" in conf
    for line in ("proxy_temp_path /s/tmp/proxy;", "ssl_certificate /s/conf/certs/default.pem;",
                 "proxy_set_header X-Forwarded-For $remote_addr;", "proxy_set_header X-Real-IP $remote_addr;",
                 "proxy_set_header Host $best_http_host;", "proxy_set_header X-Forwarded-Proto $scheme;"):
        assert f"\n    {line}\n" in conf
    assert "user " not in conf


@pytest.mark.parametrize("host,want", [("*.example.com", r"~^(?<subdomain>[\w-]+)\.example\.com$"),
                                       ("*.my-site.io", r"~^(?<subdomain>[\w-]+)\.my-site\.io$"),
                                       ("a.example.com", "a.example.com")])
def test_wildcard_hosts_match_one_label(host, want):
    assert render.render_server_name(host) == want
    assert render.host_matches("*.example.com", "a.example.com")
    assert not render.host_matches("*.example.com", "a.b.example.com")
    assert not render.host_matches("*.example.com", "example.com")


def test_class_selection():
    classes = {c.name: c for c in (
        ingress_class_view({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
        ingress_class_view({"metadata": {"name": "other"}, "spec": {"controller": "example.com/lb"}}))}
    a = ing("a", cls="nginx")
    b = ing("b", cls="other")
    c = ing("c", cls=None, annotations={"kubernetes.io/ingress.class": "nginx"})
    d = ing("d", cls=None)
    e = ing("e", cls="absent")
    names = lambda got: [i.name for i in got]
    assert names(select_ingresses([a, b, c, d, e], classes, "nginx", "k8s.io/ingress-nginx")) == ["a", "c"]
    assert names(select_ingresses([a, b, c, d, e], classes, "nginx", "k8s.io/ingress-nginx",
                                  watch_without_class=True)) == ["a", "c", "d"]
    default = dict(classes, nginx=ingress_class_view({"metadata": {"name": "nginx", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}}, "spec": {"controller": "k8s.io/ingress-nginx"}}))
    assert names(select_ingresses([a, b, c, d, e], default, "nginx", "k8s.io/ingress-nginx")) == ["a", "c", "d"]


def test_status_addresses():
    lb = service_view({"metadata": {"namespace": "ingress-nginx", "name": "c"},
                       "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "externalIPs": ["192.0.2.9"]},
                       "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.3"}, {"hostname": "lb.example"}]}}})
    nodeport = service_view({"metadata": {"namespace": "ingress-nginx", "name": "c"},
                             "spec": {"type": "NodePort", "clusterIP": "10.96.0.9"}})
    assert status.plan_addresses(publish_service=lb) == (("", "lb.example"), ("192.0.2.9", ""), ("198.51.100.3", ""))
    assert status.plan_addresses(publish_service=nodeport) == (("10.96.0.9", ""),)
    assert status.plan_addresses("192.168.56.20, lb.example", lb) == (("", "lb.example"), ("192.168.56.20", ""))
    assert status.plan_addresses(node_address="192.168.56.11") == (("192.168.56.11", ""),)
    assert status.plan_addresses() == ()
    assert status.render_status_patch((("", "lb.example"), ("192.0.2.9", ""))) == {
        "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}, {"ip": "192.0.2.9"}]}}}
