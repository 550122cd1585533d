"""What clients see of the lab, on the real 2-node reference lab (`lab2`): the kubernetes
client watches through a restart of its connection; a real kubectl creates, applies, edits and
deletes Pods and Services; EndpointSlices follow pod readiness and deletion."""
from __future__ import annotations

import json
import os
import subprocess

import kubernetes
import pytest

from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "lead-clients"

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: lead-clients
  labels: {{app: web, tier: "{tier}"}}
spec:
  nodeName: {node}
  containers:
  - name: app
    image: lab
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /ready, port: http}}
      periodSeconds: 1
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: lead-clients}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


@pytest.fixture(scope="module")
def ns(lab2):
    lab2.kubectl("create", "namespace", NS)
    try:
        yield lab2
    finally:
        lab2.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def slice_endpoints(lab) -> dict[str, dict]:
    out = lab.kubectl("get", "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=web",
                      "-o", "json").stdout
    return {ep["targetRef"]["name"]: ep["conditions"]
            for s in json.loads(out)["items"] for ep in s.get("endpoints") or []}


def test_kubectl_lifecycle_and_slices_follow_readiness_and_deletion(ns):
    lab = ns
    lab.kubectl("apply", "-f", "-", input=POD.format(name="web-1", tier="a", node="node1"))
    lab.kubectl("apply", "-f", "-", input=POD.format(name="web-2", tier="a", node="node2"))
    lab.kubectl("apply", "-f", "-", input=SERVICE)
    wait_for("both endpoints ready", lambda: {k: v["ready"] for k, v in slice_endpoints(lab).items()}
             == {"web-1": True, "web-2": True})

    # apply again with a change (a 3-way strategic merge on the server), then edit through an editor
    lab.kubectl("apply", "-f", "-", input=POD.format(name="web-1", tier="b", node="node1"))
    assert lab.kubectl("get", "pod", "web-1", "-n", NS, "-o", "jsonpath={.metadata.labels.tier}").stdout == "b"
    editor = "sed -i 's/port: 80$/port: 8081/' "
    env_editor = dict(os.environ, KUBE_EDITOR=editor, KUBECONFIG=str(lab.kubeconfig))
    subprocess.run([lab.kubectl_path, "edit", "service", "web", "-n", NS], env=env_editor, check=True,
                   capture_output=True, timeout=60)
    assert lab.kubectl("get", "svc", "web", "-n", NS, "-o", "jsonpath={.spec.ports[0].port}").stdout == "8081"

    # readiness: web-2's workload reports not ready; its endpoint follows, and comes back
    web2_ip = lab.kubectl("get", "pod", "web-2", "-n", NS, "-o", "jsonpath={.status.podIP}").stdout
    assert lab.cli("probe", "--from", "node:node2", f"{web2_ip}:8080", "--json").returncode == 0
    toggle = ["python3", "-c", "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)"]
    assert lab.run_in(lab.cfg.node_netns("node2"), [*toggle, f"http://{web2_ip}:8080/ready/off"]).returncode == 0
    wait_for("web-2 not ready in its slice",
             lambda: slice_endpoints(lab).get("web-2", {}).get("ready") is False, 20)
    assert slice_endpoints(lab)["web-2"]["serving"] is False
    assert lab.run_in(lab.cfg.node_netns("node2"), [*toggle, f"http://{web2_ip}:8080/ready/on"]).returncode == 0
    wait_for("web-2 ready again", lambda: slice_endpoints(lab).get("web-2", {}).get("ready") is True, 20)

    # deletion: the endpoint goes (after terminating), then the pod object
    lab.kubectl("delete", "pod", "web-2", "-n", NS, "--grace-period=1", "--wait=true", timeout=90)
    wait_for("web-2 gone from the slice", lambda: "web-2" not in slice_endpoints(lab), 20)
    lab.kubectl("delete", "-f", "-", input=SERVICE)
    assert lab.kubectl("get", "svc", "web", "-n", NS, check=False).returncode != 0
    lab.kubectl("delete", "pod", "web-1", "-n", NS, "--grace-period=1", timeout=90)


def test_client_watch_survives_a_connection_restart(ns):
    lab = ns
    with lab.client() as api:
        core = kubernetes.client.CoreV1Api(api)
        start = core.list_namespaced_service(NS).metadata.resource_version
        core.create_namespaced_service(NS, {"metadata": {"name": "w1"}, "spec": {"ports": [{"port": 80}]}})
        seen = []
        w = kubernetes.watch.Watch()
        for ev in w.stream(core.list_namespaced_service, NS, resource_version=start, timeout_seconds=10):
            seen.append((ev["type"], ev["object"].metadata.name))
            last_rv = ev["object"].metadata.resource_version
            break                                  # the connection ends here
        w.stop()
        core.patch_namespaced_service("w1", NS, {"metadata": {"labels": {"x": "1"}}})
        core.create_namespaced_service(NS, {"metadata": {"name": "w2"}, "spec": {"ports": [{"port": 81}]}})
        core.delete_namespaced_service("w1", NS)
        w = kubernetes.watch.Watch()
        for ev in w.stream(core.list_namespaced_service, NS, resource_version=last_rv, timeout_seconds=5):
            seen.append((ev["type"], ev["object"].metadata.name))
            if len(seen) == 4:
                break
        w.stop()
        assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("ADDED", "w2"), ("DELETED", "w1")]
        core.delete_namespaced_service("w2", NS)
