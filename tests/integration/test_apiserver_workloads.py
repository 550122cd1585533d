"""apps/v1 at the API server alone (no nodes, no kubelets: pods stay Pending), through a real
kubectl: the scale subresource, validation messages, deletion propagation, evictions."""
from __future__ import annotations

import json
import os

import pytest

from .apiserver_proc import Server
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BAD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  selector: {matchLabels: {app: one}}
  template:
    metadata: {labels: {app: two}}
    spec: {containers: [{name: c, image: i}]}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("h1apps"), f"h1a{os.getpid()}")
    try:
        yield s
    finally:
        s.stop()


def get(server, *args) -> dict:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def test_scale_subresource_get_patch_and_kubectl_scale(server):
    server.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2")
    scale = get(server, "deployment", "web", "--subresource=scale")
    assert (scale["kind"], scale["apiVersion"], scale["spec"], scale["status"]["selector"]) == \
        ("Scale", "autoscaling/v1", {"replicas": 2}, "app=web")
    server.kubectl("patch", "deployment", "web", "--subresource=scale", "--type=merge",
                   "-p", '{"spec":{"replicas":4}}')
    wait_for("a ReplicaSet of 4", lambda: [r for r in get(server, "rs", "-l", "app=web")["items"]
                                             if r["spec"]["replicas"] == 4])
    assert len(get(server, "pods", "-l", "app=web")["items"]) == 4
    server.kubectl("scale", "deployment/web", "--replicas=1", "--current-replicas=4")
    stale = server.kubectl("scale", "deployment/web", "--replicas=3", "--current-replicas=4", check=False)
    assert stale.returncode != 0 and "Expected replicas to be 4, was 1" in stale.stderr
    wait_for("one pod left", lambda: len(get(server, "pods", "-l", "app=web")["items"]) == 1)
    server.kubectl("delete", "deployment", "web")


def test_invalid_deployment_is_refused_with_the_real_message(server):
    proc = server.kubectl("apply", "-f", "-", input=BAD, check=False)
    assert proc.returncode != 0
    assert ('The Deployment "bad" is invalid: spec.template.metadata.labels: Invalid value: {"app":"two"}: '
            "`selector` does not match template `labels`") in proc.stderr


def test_orphan_then_foreground_deletion(server):
    server.kubectl("create", "deployment", "keep", "--image=nginx", "--replicas=2")
    wait_for("pods of keep", lambda: len(get(server, "pods", "-l", "app=keep")["items"]) == 2)
    server.kubectl("delete", "deployment", "keep", "--cascade=orphan")
    rs = get(server, "rs", "-l", "app=keep")["items"]
    assert len(rs) == 1 and not rs[0]["metadata"].get("ownerReferences")
    # the same Deployment again adopts its old ReplicaSet: the pods stay the same
    pods = {p["metadata"]["name"] for p in get(server, "pods", "-l", "app=keep")["items"]}
    server.kubectl("create", "deployment", "keep", "--image=nginx", "--replicas=2")
    uid = get(server, "deployment", "keep")["metadata"]["uid"]
    wait_for("the ReplicaSet adopted", lambda: (get(server, "rs", "-l", "app=keep")["items"][0]["metadata"]
                                                  .get("ownerReferences") or [{}])[0].get("uid") == uid)
    assert {p["metadata"]["name"] for p in get(server, "pods", "-l", "app=keep")["items"]} == pods
    # unscheduled pods go at once, so a foreground deletion completes without a kubelet
    server.kubectl("delete", "deployment", "keep", "--cascade=foreground", "--timeout=20s", timeout=30)
    assert get(server, "rs", "-l", "app=keep")["items"] == []
    assert get(server, "pods", "-l", "app=keep")["items"] == []


def test_eviction_of_a_pod(server):
    server.kubectl("run", "victim", "--image=any")
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "victim", "namespace": "default"}}
    out = server.kubectl("create", "--raw", "/api/v1/namespaces/default/pods/victim/eviction", "-f", "-",
                         input=json.dumps(body)).stdout
    assert json.loads(out) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                               "code": 201}
    assert server.kubectl("get", "pod", "victim", check=False).returncode != 0
    body["metadata"]["name"] = "other"
    wrong = server.kubectl("create", "--raw", "/api/v1/namespaces/default/pods/nobody/eviction", "-f", "-",
                           input=json.dumps(body), check=False)
    assert "name in URL does not match name in Eviction object" in wrong.stderr
