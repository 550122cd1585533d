"""The lab API server as a process, driven by the real `kubernetes` client and a real kubectl.

No network namespace is made: without the lab's underlay netns the server listens on loopback
only. Every process started here is ended here, by PID.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
HISTORY = 40          # small, so that 410 Gone is reachable

from .apiserver_proc import Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]




@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("h1api")
    s = Server(tmp, f"h1t{os.getpid()}", history=HISTORY)
    try:
        yield s
    finally:
        rc = s.stop()
        assert rc == 0, "the API server did not exit cleanly on SIGTERM"


@pytest.fixture(scope="module")
def core(server):
    client = kubernetes.config.new_client_from_config(str(server.kubeconfig))
    try:
        yield kubernetes.client.CoreV1Api(client)
    finally:
        client.close()


def pod(name: str, labels: dict | None = None, node: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 8080}]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {"app": "h1"}}, "spec": spec}


def test_startup_files(server):
    assert server.ready["pid"] == server.proc.pid
    kc = yaml.safe_load(server.kubeconfig.read_text())
    assert kc["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{server.ready['port']}"
    nodes_kc = yaml.safe_load((server.state / "kubeconfig-nodes").read_text())
    assert nodes_kc["clusters"][0]["cluster"]["server"] == "https://192.168.56.1:6443"
    assert (server.state / "pki" / "token").read_text().strip() == kc["users"][0]["user"]["token"]


def test_rejects_missing_token(server):
    import ssl
    import urllib.error
    import urllib.request
    ctx = ssl.create_default_context(cafile=str(server.state / "pki" / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"https://127.0.0.1:{server.ready['port']}/api/v1/pods", context=ctx,
                               timeout=5)
    assert e.value.code == 401


def test_default_namespaces_and_list(core):
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public"} <= names
    core.create_namespaced_pod("default", pod("h1-list-a", {"app": "a", "tier": "x"}))
    core.create_namespaced_pod("default", pod("h1-list-b", {"app": "b"}, node="h1node"))
    try:
        pods = core.list_pod_for_all_namespaces(label_selector="app in (a,b),!tier")
        assert [p.metadata.name for p in pods.items] == ["h1-list-b"]
        pods = core.list_namespaced_pod("default", field_selector="spec.nodeName=h1node")
        assert [p.metadata.name for p in pods.items] == ["h1-list-b"]
        pods = core.list_namespaced_pod("default", field_selector="metadata.name!=h1-list-b",
                                        label_selector="app")
        assert [p.metadata.name for p in pods.items] == ["h1-list-a"]
        assert int(pods.metadata.resource_version) > 0
        # resourceVersionMatch and limit are accepted and do not break a list
        pods = core.list_namespaced_pod("default", resource_version="0",
                                        resource_version_match="NotOlderThan", limit=1)
        assert len(pods.items) >= 2
    finally:
        core.delete_namespaced_pod("h1-list-a", "default")
        core.delete_namespaced_pod("h1-list-b", "default", grace_period_seconds=0)


def _events(core, rv, names, timeout=2):
    w = kubernetes.watch.Watch()
    return [(ev["type"], ev["object"].metadata.name, int(ev["object"].metadata.resource_version))
            for ev in w.stream(core.list_namespaced_pod, "default", resource_version=rv,
                               timeout_seconds=timeout)
            if ev["object"].metadata.name in names]


def test_watch_survives_reconnect_without_loss_or_duplicates(core):
    names = {"h1-w1", "h1-w2"}
    start_rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", pod("h1-w1"))
    seen: list[tuple[str, str, int]] = []
    w = kubernetes.watch.Watch()
    for ev in w.stream(core.list_namespaced_pod, "default", resource_version=start_rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name, int(ev["object"].metadata.resource_version)))
        break                      # drop the connection after the first event
    w.stop()
    # changes while nobody watches
    core.patch_namespaced_pod("h1-w1", "default", {"metadata": {"labels": {"step": "2"}}})
    core.create_namespaced_pod("default", pod("h1-w2"))
    core.delete_namespaced_pod("h1-w1", "default")
    seen += _events(core, str(seen[-1][2]), names)
    # an uninterrupted watch over the same span is the reference (controllers may add events)
    reference = [e for e in _events(core, start_rv, names) if e[2] <= seen[-1][2]]
    assert seen == reference
    assert [(t, n) for t, n, _ in seen if t != "MODIFIED"] == [
        ("ADDED", "h1-w1"), ("ADDED", "h1-w2"), ("DELETED", "h1-w1")]
    assert ("MODIFIED", "h1-w1") in [(t, n) for t, n, _ in seen]
    rvs = [rv for _, _, rv in seen]
    assert rvs == sorted(set(rvs))           # strictly increasing: nothing twice
    core.delete_namespaced_pod("h1-w2", "default")


def test_watch_without_version_starts_with_current_objects_and_honours_selectors(core):
    core.create_namespaced_service("default", {"metadata": {"name": "h1-svc-a", "labels": {"k": "v"}},
                                               "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}})
    core.create_namespaced_service("default", {"metadata": {"name": "h1-svc-b"},
                                               "spec": {"ports": [{"port": 81}]}})
    try:
        w = kubernetes.watch.Watch()
        got = []
        for ev in w.stream(core.list_namespaced_service, "default", label_selector="k=v",
                           timeout_seconds=2):
            got.append((ev["type"], ev["object"].metadata.name))
        assert got == [("ADDED", "h1-svc-a")]
    finally:
        core.delete_namespaced_service("h1-svc-a", "default")
        core.delete_namespaced_service("h1-svc-b", "default")


def test_watch_bookmarks_arrive(core):
    rv = core.list_namespaced_pod("default").metadata.resource_version
    w = kubernetes.watch.Watch()
    types = []
    t0 = time.monotonic()
    for ev in w.stream(core.list_namespaced_pod, "default", resource_version=rv,
                       allow_watch_bookmarks=True, timeout_seconds=8):
        types.append(ev["type"])
        if ev["type"] == "BOOKMARK":
            assert int(ev["raw_object"]["metadata"]["resourceVersion"]) >= int(rv)
            w.stop()
    assert "BOOKMARK" in types
    assert time.monotonic() - t0 < 8


def test_too_old_version_gives_410_and_relist_recovers(core):
    first = core.create_namespaced_pod("default", pod("h1-old"))
    old_rv = first.metadata.resource_version
    for i in range(HISTORY + 5):          # push old_rv out of the server's history
        core.patch_namespaced_pod("h1-old", "default", {"metadata": {"labels": {"i": str(i)}}})
    w = kubernetes.watch.Watch()
    with pytest.raises(ApiException) as e:
        for _ in w.stream(core.list_namespaced_pod, "default", resource_version=old_rv, timeout_seconds=3):
            pass
    assert e.value.status == 410
    assert "Expired" in e.value.reason
    # the client's recovery: list again, watch from the list's version
    listed = core.list_namespaced_pod("default")
    assert [p.metadata.labels["i"] for p in listed.items if p.metadata.name == "h1-old"] == [str(HISTORY + 4)]
    core.delete_namespaced_pod("h1-old", "default")
    events = [(ev["type"], ev["object"].metadata.name) for ev in
              w.stream(core.list_namespaced_pod, "default",
                       resource_version=listed.metadata.resource_version, timeout_seconds=2)]
    assert events == [("DELETED", "h1-old")]


def test_scheduled_pod_is_deleted_gracefully(core):
    core.create_namespaced_pod("default", pod("h1-grace", node="h1node"))
    core.delete_namespaced_pod("h1-grace", "default")
    p = core.read_namespaced_pod("h1-grace", "default")
    assert p.metadata.deletion_timestamp is not None
    assert p.metadata.deletion_grace_period_seconds == 30
    core.delete_namespaced_pod("h1-grace", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("h1-grace", "default")
    assert e.value.status == 404


def test_status_subresource_changes_only_status(core):
    core.create_namespaced_pod("default", pod("h1-status"))
    try:
        core.patch_namespaced_pod_status("h1-status", "default",
                                         {"status": {"phase": "Running", "podIP": "10.244.1.5"},
                                          "metadata": {"labels": {"ignored": "yes"}}})
        p = core.read_namespaced_pod("h1-status", "default")
        assert (p.status.phase, p.status.pod_ip) == ("Running", "10.244.1.5")
        assert "ignored" not in p.metadata.labels
        # and a main-resource update does not change status
        core.patch_namespaced_pod("h1-status", "default", {"status": {"phase": "Failed"}})
        assert core.read_namespaced_pod("h1-status", "default").status.phase == "Running"
    finally:
        core.delete_namespaced_pod("h1-status", "default")


POD_YAML = """apiVersion: v1
kind: Pod
metadata:
  name: h1-kc
  labels: {app: kc}
spec:
  containers:
  - name: c
    image: busybox:1
    ports:
    - containerPort: 8080
"""

SVC_YAML = """apiVersion: v1
kind: Service
metadata:
  name: h1-kcsvc
spec:
  selector: {app: kc}
  ports:
  - port: 80
    targetPort: 8080
"""


def test_kubectl_pod_lifecycle(server):
    (server.root / "pod.yaml").write_text(POD_YAML)
    assert "pod/h1-kc created" in server.kubectl("apply", "-f", "pod.yaml").stdout
    (server.root / "pod.yaml").write_text(POD_YAML.replace("busybox:1", "busybox:2"))
    assert "pod/h1-kc configured" in server.kubectl("apply", "-f", "pod.yaml").stdout
    got = yaml.safe_load(server.kubectl("get", "pod", "h1-kc", "-o", "yaml").stdout)
    assert got["spec"]["containers"][0]["image"] == "busybox:2"
    assert got["spec"]["containers"][0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}] \
        or got["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080

    server.kubectl("label", "pod", "h1-kc", "tier=front")
    server.kubectl("patch", "pod", "h1-kc", "-p", '{"metadata":{"annotations":{"h1":"yes"}}}')
    server.kubectl("patch", "pod", "h1-kc", "--type=json",
                   "-p", '[{"op":"add","path":"/metadata/labels/j","value":"k"}]')
    server.kubectl("edit", "pod", "h1-kc", env={"KUBE_EDITOR": "sed -i s/tier:\\ front/tier:\\ back/"})
    labels = yaml.safe_load(server.kubectl("get", "pod", "h1-kc", "-o", "yaml").stdout)["metadata"]["labels"]
    assert labels == {"app": "kc", "tier": "back", "j": "k"}

    wide = server.kubectl("get", "pods", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert wide[1].split()[:3] == ["h1-kc", "0/1", "Pending"]
    described = server.kubectl("describe", "pod", "h1-kc").stdout
    assert "Name:" in described and "h1-kc" in described and "busybox:2" in described

    # kubectl get -w sees a change
    env = dict(os.environ, KUBECONFIG=str(server.kubeconfig), HOME=str(server.root))
    watcher = subprocess.Popen([str(KUBECTL), "get", "pods", "-w"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    try:
        time.sleep(1.5)
        server.kubectl("annotate", "pod", "h1-kc", "h1-watch=1")
        server.kubectl("delete", "pod", "h1-kc")
        time.sleep(1.0)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    rows = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert rows[0] == "NAME" and rows.count("h1-kc") >= 2, out
    assert "NotFound" in server.kubectl("get", "pod", "h1-kc", check=False).stderr


def test_kubectl_service_lifecycle(server):
    (server.root / "svc.yaml").write_text(SVC_YAML)
    server.kubectl("apply", "-f", "svc.yaml")
    (server.root / "svc.yaml").write_text(SVC_YAML.replace("port: 80", "port: 81"))
    server.kubectl("apply", "-f", "svc.yaml")
    got = yaml.safe_load(server.kubectl("get", "svc", "h1-kcsvc", "-o", "yaml").stdout)
    assert [p["port"] for p in got["spec"]["ports"]] == [81]
    server.kubectl("edit", "svc", "h1-kcsvc", env={"KUBE_EDITOR": "sed -i s/port:\\ 81/port:\\ 82/"})
    server.kubectl("label", "svc", "h1-kcsvc", "edited=yes")
    got = yaml.safe_load(server.kubectl("get", "svc", "h1-kcsvc", "-o", "yaml").stdout)
    assert [p["port"] for p in got["spec"]["ports"]] == [82] and got["metadata"]["labels"] == {"edited": "yes"}
    out = server.kubectl("create", "service", "clusterip", "h1-foo", "--tcp=80:8080").stdout
    assert "service/h1-foo created" in out
    table = server.kubectl("get", "svc", "-o", "wide").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]
    foo = next(line.split() for line in table if line.startswith("h1-foo "))
    assert foo[1] == "ClusterIP" and foo[4] == "80/TCP" and foo[6] == "app=h1-foo"
    assert "Selector:" in server.kubectl("describe", "svc", "h1-foo").stdout
    # kubectl's typed client sends these as protobuf
    server.kubectl("create", "service", "nodeport", "h1-np", "--tcp=81:8081")
    server.kubectl("create", "service", "loadbalancer", "h1-lb", "--tcp=82:8082")
    types = {s["metadata"]["name"]: s["spec"]["type"]
             for s in json.loads(server.kubectl("get", "svc", "-o", "json").stdout)["items"]}
    assert types["h1-np"] == "NodePort" and types["h1-lb"] == "LoadBalancer"
    server.kubectl("create", "namespace", "h1-team")
    assert "namespace/h1-team" in server.kubectl("get", "ns", "-o", "name").stdout
    server.kubectl("delete", "svc", "h1-foo", "h1-kcsvc", "h1-np", "h1-lb")
    server.kubectl("delete", "ns", "h1-team")
    left = server.kubectl("get", "svc").stdout
    assert "h1-foo" not in left and "h1-lb" not in left


def test_kubectl_prints_invalid_service(server):
    # the check itself is lab.admission's; the server turns it into a 422 Status kubectl prints
    (server.root / "big.yaml").write_text(SVC_YAML.replace("port: 80", "port: 70000")
                                          .replace("h1-kcsvc", "h1-big"))
    p = server.kubectl("apply", "-f", "big.yaml", check=False)
    assert p.returncode != 0
    assert 'The Service "h1-big" is invalid' in p.stderr and "spec.ports[0].port" in p.stderr


def test_kubectl_bad_input(server):
    (server.root / "strict.yaml").write_text(POD_YAML.replace("  containers:", "  foo: 1\n  containers:"))
    p = server.kubectl("apply", "-f", "strict.yaml", "--validate=strict", check=False)
    assert p.returncode != 0
    assert 'strict decoding error: unknown field "spec.foo"' in p.stderr
    p = server.kubectl("-n", "h1-nope", "create", "-f", "svc.yaml", check=False)
    assert p.returncode != 0 and 'namespaces "h1-nope" not found' in p.stderr
    (server.root / "mal.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  bad: [\n")
    p = server.kubectl("apply", "-f", "mal.yaml", check=False)
    assert p.returncode != 0 and "error converting YAML to JSON" in p.stderr
    (server.root / "name.yaml").write_text(POD_YAML.replace("name: h1-kc", "name: H1_bad"))
    p = server.kubectl("apply", "-f", "name.yaml", check=False)
    assert p.returncode != 0
    assert 'The Pod "H1_bad" is invalid: metadata.name: Invalid value: "H1_bad"' in p.stderr
    p = server.kubectl("get", "h1widgets", check=False)
    assert p.returncode != 0 and 'the server doesn\'t have a resource type "h1widgets"' in p.stderr
