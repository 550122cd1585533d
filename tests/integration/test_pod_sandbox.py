"""A pod's containers share its sandbox's network namespace, and only that, as they share the
pause container's: on the shared 3-node lab (kubeweft's CNI), through the real kubectl.

    pod duo:  main     serves /shared over HTTP on 127.0.0.1:8080 only (python3 -m http.server)
              sidecar  reaches it over localhost
              (an emptyDir /shared: main writes its PID there)

The two containers see one network namespace (the pod's, the one the kubelet made and attached
with CNI ADD) and two mount namespaces. main killed with SIGKILL is restarted in the same
sandbox: same netns, same pod IP, no second CNI ADD, and the sidecar reaches the new main over
localhost. A hostNetwork pod is in the node's own network namespace.
"""
from __future__ import annotations

import json
import os
import signal

import pytest
from kubeweft.lab import install, netns

from .kubelet_helpers import container_status
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h14-pods"
NODE = "node2"
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def sh(name: str, script: str) -> dict:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}


DUO = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "duo", "namespace": NS},
       "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "shared", "emptyDir": {}}],
                "containers": [
                    sh("main", "echo $$$$ > /shared/main.pid; "   # $$ is an escaped $ in a container command
                               "exec python3 -m http.server 8080 --bind 127.0.0.1 --directory /shared"),
                    sh("sidecar", "exec sleep infinity")]}}
HOST = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-host", "namespace": NS},
        "spec": {"nodeName": NODE, "hostNetwork": True, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "infinity"]}]}}


@pytest.fixture(scope="module")
def lab(labk):
    labk.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s", timeout=90)
    labk.kubectl("create", "namespace", NS)
    try:
        yield labk
    finally:
        labk.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s",
                     check=False, timeout=90)


def exec_in(lab, pod: str, container: str, *argv: str, check: bool = True) -> str:
    return lab.kubectl("exec", "-n", NS, pod, "-c", container, "--", *argv, check=check, timeout=30).stdout.strip()


def get_pod(lab, name: str) -> dict:
    return json.loads(lab.kubectl("get", "pod", "-n", NS, name, "-o", "json").stdout)


def ready(lab, name: str, restarts: int = 0) -> dict | None:
    """The pod, once every container runs and `main` has restarted `restarts` times."""
    pod = get_pod(lab, name)
    statuses = pod.get("status", {}).get("containerStatuses") or []
    running = statuses and all("running" in (s.get("state") or {}) for s in statuses)
    return pod if running and container_status(pod, "main").get("restartCount") == restarts else None


def cni_adds(lab, pod: str) -> int:
    """How many times kubeweft's CNI attached `pod` on its node (its ADD log lines)."""
    text = install.agent_log_text(lab.cfg, NODE)
    return sum(1 for line in text.splitlines() if "kubeweft.cni: ADD " in line and f" {pod} -> " in line)


def inode(link: str) -> int:
    """'net:[4026532890]' -> 4026532890."""
    return int(link.partition("[")[2].rstrip("]"))


def test_containers_share_the_pods_network_namespace_and_only_that(lab):
    lab.kubectl("apply", "-f", "-", input=json.dumps(DUO))
    pod = wait_for("duo running", lambda: ready(lab, "duo"), timeout=60)
    sandbox = os.stat(netns.path(lab.cfg.pod_netns(NS, "duo", pod["metadata"]["uid"]))).st_ino

    # one network namespace, the sandbox's; a mount namespace each
    net = {c: exec_in(lab, "duo", c, "readlink", "/proc/self/ns/net") for c in ("main", "sidecar")}
    mnt = {c: exec_in(lab, "duo", c, "readlink", "/proc/self/ns/mnt") for c in ("main", "sidecar")}
    assert inode(net["main"]) == inode(net["sidecar"]) == sandbox
    assert mnt["main"] != mnt["sidecar"]
    exec_in(lab, "duo", "sidecar", "sh", "-c", "echo mine > /tmp/sidecar-only")
    assert exec_in(lab, "duo", "main", "sh", "-c", "test -e /tmp/sidecar-only && echo seen || echo unseen") \
        == "unseen"

    # the sidecar reaches main on 127.0.0.1, where main alone listens
    main_pid = wait_for("main serving on localhost", lambda: exec_in(
        lab, "duo", "sidecar", "python3", "-c", FETCH, "http://127.0.0.1:8080/main.pid", check=False))
    assert main_pid.isdigit()
    assert cni_adds(lab, "duo") == 1

    # main killed: restarted in the same sandbox (same netns, same IP, no second ADD)
    pid = int(main_pid)
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == sandbox        # that PID is this pod's main
    os.kill(pid, signal.SIGKILL)
    after = wait_for("main restarted", lambda: ready(lab, "duo", restarts=1), timeout=60)
    assert after["status"]["podIP"] == pod["status"]["podIP"]
    assert container_status(after, "sidecar")["restartCount"] == 0
    assert inode(exec_in(lab, "duo", "main", "readlink", "/proc/self/ns/net")) == sandbox
    new_pid = wait_for("the new main serving on localhost", lambda: exec_in(
        lab, "duo", "sidecar", "python3", "-c", FETCH, "http://127.0.0.1:8080/main.pid", check=False))
    assert new_pid.isdigit() and int(new_pid) != pid
    assert cni_adds(lab, "duo") == 1


def test_a_host_network_pod_is_in_the_nodes_network_namespace(lab):
    lab.kubectl("apply", "-f", "-", input=json.dumps(HOST))
    pod = wait_for("on-host running", lambda: ready(lab, "on-host"), timeout=60)
    node_ns = os.stat(netns.path(lab.cfg.node_netns(NODE))).st_ino
    assert inode(exec_in(lab, "on-host", "main", "readlink", "/proc/self/ns/net")) == node_ns
    assert pod["status"]["podIP"] == pod["status"]["hostIP"] == lab.cfg.node_ip(2)
    assert cni_adds(lab, "on-host") == 0
