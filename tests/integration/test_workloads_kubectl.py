"""Deployments, ReplicaSets, DaemonSets, garbage collection, cordon and drain, driven through the
real kubectl 1.35 against one 2-node lab with kubeweft's CNI and service proxy (so Services
answer), shared by the tests of this module. Each test makes and removes its own objects."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from .conftest import KUBEWEFT, fresh_lab, unique_lab_name
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SUFFIX = "[bcdfghjklmnpqrstvwxz2456789]"
DS_YAML = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: agent, image: "lab:1"}}]
"""


@pytest.fixture(scope="module")
def lab():
    with fresh_lab(unique_lab_name(), nodes=2, cni="kubeweft", timeout=120) as made:
        yield made


def get_json(lab, *args) -> dict:
    return json.loads(lab.kubectl("get", *args, "-o", "json").stdout)


def pods_of(lab, app: str, live: bool = True) -> list[dict]:
    items = get_json(lab, "pods", "-l", f"app={app}")["items"]
    return [p for p in items if not (live and p["metadata"].get("deletionTimestamp"))]


def scaling_events(lab, kind: str, name: str) -> list[str]:
    items = get_json(lab, "events", "--field-selector", f"involvedObject.kind={kind},involvedObject.name={name}")
    return [e["message"] for e in sorted(items["items"], key=lambda e: e["metadata"]["name"])]


def rollout(lab, what: str) -> str:
    out = lab.kubectl("rollout", "status", what, "--timeout=50s", timeout=60).stdout
    assert "successfully rolled out" in out, out
    return out


def test_tutorial_deployment_expose_scale_and_restart_without_a_failed_request(lab):
    lab.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=3")
    try:
        # an nginx container that declares no port answers on 80, as on kind; a preStop sleep keeps
        # it serving while the Service lets go of it, before it gets SIGTERM (zero-downtime rollout)
        patch = [{"op": "add", "path": "/spec/template/spec/containers/0/lifecycle",
                  "value": {"preStop": {"sleep": {"seconds": 2}}}}]
        lab.kubectl("patch", "deployment", "web", "--type=json", "-p", json.dumps(patch))
        lab.kubectl("expose", "deployment", "web", "--port=80")
        lab.kubectl("run", "client", "--image=any")
        rollout(lab, "deployment/web")
        lab.kubectl("wait", "--for=condition=Ready", "pod/client", "--timeout=50s", timeout=60)
        table = lab.kubectl("get", "deployment", "web").stdout.splitlines()
        assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        assert table[1].split()[:4] == ["web", "3/3", "3", "3"]
        pods = pods_of(lab, "web")
        assert len(pods) == 3
        assert {json.dumps(p["spec"]["containers"][0].get("lifecycle")) for p in pods} == {
            json.dumps({"preStop": {"sleep": {"seconds": 2}}})}
        for p in pods:
            rs_hash = p["metadata"]["labels"]["pod-template-hash"]
            assert re.fullmatch(f"web-{rs_hash}-{SUFFIX}{{5}}", p["metadata"]["name"])
            owner = p["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["name"], owner["controller"]) == ("ReplicaSet", f"web-{rs_hash}", True)

        ip = lab.kubectl("get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}").stdout
        probe = lab.cli("probe", "--from", "default/client", f"{ip}:80", "--count", "12", "--json").stdout
        answered = {json.loads(line)["pod"] for line in probe.splitlines()}
        assert answered <= {f"default/{p['metadata']['name']}" for p in pods} and len(answered) >= 2, probe

        lab.kubectl("scale", "deployment", "web", "--replicas=5")
        rollout(lab, "deployment/web")
        assert len(pods_of(lab, "web")) == 5
        lab.kubectl("scale", "deployment/web", "--replicas=3")
        wait_for("3 web pods", lambda: len(pods_of(lab, "web", live=False)) == 3, timeout=40)

        before = {p["metadata"]["name"] for p in pods_of(lab, "web")}
        probing = subprocess.Popen([KUBEWEFT, "lab", "--name", lab.name, "probe", "--from", "default/client",
                                    f"{ip}:80", "--count", "100000", "--timeout", "2", "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lab.kubectl("rollout", "restart", "deployment/web")
            rollout(lab, "deployment/web")
        finally:
            probing.terminate()
            out, _ = probing.communicate(timeout=10)
        results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        failed = [r for r in results if r["outcome"] != "connected"]
        print(f"rollout restart with a preStop sleep: {len(results)} requests tried, {len(failed)} failed")
        assert len(results) > 50 and not failed, f"{len(failed)} of {len(results)} failed: {failed[:3]}"
        after = {p["metadata"]["name"] for p in pods_of(lab, "web")}
        assert len(after) == 3 and not after & before
    finally:
        lab.kubectl("delete", "deployment/web", "service/web", "pod/client", "--wait=false", check=False)


def test_rollout_restart_one_pod_at_a_time_then_undo(lab):
    lab.kubectl("create", "deployment", "roll", "--image=lab:1", "--replicas=3")
    try:
        rollout(lab, "deployment/roll")
        first = get_json(lab, "rs", "-l", "app=roll")["items"][0]["metadata"]["name"]
        lab.kubectl("rollout", "restart", "deployment/roll")
        rollout(lab, "deployment/roll")
        rss = {r["metadata"]["name"]: r for r in get_json(lab, "rs", "-l", "app=roll")["items"]}
        second = next(n for n in rss if n != first)
        # 25% of 3: maxSurge 1, maxUnavailable 0: one new pod up, then one old pod down, thrice
        assert scaling_events(lab, "Deployment", "roll") == [
            f"Scaled up replica set {first} from 0 to 3",
            f"Scaled up replica set {second} from 0 to 1", f"Scaled down replica set {first} from 3 to 2",
            f"Scaled up replica set {second} from 1 to 2", f"Scaled down replica set {first} from 2 to 1",
            f"Scaled up replica set {second} from 2 to 3", f"Scaled down replica set {first} from 1 to 0"]
        history = lab.kubectl("rollout", "history", "deployment/roll").stdout.split()
        assert history[history.index("CHANGE-CAUSE") + 1:] == ["1", "<none>", "2", "<none>"]

        assert "rolled back" in lab.kubectl("rollout", "undo", "deployment/roll").stdout
        rollout(lab, "deployment/roll")
        rss = {r["metadata"]["name"]: r for r in get_json(lab, "rs", "-l", "app=roll")["items"]}
        assert rss[first]["spec"]["replicas"] == 3 and rss[second]["spec"]["replicas"] == 0
        assert rss[first]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        d = get_json(lab, "deployment", "roll")
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        assert "annotations" not in d["spec"]["template"]["metadata"]          # restartedAt is gone
        history = lab.kubectl("rollout", "history", "deployment/roll").stdout.split()
        assert history[history.index("CHANGE-CAUSE") + 1:] == ["2", "<none>", "3", "<none>"]
    finally:
        lab.kubectl("delete", "deployment/roll", "--wait=false", check=False)


def test_deleting_a_deployment_collects_its_replicasets_and_pods(lab):
    lab.kubectl("create", "deployment", "gone", "--image=lab:1", "--replicas=2")
    rollout(lab, "deployment/gone")
    assert len(get_json(lab, "rs", "-l", "app=gone")["items"]) == 1 and len(pods_of(lab, "gone")) == 2
    lab.kubectl("delete", "deployment", "gone")
    wait_for("ReplicaSets and pods of a deleted Deployment gone",
             lambda: not get_json(lab, "rs", "-l", "app=gone")["items"]
             and not pods_of(lab, "gone", live=False), timeout=40)


def test_daemonset_on_every_node_rolling_update_and_undo(lab):
    lab.kubectl("apply", "-f", "-", input=DS_YAML.format(name="agent"))
    try:
        rollout(lab, "daemonset/agent")
        pods = pods_of(lab, "agent")
        assert sorted(p["spec"]["nodeName"] for p in pods) == ["node1", "node2"]
        row = lab.kubectl("get", "ds", "agent").stdout.splitlines()
        assert row[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE",
                                  "SELECTOR", "AGE"]
        assert row[1].split()[:7] == ["agent", "2", "2", "2", "2", "2", "<none>"]

        lab.kubectl("set", "image", "daemonset/agent", "agent=lab:2")
        rollout(lab, "daemonset/agent")
        events = scaling_events(lab, "DaemonSet", "agent")
        old = sorted(p["metadata"]["name"] for p in pods)
        # maxUnavailable 1: a node's old pod goes, its new pod comes, then the next node's
        kinds = [m.split(":")[0] for m in events]
        assert kinds == ["Created pod", "Created pod", "Deleted pod", "Created pod", "Deleted pod", "Created pod"]
        assert sorted(m.split(": ")[1] for m in events if m.startswith("Deleted")) == old
        new = pods_of(lab, "agent")
        assert len(new) == 2 and all(p["spec"]["containers"][0]["image"] == "lab:2" for p in new)
        assert len({p["metadata"]["labels"]["controller-revision-hash"] for p in new}) == 1

        history = lab.kubectl("rollout", "history", "daemonset/agent").stdout.split()
        assert history[history.index("CHANGE-CAUSE") + 1:] == ["1", "<none>", "2", "<none>"]
        lab.kubectl("rollout", "undo", "daemonset/agent")
        rollout(lab, "daemonset/agent")
        assert {p["spec"]["containers"][0]["image"] for p in pods_of(lab, "agent")} == {"lab:1"}
        revisions = get_json(lab, "controllerrevisions", "-l", "app=agent")["items"]
        assert sorted(r["revision"] for r in revisions) == [2, 3]
    finally:
        lab.kubectl("delete", "daemonset/agent", "--wait=false", check=False)


def test_cordon_and_drain_evict_all_but_daemon_pods(lab):
    lab.kubectl("apply", "-f", "-", input=DS_YAML.format(name="keeper"))
    lab.kubectl("create", "deployment", "moved", "--image=lab:1", "--replicas=4")
    try:
        rollout(lab, "deployment/moved")
        rollout(lab, "daemonset/keeper")
        assert "node1" in {p["spec"]["nodeName"] for p in pods_of(lab, "moved")}
        lab.kubectl("run", "loner", "--image=any", "--overrides", '{"spec": {"nodeName": "node1"}}')

        lab.kubectl("cordon", "node1")
        assert lab.kubectl("get", "node", "node1").stdout.splitlines()[1].split()[1] == "Ready,SchedulingDisabled"
        refused = lab.kubectl("drain", "node1", "--ignore-daemonsets", "--timeout=20s", check=False, timeout=40)
        assert refused.returncode != 0
        assert "cannot delete Pods that declare no controller (use --force to override): default/loner" \
            in refused.stderr
        drained = lab.kubectl("drain", "node1", "--ignore-daemonsets", "--force", "--timeout=50s", timeout=60)
        assert "node/node1 drained" in drained.stdout
        assert "ignoring DaemonSet-managed Pods: default/keeper-" in drained.stderr
        rollout(lab, "deployment/moved")
        assert {p["spec"]["nodeName"] for p in pods_of(lab, "moved")} == {"node2"}
        assert sorted(p["spec"]["nodeName"] for p in pods_of(lab, "keeper")) == ["node1", "node2"]
        wait_for("loner gone", lambda: not pods_of(lab, "loner", live=False) and lab.kubectl(
            "get", "pod", "loner", check=False).returncode != 0, timeout=30)
    finally:
        lab.kubectl("uncordon", "node1", check=False)
        lab.kubectl("delete", "deployment/moved", "daemonset/keeper", "pod/loner", "--wait=false", check=False)
