"""networking.k8s.io/v1 Ingress and IngressClass in the lab's API server: admission (the default
class, validation worded as the real server), Table rows as kubectl prints them, and the protobuf
body of `kubectl create ingress`."""
import datetime

import pytest
from kubeweft.lab import admission, errors
from kubeweft.lab.apiserver.protobuf import decode_object
from kubeweft.lab.apiserver.tables import render_table
from kubeweft.lab.config import LabConfig
from kubeweft.lab.resources import INGRESS_CLASSES, INGRESSES, NAMESPACES
from kubeweft.lab.store import Store

from .test_apiserver_protobuf import envelope, i, ld, s

CFG = LabConfig(name="h4")
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T0 = "2026-01-01T11:55:00Z"


@pytest.fixture
def store() -> Store:
    st = Store()
    st.create(NAMESPACES, admission.admit(st, CFG, NAMESPACES, "CREATE", {"metadata": {"name": "default"}}, None))
    return st


def ingress(name: str, **spec) -> dict:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def backend(name: str = "web", port: dict | None = None) -> dict:
    return {"service": {"name": name, "port": {"number": 80} if port is None else port}}


def rule(host: str = "", *paths: dict) -> dict:
    out: dict = {"http": {"paths": list(paths) or [{"path": "/", "pathType": "Prefix", "backend": backend()}]}}
    if host:
        out["host"] = host
    return out


def ingress_class(name: str, created: str, default: bool) -> dict:
    meta = {"name": name, "creationTimestamp": created}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {"metadata": meta, "spec": {"controller": "k8s.io/ingress-nginx"}}


def admit(st: Store, obj: dict, resource=INGRESSES, old: dict | None = None, sub: str | None = None) -> dict:
    return admission.admit(st, CFG, resource, "UPDATE" if old else "CREATE", obj, old, sub)


def messages(st: Store, obj: dict, resource=INGRESSES, old: dict | None = None) -> list[str]:
    with pytest.raises(errors.APIError) as e:
        admit(st, obj, resource, old)
    assert e.value.code == 422
    return [f"{c['field']}: {c['message']}" for c in e.value.details["causes"]]


def test_common_mistakes_are_worded_as_the_real_server(store):
    bad = ingress("bad", rules=[rule("1.2.3.4",
                                     {"path": "api", "pathType": "Prefix", "backend": backend("Web")},
                                     {"path": "/x", "backend": backend()},
                                     {"path": "/a//b", "pathType": "Exact", "backend": backend(port={})},
                                     {"path": "/y", "pathType": "Regex", "backend": backend(port={"number": 0,
                                                                                                  "name": "HTTP"})},
                                     {"path": "/z/..", "pathType": "Prefix",
                                      "backend": backend(port={"number": 70000})})])
    p = "spec.rules[0].http.paths"
    assert messages(store, bad) == [
        'spec.rules[0].host: Invalid value: "1.2.3.4": must be a DNS name, not an IP address',
        f'{p}[0].path: Invalid value: "api": must be an absolute path',
        (f'{p}[0].backend.service.name: Invalid value: "Web": a DNS-1035 label must consist of lower case '
        "alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric "
        "character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
        f"{p}[1].pathType: Required value: pathType must be specified",
        f"{p}[2].path: Invalid value: \"/a//b\": must not contain '//'",
        f"{p}[2].backend: Required value: port name or number is required",
        (f'{p}[3].pathType: Unsupported value: "Regex": supported values: "Exact", "ImplementationSpecific", '
        '"Prefix"'),
        (f'{p}[3].backend.service.port.name: Invalid value: "HTTP": must contain only alpha-numeric characters '
        "(a-z, 0-9), and hyphens (-)"),
        f"{p}[4].path: Invalid value: \"/z/..\": cannot end with '/..'",
        f"{p}[4].backend.service.port.number: Invalid value: 70000: must be between 1 and 65535, inclusive",
    ]


def test_spec_needs_rules_or_a_default_backend_and_one_kind_of_backend(store):
    assert messages(store, ingress("empty")) == [
        "spec: Invalid value: null: either `defaultBackend` or `rules` must be specified"]
    both = {"service": {"name": "web", "port": {"number": 80}}, "resource": {"kind": "Bucket", "name": "b"}}
    assert messages(store, ingress("both", defaultBackend=both)) == [
        'spec.defaultBackend: Invalid value: "": cannot set both resource and service backends']
    assert messages(store, ingress("two", defaultBackend=backend(port={"number": 80, "name": "http"}))) == [
        'spec.defaultBackend: Invalid value: "": cannot set both port name & port number']
    tls = ingress("tls", defaultBackend=backend(), tls=[{"hosts": ["*.ok.example", "a.*.bad"],
                                                          "secretName": "Bad_Name"}])
    out = messages(store, tls)
    assert out[0].startswith('spec.tls[0].hosts[1]: Invalid value: "a.*.bad": a wildcard DNS-1123 subdomain')
    assert out[1].startswith('spec.tls[0].secretName: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain')
    assert len(out) == 2


def test_class_annotation_must_match_the_field_on_create_only(store):
    ing = ingress("a", ingressClassName="nginx", defaultBackend=backend())
    ing["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "other"}
    assert messages(store, ing) == [('annotations.kubernetes.io/ingress.class: Invalid value: "other": must match '
                                    "`ingressClassName` when both are specified")]
    old = ingress("a", ingressClassName="nginx", defaultBackend=backend())
    assert admit(store, ing, old=old)["spec"]["ingressClassName"] == "nginx"


def test_default_class_is_the_newest_annotated_one_and_only_on_create(store):
    assert "ingressClassName" not in admit(store, ingress("none", defaultBackend=backend()))["spec"]
    for ic in (ingress_class("old", "2026-01-01T10:00:00Z", True), ingress_class("plain", "2026-01-01T12:00:00Z", False),
               ingress_class("newb", "2026-01-01T11:00:00Z", True), ingress_class("newa", "2026-01-01T11:00:00Z", True)):
        store.create(INGRESS_CLASSES, ic)
        # the store stamps its own creation time: put the test's back
        stored = store.get(INGRESS_CLASSES, "", ic["metadata"]["name"])
        stored["metadata"]["creationTimestamp"] = ic["metadata"]["creationTimestamp"]
    got = admit(store, ingress("a", defaultBackend=backend()))
    assert got["spec"]["ingressClassName"] == "newa"       # newest; on a tie the first name
    named = ingress("b", defaultBackend=backend())
    named["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "legacy"}
    assert "ingressClassName" not in admit(store, named)["spec"]
    old = ingress("c", defaultBackend=backend())
    assert "ingressClassName" not in admit(store, ingress("c", defaultBackend=backend()), old=old)["spec"]


def test_status_writes_check_the_load_balancer_addresses(store):
    ing = ingress("a", defaultBackend=backend())
    ing["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.56.20"}, {"hostname": "10.0.0.1"}]}}
    with pytest.raises(errors.APIError) as e:
        admit(store, ing, old=ingress("a", defaultBackend=backend()), sub="status")
    assert [c["message"] for c in e.value.details["causes"]] == [
        'Invalid value: "10.0.0.1": must be a DNS name, not an IP address']


def test_ingress_class_controller_and_parameters(store):
    ic = {"metadata": {"name": "nginx"}, "spec": {"controller": "nginx", "parameters": {"kind": "Cfg", "name": "x",
                                                                                        "scope": "Namespace"}}}
    assert messages(store, ic, INGRESS_CLASSES) == [
        'spec.controller: Invalid value: "nginx": must be a domain-prefixed path (such as "acme.io/foo")',
        "spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'"]
    ok = {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
    assert admit(store, ok, INGRESS_CLASSES) == ok
    moved = {"metadata": {"name": "nginx"}, "spec": {"controller": "example.com/other"}}
    assert messages(store, moved, INGRESS_CLASSES, old=ok) == [
        'spec.controller: Invalid value: "example.com/other": field is immutable']


def test_tables_as_kubectl_get_prints_them():
    ing = {"metadata": {"name": "web", "creationTimestamp": T0},
           "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example"], "secretName": "s"}],
                    "rules": [rule("a.example"), rule(), rule("b.example"), rule("c.example"), rule("d.example")]},
           "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"hostname": "lb.example"},
                                                   {"ip": "198.51.100.2"}]}}}
    plain = {"metadata": {"name": "plain", "creationTimestamp": T0}, "spec": {"defaultBackend": backend()}}
    t = render_table("Ingress", [ing, plain], NOW, "3")
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Class", "Hosts", "Address", "Ports", "Age"]
    assert [r["cells"] for r in t["rows"]] == [
        ["web", "nginx", "a.example,b.example,c.example + 2 more...", "198.51.100.2,198.51.100.7,lb.example",
         "80, 443", "5m"],
        ["plain", "<none>", "*", "", "80", "5m"]]
    classes = [{"metadata": {"name": "nginx", "creationTimestamp": T0}, "spec": {"controller": "k8s.io/ingress-nginx"}},
               {"metadata": {"name": "p", "creationTimestamp": T0},
                "spec": {"controller": "example.com/lb", "parameters": {"apiGroup": "k8s.example.com",
                                                                        "kind": "IngressParameters", "name": "x"}}}]
    t = render_table("IngressClass", classes, NOW, "3")
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Controller", "Parameters", "Age"]
    assert [r["cells"] for r in t["rows"]] == [["nginx", "k8s.io/ingress-nginx", "<none>", "5m"],
                                               ["p", "example.com/lb", "IngressParameters.k8s.example.com/x", "5m"]]


def test_kubectl_create_ingress_protobuf_body():
    """kubectl create ingress web --class=nginx --rule=foo.com/bar*=svc1:8080,tls=my-cert
    --default-backend=svc2:http, field by field."""
    port = lambda number=0, name="": ld(2, (s(1, name) if name else b"") + (i(2, number) if number else b""))
    svc = lambda name, p: ld(4, s(1, name) + p)
    path = ld(1, s(1, "/bar") + ld(2, svc("svc1", port(8080))) + s(3, "Prefix"))
    spec = (ld(1, svc("svc2", port(name="http"))) + ld(2, s(1, "foo.com") + s(2, "my-cert"))
            + ld(3, s(1, "foo.com") + ld(2, ld(1, path))) + s(4, "nginx"))
    obj = decode_object(envelope("networking.k8s.io/v1", "Ingress", ld(1, s(1, "web")) + ld(2, spec)))
    assert obj == {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
                   "spec": {"defaultBackend": {"service": {"name": "svc2", "port": {"name": "http"}}},
                            "tls": [{"hosts": ["foo.com"], "secretName": "my-cert"}],
                            "rules": [{"host": "foo.com", "http": {"paths": [
                                {"path": "/bar", "backend": {"service": {"name": "svc1", "port": {"number": 8080}}},
                                 "pathType": "Prefix"}]}}],
                            "ingressClassName": "nginx"}}
