"""ConfigMap and Secret admission, Endpoints planned from EndpointSlices, and the tables kubectl
prints for them. Pure."""
from __future__ import annotations

import base64
import datetime

import pytest
from kubeweft.lab.admission import configs
from kubeweft.lab.apiserver.tables import format_endpoints, render_table
from kubeweft.lab.controllers.endpoints import plan_endpoints, plan_subsets
from kubeweft.lab.errors import APIError


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_secret_string_data_is_merged_as_base64_and_dropped():
    s = configs.admit_secret({"metadata": {"name": "s"}, "data": {"a": b64("old"), "b": b64("keep")},
                              "stringData": {"a": "new", "c": "ü"}}, None)
    assert s["type"] == "Opaque" and "stringData" not in s
    assert {k: base64.b64decode(v).decode() for k, v in s["data"].items()} == {"a": "new", "b": "keep", "c": "ü"}


def test_secret_data_must_be_base64():
    with pytest.raises(APIError) as e:
        configs.admit_secret({"metadata": {"name": "s"}, "data": {"a": "not base64!"}}, None)
    assert e.value.code == 400
    assert "illegal base64 data at input byte 3" in e.value.message


def test_secret_types_and_updates():
    with pytest.raises(APIError) as e:
        configs.admit_secret({"metadata": {"name": "t"}, "type": "kubernetes.io/tls",
                              "data": {"tls.crt": b64("c")}}, None)
    assert e.value.message == 'Secret "t" is invalid: data[tls.key]: Required value'
    old = configs.admit_secret({"metadata": {"name": "s"}, "data": {"a": b64("1")}}, None)
    with pytest.raises(APIError) as e:
        configs.admit_secret({"metadata": {"name": "s"}, "type": "other", "data": {"a": b64("1")}}, old)
    assert 'type: Invalid value: "other": field is immutable' in e.value.message


def test_config_map_keys_and_immutability():
    with pytest.raises(APIError) as e:
        configs.admit_config_map({"metadata": {"name": "c"}, "data": {"a b": "x"}}, None)
    assert e.value.message.startswith('ConfigMap "c" is invalid: data[a b]: Invalid value: "a b": a valid config '
                                      "key must consist of alphanumeric characters")
    old = {"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": True}
    configs.admit_config_map({"metadata": {"name": "c", "labels": {"x": "y"}}, "data": {"a": "1"},
                              "immutable": True}, old)
    with pytest.raises(APIError) as e:
        configs.admit_config_map({"metadata": {"name": "c"}, "data": {"a": "2"}, "immutable": True}, old)
    assert "data: Forbidden: field is immutable when `immutable` is set" in e.value.message


def endpoint(ip, pod, ready=True, terminating=False, node="node1"):
    return {"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": ready, "terminating": terminating},
            "targetRef": {"kind": "Pod", "namespace": "team", "name": pod, "uid": f"uid-{pod}"}}


def test_endpoints_follow_slices():
    slices = [
        {"addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
         "endpoints": [endpoint("10.0.0.9", "c"), endpoint("10.0.0.2", "a"), endpoint("10.0.0.3", "b", ready=False),
                       endpoint("10.0.0.4", "d", ready=False, terminating=True)]},
        {"addressType": "IPv4", "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}],
         "endpoints": [endpoint("10.0.0.5", "e")]},
        {"addressType": "IPv4", "endpoints": []},                      # the placeholder of an empty Service
    ]
    subsets = plan_subsets(slices)
    assert subsets == [
        {"addresses": [{"ip": "10.0.0.2", "nodeName": "node1",
                        "targetRef": {"kind": "Pod", "namespace": "team", "name": "a", "uid": "uid-a"}},
                       {"ip": "10.0.0.9", "nodeName": "node1",
                        "targetRef": {"kind": "Pod", "namespace": "team", "name": "c", "uid": "uid-c"}}],
         "notReadyAddresses": [{"ip": "10.0.0.3", "nodeName": "node1",
                                "targetRef": {"kind": "Pod", "namespace": "team", "name": "b", "uid": "uid-b"}}],
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.0.0.5", "nodeName": "node1",
                        "targetRef": {"kind": "Pod", "namespace": "team", "name": "e", "uid": "uid-e"}}],
         "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}]},
    ]
    assert format_endpoints(subsets) == "10.0.0.2:8080,10.0.0.9:8080,10.0.0.5:9090"
    svc = {"metadata": {"name": "web", "namespace": "team", "labels": {"app": "web"}},
           "spec": {"clusterIP": "None", "selector": {"app": "web"}}}
    ep = plan_endpoints(svc, [slices[2]])
    assert ep["metadata"]["labels"] == {"app": "web", "service.kubernetes.io/headless": "",
                                        "endpointslice.kubernetes.io/skip-mirror": "true"}
    assert "subsets" not in ep


def test_endpoints_carry_the_service_primary_family():
    slices = [{"addressType": "IPv4", "endpoints": [endpoint("10.0.0.2", "a")]},
              {"addressType": "IPv6", "endpoints": [endpoint("fd00::2", "a")]}]
    meta = {"name": "web", "namespace": "team"}
    for fams, want in ((["IPv6", "IPv4"], "fd00::2"), (["IPv4", "IPv6"], "10.0.0.2"), (["IPv6"], "fd00::2")):
        ep = plan_endpoints({"metadata": meta, "spec": {"ipFamilies": fams, "selector": {"a": "b"}}}, slices)
        assert [a["ip"] for s in ep["subsets"] for a in s["addresses"]] == [want]


def test_tables_of_the_new_kinds():
    now = datetime.datetime(2026, 1, 1, 0, 1, 0, tzinfo=datetime.UTC)
    meta = {"name": "x", "namespace": "team", "creationTimestamp": "2026-01-01T00:00:00Z"}
    many = [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(5)], "ports": [{"port": 80}]}]
    cases = {
        "ConfigMap": ({"metadata": meta, "data": {"a": "1"}, "binaryData": {"b": "AA=="}}, ["x", 2, "60s"]),
        "Secret": ({"metadata": meta, "type": "Opaque", "data": {"a": "MQ=="}}, ["x", "Opaque", 1, "60s"]),
        "ServiceAccount": ({"metadata": meta}, ["x", 0, "60s"]),
        "Endpoints": ({"metadata": meta, "subsets": many}, ["x", "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 2 more...",
                                                            "60s"]),
        "Role": ({"metadata": meta}, ["x", "2026-01-01T00:00:00Z"]),
        "RoleBinding": ({"metadata": meta, "roleRef": {"kind": "ClusterRole", "name": "view"},
                         "subjects": [{"kind": "ServiceAccount", "name": "r", "namespace": "team"},
                                      {"kind": "User", "name": "bob"}]},
                        ["x", "ClusterRole/view", "60s", "bob", "", "team/r"]),
        "Lease": ({"metadata": meta, "spec": {"holderIdentity": "node1"}}, ["x", "node1", "60s"]),
    }
    for kind, (obj, cells) in cases.items():
        table = render_table(kind, [obj], now, "1")
        assert table["rows"][0]["cells"] == cells, kind
        assert len(table["columnDefinitions"]) == len(cells), kind
