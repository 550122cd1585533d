"""PATCH: JSON patch, merge patch and the strategic merge kubectl's apply/edit/label send."""
import copy
import json

import pytest
from kubeweft.lab import errors
from kubeweft.lab.apiserver.patch import apply_patch, merge_patch, strategic_merge

POD = {
    "metadata": {"name": "p", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a"]},
    "spec": {
        "containers": [
            {"name": "c1", "image": "img:1", "ports": [{"containerPort": 80, "protocol": "TCP"},
                                                      {"containerPort": 53, "protocol": "UDP"}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
             "args": ["x", "y"]},
            {"name": "c2", "image": "side:1"},
        ],
        "volumes": [{"name": "v1", "emptyDir": {}}],
    },
    "status": {"conditions": [{"type": "Ready", "status": "False"},
                              {"type": "PodScheduled", "status": "True"}]},
}


def test_inputs_are_not_changed():
    before = copy.deepcopy(POD)
    strategic_merge(POD, {"spec": {"containers": [{"name": "c1", "image": "img:2"}]}})
    merge_patch(POD, {"metadata": {"labels": {"app": None}}})
    assert POD == before


def test_containers_merge_by_name():
    out = strategic_merge(POD, {"spec": {"$setElementOrder/containers": [{"name": "c1"}, {"name": "c2"}],
                                         "containers": [{"name": "c2", "image": "side:2"}]}})
    cs = out["spec"]["containers"]
    assert [c["name"] for c in cs] == ["c1", "c2"]
    assert cs[0] == POD["spec"]["containers"][0]
    assert cs[1]["image"] == "side:2"


def test_new_list_item_is_appended_and_directives_stripped():
    out = strategic_merge(POD, {"spec": {"containers": [{"name": "c3", "image": "new",
                                                         "$setElementOrder/ports": []}]}})
    assert out["spec"]["containers"][-1] == {"name": "c3", "image": "new"}


def test_ports_merge_by_port_and_protocol():
    out = strategic_merge(POD, {"spec": {"containers": [
        {"name": "c1", "ports": [{"containerPort": 53, "protocol": "UDP", "name": "dns"},
                                 {"containerPort": 53, "protocol": "TCP"}]}]}})
    ports = out["spec"]["containers"][0]["ports"]
    assert ports == [{"containerPort": 80, "protocol": "TCP"},
                     {"containerPort": 53, "protocol": "UDP", "name": "dns"},
                     {"containerPort": 53, "protocol": "TCP"}]


def test_service_ports_merge_by_port_with_default_protocol():
    svc = {"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}}
    out = strategic_merge(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}})
    assert out["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 9090}]


def test_env_and_conditions_merge_by_key():
    out = strategic_merge(POD, {"spec": {"containers": [{"name": "c1", "env": [{"name": "B", "value": "3"}]}]},
                                "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert out["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"},
                                           {"type": "PodScheduled", "status": "True"}]


def test_delete_directive_removes_list_item():
    out = strategic_merge(POD, {"spec": {"containers": [{"name": "c2", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["c1"]


def test_replace_directive_on_map_and_list():
    out = strategic_merge(POD, {"metadata": {"labels": {"$patch": "replace", "only": "me"}}})
    assert out["metadata"]["labels"] == {"only": "me"}
    out = strategic_merge(POD, {"spec": {"volumes": [{"name": "v9"}, {"$patch": "replace"}]}})
    assert out["spec"]["volumes"] == [{"name": "v9"}]


def test_null_deletes_and_lists_without_key_are_replaced():
    out = strategic_merge(POD, {"metadata": {"labels": {"tier": None}},
                                "spec": {"containers": [{"name": "c1", "args": ["z"]}]}})
    assert out["metadata"]["labels"] == {"app": "web"}
    assert out["spec"]["containers"][0]["args"] == ["z"]


def test_primitive_merge_and_delete_from_primitive_list():
    out = strategic_merge(POD, {"metadata": {"finalizers": ["b"]}})
    assert out["metadata"]["finalizers"] == ["a", "b"]
    out = strategic_merge(out, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert out["metadata"]["finalizers"] == ["b"]


def test_retain_keys_is_ignored():
    out = strategic_merge(POD, {"spec": {"$retainKeys": ["containers"], "hostname": "h"}})
    assert out["spec"]["hostname"] == "h" and "volumes" in out["spec"]


def test_merge_patch_replaces_lists():
    out = merge_patch(POD, {"spec": {"containers": [{"name": "only"}]}, "metadata": {"labels": {"app": None}}})
    assert out["spec"]["containers"] == [{"name": "only"}]
    assert out["metadata"]["labels"] == {"tier": "front"}


def test_apply_patch_by_content_type():
    body = json.dumps([{"op": "replace", "path": "/metadata/labels/app", "value": "db"},
                       {"op": "remove", "path": "/spec/volumes/0"}]).encode()
    out = apply_patch("application/json-patch+json", POD, body)
    assert out["metadata"]["labels"]["app"] == "db" and out["spec"]["volumes"] == []
    out = apply_patch("application/merge-patch+json; charset=utf-8", POD, b'{"metadata":{"labels":null}}')
    assert "labels" not in out["metadata"]
    out = apply_patch("application/strategic-merge-patch+json", POD, b'{"metadata":{"labels":{"x":"y"}}}')
    assert out["metadata"]["labels"] == {"app": "web", "tier": "front", "x": "y"}


def test_bad_patches():
    with pytest.raises(errors.APIError) as e:
        apply_patch("application/apply-patch+yaml", POD, b"{}")
    assert e.value.code == 415
    with pytest.raises(errors.APIError) as e:
        apply_patch("application/json-patch+json", POD, b'[{"op":"test","path":"/metadata/name","value":"q"}]')
    assert e.value.code == 422
    with pytest.raises(errors.APIError) as e:
        apply_patch("application/merge-patch+json", POD, b"{nope")
    assert e.value.code == 400
