"""apps/v1 in the API server: defaults and validation worded as kube-apiserver 1.35, the Table
columns kubectl shows, the scale subresource, and the protobuf body `kubectl create deployment`
sends (captured from kubectl 1.35)."""
import copy
import datetime
from pathlib import Path

import pytest
from kubeweft.lab import admission, errors
from kubeweft.lab.apiserver.protobuf import decode_object
from kubeweft.lab.apiserver.scale import apply_scale, render_scale
from kubeweft.lab.apiserver.tables import render_table
from kubeweft.lab.config import LabConfig
from kubeweft.lab.resources import DAEMONSETS as DS
from kubeweft.lab.resources import DEPLOYMENTS as DEP
from kubeweft.lab.resources import NAMESPACES as NS
from kubeweft.lab.resources import REPLICASETS as RS
from kubeweft.lab.store import Store

GOLDEN = Path(__file__).parent / "golden" / "protobuf"
CFG = LabConfig(name="h2")
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def deployment(**spec) -> dict:
    base = {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}, "creationTimestamp": None},
                         "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": {**base, **spec}}


def admit(resource, obj, old=None):
    s = Store()
    return admission.admit(s, CFG, resource, "UPDATE" if old else "CREATE", copy.deepcopy(obj), old)


def rejected(resource, obj, old=None) -> str:
    with pytest.raises(errors.APIError) as e:
        admit(resource, obj, old)
    assert e.value.code == 422
    return e.value.message


def test_deployment_defaults_as_the_real_server():
    spec = admit(DEP, deployment())["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    tmpl = spec["template"]
    assert "creationTimestamp" not in tmpl["metadata"]                 # kubectl rollout undo sends null
    assert tmpl["spec"]["restartPolicy"] == "Always" and tmpl["spec"]["terminationGracePeriodSeconds"] == 30
    assert tmpl["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    assert "tolerations" not in tmpl["spec"] and "enableServiceLinks" not in tmpl["spec"]   # pods only
    assert admit(DEP, deployment(strategy={"type": "Recreate"}))["spec"]["strategy"] == {"type": "Recreate"}
    ds = admit(DS, {"metadata": {"name": "a", "namespace": "default"}, "spec": deployment()["spec"]})
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert ds["metadata"]["annotations"] == {"deprecated.daemonset.template.generation": "1"}


def test_daemonset_template_generation_follows_template_changes():
    old = admit(DS, {"metadata": {"name": "a", "namespace": "default"}, "spec": deployment()["spec"]})
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"x": "y"}
    assert admit(DS, relabelled, old)["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "1"
    changed = copy.deepcopy(old)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    del changed["metadata"]["annotations"]
    assert admit(DS, changed, old)["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "2"


def test_validation_messages():
    bad = deployment(replicas=-1, selector={"matchLabels": {"app": "x"}})
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert rejected(DEP, bad) == (
        'Deployment.apps "web" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, '
        'spec.template.metadata.labels: Invalid value: {"app":"web"}: `selector` does not match template '
        '`labels`, spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"]')
    assert rejected(DEP, deployment(selector={})) == \
        'Deployment.apps "web" is invalid: spec.selector: Invalid value: {}: empty selector is invalid for deployment'
    no_sel = deployment()
    del no_sel["spec"]["selector"]
    assert rejected(RS, no_sel) == 'ReplicaSet.apps "web" is invalid: spec.selector: Required value'
    zero = deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})
    assert rejected(DEP, zero) == ('Deployment.apps "web" is invalid: spec.strategy.rollingUpdate.maxUnavailable: '
                                   'Invalid value: "0%": may not be 0 when `maxSurge` is 0')
    ds = {"metadata": {"name": "web", "namespace": "default"},
          "spec": dict(deployment()["spec"], updateStrategy={"type": "RollingUpdate", "rollingUpdate": {
              "maxSurge": 1, "maxUnavailable": 1}})}
    assert rejected(DS, ds) == ('DaemonSet.apps "web" is invalid: spec.updateStrategy.rollingUpdate.maxSurge: '
                                'Invalid value: 1: may not be set when maxUnavailable is non-zero')
    old = admit(DEP, deployment())
    moved = copy.deepcopy(old)
    moved["spec"]["selector"] = {"matchLabels": {"app": "web", "v": "2"}}
    moved["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    assert rejected(DEP, moved, old) == ('Deployment.apps "web" is invalid: spec.selector: Invalid value: '
                                         '{"matchLabels":{"app":"web","v":"2"}}: field is immutable')


def test_tables_show_kubectls_columns():
    d = admit(DEP, deployment(replicas=3))
    d["metadata"]["creationTimestamp"] = "2026-01-01T11:55:00Z"
    d["status"] = {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    t = render_table("Deployment", [d], NOW, "1")
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Ready", "Up-to-date", "Available", "Age",
                                                           "Containers", "Images", "Selector"]
    assert t["rows"][0]["cells"] == ["web", "2/3", 3, 2, "5m", "nginx", "nginx", "app=web"]
    ds = dict(d, kind="DaemonSet", status={"desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                                            "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1})
    ds["spec"] = dict(d["spec"], template=dict(d["spec"]["template"], spec=dict(
        d["spec"]["template"]["spec"], nodeSelector={"b": "2", "a": "1"})))
    row = render_table("DaemonSet", [ds], NOW, "1")["rows"][0]["cells"]
    assert row[:8] == ["web", 2, 2, 1, 2, 1, "a=1,b=2", "5m"]
    rs = dict(d, status={"replicas": 3, "readyReplicas": 1})
    assert render_table("ReplicaSet", [rs], NOW, "1")["rows"][0]["cells"][:5] == ["web", 3, 3, 1, "5m"]
    rev = {"metadata": {"name": "a-1", "creationTimestamp": "2026-01-01T11:55:00Z", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "a", "controller": True}]}, "revision": 2}
    assert render_table("ControllerRevision", [rev], NOW, "1")["rows"][0]["cells"] == \
        ["a-1", "daemonset.apps/a", 2, "5m"]


def test_scale_subresource():
    d = admit(DEP, deployment(replicas=3))
    d["metadata"].update(uid="u1", resourceVersion="7")
    d["status"] = {"replicas": 2}
    scale = render_scale(d)
    assert scale == {"kind": "Scale", "apiVersion": "autoscaling/v1",
                     "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7"},
                     "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}}
    new = apply_scale(d, dict(scale, spec={"replicas": 5}))
    assert new["spec"]["replicas"] == 5 and new["metadata"]["resourceVersion"] == "7"
    assert d["spec"]["replicas"] == 3
    with pytest.raises(errors.APIError) as e:
        apply_scale(d, dict(scale, spec={"replicas": -1}))
    assert e.value.message == ('Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: -1: '
                               'must be greater than or equal to 0')


def test_kubectl_create_deployment_protobuf_body():
    # kubectl 1.35: create deployment web --image=nginx --replicas=3 --port=8080 -- sleep 100
    obj = decode_object((GOLDEN / "create-deployment.pb").read_bytes())
    assert obj == {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                                                  "command": ["sleep", "100"],
                                                                  "ports": [{"containerPort": 8080}]}]}}}}


def test_workload_created_through_admission_into_a_store():
    s = Store()
    s.create(NS, admission.admit(s, CFG, NS, "CREATE", {"metadata": {"name": "default"}}, None))
    made = s.create(DEP, admission.admit(s, CFG, DEP, "CREATE", deployment(), None))
    assert made["apiVersion"] == "apps/v1" and made["kind"] == "Deployment" and made["metadata"]["generation"] == 1
