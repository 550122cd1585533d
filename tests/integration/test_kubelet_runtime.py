"""The lab kubelet as a container runtime, through the real kubectl, on ONE 1-node lab with
kubeweft's CNI and service proxy (CrashLoopBackOff's base cut to 1 s for the module):
volumes inside a container (hostPath on the node's own directories, emptyDir shared with an init
container, downwardAPI, configMap, secret and the projected ServiceAccount token when the API
serves those kinds), env as the kubelet sets it, init containers in order, restart policies with
CrashLoopBackOff, a liveness probe restarting a container, readiness gating, kubectl logs
(-f, --previous, --tail, -c), kubectl exec (exit codes; -it with a TTY), an nginx Deployment
answering on port 80 behind its Service; and at the end, kill -9 of the kubelet, `lab down`, and nothing
left: no process, no mount namespace of a container, the root mount table as before.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from kubeweft.lab import lifecycle

from .conftest import KUBEWEFT, down_lab
from .kubelet_helpers import (
    PtyKubectl,
    apply,
    container_status,
    get,
    is_ready,
    lab_with_env,
    root_mounts,
)
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "default"


@pytest.fixture(scope="module")
def lab():
    before = root_mounts()
    with lab_with_env({"KUBEWEFT_LAB_BACKOFF_BASE": "1"}, nodes=1, cni="kubeweft", timeout=150) as lab:
        lab.mounts_before = before
        yield lab


def pod(name: str, containers: list[dict], **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": containers, **spec}}


def sh(name: str, script: str, **extra) -> dict:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}


def wait_ready(lab, name: str, timeout: float = 40) -> dict:
    def ready():
        p = get(lab, "pod", name)
        return p if is_ready(p) else None
    return wait_for(f"{name} Ready", ready, timeout=timeout)


def exec_out(lab, name: str, *cmd: str, container: str | None = None) -> str:
    extra = ["-c", container] if container else []
    return lab.kubectl("exec", name, *extra, "--", *cmd).stdout


def test_volumes_inside_a_container(lab):
    volumes = [{"name": "cni", "hostPath": {"path": "/etc/cni/net.d"}},
               {"name": "state", "hostPath": {"path": "/var/lib/demo", "type": "DirectoryOrCreate"}},
               {"name": "scratch", "emptyDir": {}},
               {"name": "info", "downwardAPI": {"items": [
                   {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                   {"path": "mem", "resourceFieldRef": {"containerName": "main", "resource": "limits.memory",
                                                        "divisor": "1Mi"}}]}}]
    mounts = [{"name": "cni", "mountPath": "/host/cni", "readOnly": True},
              {"name": "state", "mountPath": "/var/lib/demo"},
              {"name": "scratch", "mountPath": "/scratch"},
              {"name": "info", "mountPath": "/etc/podinfo"}]
    docs = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vol-cm", "namespace": NS},
              "data": {"app.conf": "color=blue\n"}},
             {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vol-sec", "namespace": NS},
              "data": {"password": base64.b64encode(b"s3cret").decode()}}]
    volumes += [{"name": "cm", "configMap": {"name": "vol-cm"}},
                {"name": "sec", "secret": {"secretName": "vol-sec", "defaultMode": 0o400}}]
    mounts += [{"name": "cm", "mountPath": "/etc/app"}, {"name": "sec", "mountPath": "/etc/sec"}]
    init = sh("seed", "echo seeded > /scratch/seed", volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}])
    main = sh("main", "echo hello > /var/lib/demo/written; exec sleep 3600", volumeMounts=mounts,
              resources={"limits": {"memory": "96Mi"}})
    apply(lab, *docs, pod("vols", [main], initContainers=[init], volumes=volumes))
    wait_ready(lab, "vols")
    node_dir = lab.cfg.node_dir("node1")
    conf = sorted(n for n in os.listdir(lab.cfg.cni_conf_dir("node1")) if not n.startswith("."))
    assert conf and exec_out(lab, "vols", "ls", "/host/cni").split() == conf
    assert exec_out(lab, "vols", "cat", "/scratch/seed") == "seeded\n"
    assert (node_dir / "host/var/lib/demo/written").read_text() == "hello\n"        # the node's own /var/lib
    assert not Path("/var/lib/demo").exists()
    assert exec_out(lab, "vols", "cat", "/etc/podinfo/labels") == 'app="vols"'
    assert exec_out(lab, "vols", "cat", "/etc/podinfo/mem") == "96"
    rc = lab.kubectl("exec", "vols", "--", "touch", "/host/cni/x", check=False)
    assert rc.returncode != 0 and "Read-only file system" in rc.stderr
    assert exec_out(lab, "vols", "hostname") == "vols\n"
    if docs:
        assert exec_out(lab, "vols", "cat", "/etc/app/app.conf") == "color=blue\n"
        assert exec_out(lab, "vols", "cat", "/etc/sec/password") == "s3cret"
        assert exec_out(lab, "vols", "stat", "-L", "-c", "%a", "/etc/sec/password").strip() == "400"
        assert "..data" in exec_out(lab, "vols", "ls", "-a", "/etc/app")


def test_projected_service_account_token_calls_the_api_in_cluster(lab):
    # the token authenticates (RBAC then refuses what the default ServiceAccount may not do)
    script = ("from kubernetes import client, config; config.load_incluster_config()\n"
              "try:\n    client.CoreV1Api().read_namespace('default')\n"
              "except client.ApiException as e:\n    print(e.status, e.body)")
    apply(lab, pod("incluster", [{"name": "main", "image": "ghcr.io/kubeweft/kubeweft:latest",
                                  "command": ["sleep", "3600"]}]))
    wait_ready(lab, "incluster")
    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert exec_out(lab, "incluster", "cat", f"{sa_dir}/namespace") == NS
    token = exec_out(lab, "incluster", "cat", f"{sa_dir}/token")
    assert token.startswith("eyJ") and "BEGIN CERTIFICATE" in exec_out(lab, "incluster", "cat", f"{sa_dir}/ca.crt")
    out = exec_out(lab, "incluster", "python3", "-c", script)
    assert out.startswith("403 ") and 'User \\"system:serviceaccount:default:default\\" cannot get resource' in out


def test_env_as_the_kubelet_sets_it(lab):
    env = [{"name": "GREETING", "value": "hi"},
           {"name": "MSG", "value": "$(GREETING) from $(NODE)"},
           {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
           {"name": "CPU_MILLIS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}]
    apply(lab, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "env-cm", "namespace": NS},
                "data": {"LEVEL": "debug"}})
    env_from = [{"configMapRef": {"name": "env-cm"}, "prefix": "APP_"}]
    main = {"name": "main", "image": "busybox", "command": ["sh", "-c", 'echo "args: $1"; exec sleep 3600', "--"],
            "args": ["$(MSG) on $(NODE)"], "env": env, "envFrom": env_from,
            "resources": {"limits": {"cpu": "250m"}}}
    apply(lab, pod("envy", [main]))
    p = wait_ready(lab, "envy")
    got = dict(line.split("=", 1) for line in exec_out(lab, "envy", "env").splitlines() if "=" in line)
    svc = get(lab, "svc", "kubernetes")
    assert got["KUBERNETES_SERVICE_HOST"] == svc["spec"]["clusterIP"] and got["KUBERNETES_SERVICE_PORT"] == "443"
    assert got["KUBERNETES_PORT_443_TCP"] == f"tcp://{svc['spec']['clusterIP']}:443"
    assert (got["NODE"], got["POD_IP"], got["HOST_IP"]) == ("node1", p["status"]["podIP"], lab.cfg.node_ip(1))
    assert (got["POD_NAME"], got["POD_UID"]) == ("envy", p["metadata"]["uid"])
    assert got["CPU_MILLIS"] == "250" and got["MSG"] == "hi from $(NODE)"      # NODE is defined after MSG
    assert got["HOSTNAME"] == "envy"
    # $(VAR) in args sees the whole env, once: MSG's own $(NODE) stays as it is
    assert lab.kubectl("logs", "envy").stdout == "args: hi from $(NODE) on node1\n"
    if env_from:
        assert got["APP_LEVEL"] == "debug"


def test_init_containers_run_in_order_to_completion_before_the_containers(lab):
    mount = [{"name": "w", "mountPath": "/w"}]
    inits = [sh("first", "sleep 1; echo first >> /w/order", volumeMounts=mount),
             sh("second", "echo second >> /w/order", volumeMounts=mount)]
    main = sh("main", "echo main >> /w/order; exec sleep 3600", volumeMounts=mount)
    apply(lab, pod("ordered", [main], initContainers=inits, volumes=[{"name": "w", "emptyDir": {}}]))

    def initializing():
        p = get(lab, "pod", "ordered")
        line = lab.kubectl("get", "pod", "ordered", "--no-headers").stdout
        return "Init:" in line and container_status(p, "main").get("state", {}).get("waiting")
    waiting = wait_for("ordered initializing", initializing, timeout=30, interval=0.1)
    assert waiting["reason"] == "PodInitializing"
    wait_ready(lab, "ordered")
    assert exec_out(lab, "ordered", "cat", "/w/order") == "first\nsecond\nmain\n"
    p = get(lab, "pod", "ordered")
    for name in ("first", "second"):
        term = container_status(p, name, init=True)["state"]["terminated"]
        assert (term["exitCode"], term["reason"]) == (0, "Completed")


def test_crash_loop_back_off_with_restart_count_and_last_state(lab):
    apply(lab, pod("crashy", [sh("main", "echo attempt; exit 3")]),
          pod("once", [sh("main", "echo done")], restartPolicy="Never"),
          pod("failed", [sh("main", "exit 4")], restartPolicy="Never"),
          pod("retry", [sh("main", "echo tried; exit 1")], restartPolicy="OnFailure"))

    def looping():
        cs = container_status(get(lab, "pod", "crashy"))
        return cs if cs.get("restartCount", 0) >= 3 and "waiting" in cs.get("state", {}) else None
    cs = wait_for("crashy in CrashLoopBackOff", looping, timeout=40, interval=0.2)
    assert cs["lastState"]["terminated"]["exitCode"] == 3 and cs["lastState"]["terminated"]["reason"] == "Error"
    waiting = cs["state"]["waiting"]
    if waiting["reason"] == "CrashLoopBackOff":
        assert waiting["message"].startswith("back-off ") and "restarting failed container=main pod=crashy_default(" \
            in waiting["message"]
    row = wait_for("CrashLoopBackOff in kubectl get pods",
                   lambda: "CrashLoopBackOff" in (out := lab.kubectl("get", "pod", "crashy", "--no-headers").stdout)
                   and out, timeout=20, interval=0.2)
    assert " ago)" in row                                       # RESTARTS: "N (Xs ago)"
    assert get(lab, "pod", "crashy")["status"]["phase"] == "Running"
    wait_for("once Succeeded", lambda: get(lab, "pod", "once")["status"]["phase"] == "Succeeded", timeout=30)
    assert "Completed" in lab.kubectl("get", "pod", "once", "--no-headers").stdout
    assert lab.kubectl("logs", "once").stdout == "done\n"                # logs outlive the container
    wait_for("failed Failed", lambda: get(lab, "pod", "failed")["status"]["phase"] == "Failed", timeout=30)
    term = container_status(get(lab, "pod", "failed"))["state"]["terminated"]
    assert term["exitCode"] == 4 and term["reason"] == "Error"
    wait_for("retry restarted", lambda: container_status(get(lab, "pod", "retry")).get("restartCount", 0) >= 1,
             timeout=30)
    assert get(lab, "pod", "retry")["status"]["phase"] == "Running"
    lab.kubectl("delete", "pod", "crashy", "once", "failed", "retry", "--wait=false")


def test_liveness_probe_restarts_the_container_and_readiness_gates_ready(lab):
    # The container itself drives its probes' files (a marker in an emptyDir, which outlives the
    # restart, makes only the first run fail its liveness): not Ready until /tmp/ready exists,
    # then /tmp/healthy goes and the liveness probe restarts it.
    script = ("touch /tmp/healthy; sleep 8; touch /tmp/ready; "
              "if [ ! -f /scratch/once ]; then touch /scratch/once; sleep 4; rm /tmp/healthy; fi; exec sleep 3600")
    main = sh("main", script, volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
              livenessProbe={"exec": {"command": ["test", "-f", "/tmp/healthy"]}, "periodSeconds": 1,
                             "failureThreshold": 2},
              readinessProbe={"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1})
    apply(lab, pod("probed", [main], volumes=[{"name": "scratch", "emptyDir": {}}]))
    wait_for("probed Running", lambda: container_status(get(lab, "pod", "probed")).get("state", {}).get("running"),
             timeout=30)
    assert not is_ready(get(lab, "pod", "probed"))                       # readiness fails: not Ready
    wait_ready(lab, "probed", timeout=30)

    def restarted():
        cs = container_status(get(lab, "pod", "probed"))
        return cs if cs.get("restartCount") == 1 and cs.get("state", {}).get("running") else None
    cs = wait_for("probed restarted by its liveness probe", restarted, timeout=40)
    assert cs["lastState"]["terminated"]["exitCode"] in (137, 143) and not cs["ready"]   # a new /tmp: unready
    wait_ready(lab, "probed", timeout=30)                                # and Ready again once it has one
    assert container_status(get(lab, "pod", "probed"))["restartCount"] == 1   # the second run stays healthy
    lab.kubectl("delete", "pod", "probed", "--wait=false")


def test_logs_follow_previous_tail_and_container(lab):
    # the marker lives in an emptyDir: a restarted container gets a fresh /tmp
    counter = sh("counter", 'i=0; while [ $i -lt 3 ]; do i=$((i+1)); echo "line $i"; done; '
                            'test -f /m/x || { touch /m/x; exit 1; }; while true; do echo tick; sleep 0.3; done',
                 volumeMounts=[{"name": "m", "mountPath": "/m"}])
    side = sh("side", "echo from side; exec sleep 3600")
    apply(lab, pod("talky", [counter, side], volumes=[{"name": "m", "emptyDir": {}}]))
    wait_for("talky restarted once",
             lambda: container_status(get(lab, "pod", "talky"), "counter").get("restartCount") == 1, timeout=30)
    assert lab.kubectl("logs", "talky", "-c", "side").stdout == "from side\n"
    assert lab.kubectl("logs", "talky", "-c", "counter", "--previous").stdout == "line 1\nline 2\nline 3\n"
    assert lab.kubectl("logs", "talky", "-c", "counter", "--previous", "--tail", "1").stdout == "line 3\n"
    wait_for("ticks", lambda: "tick" in lab.kubectl("logs", "talky", "-c", "counter").stdout, timeout=20)
    env = dict(os.environ, KUBECONFIG=str(lab.kubeconfig))
    follow = subprocess.Popen([lab.kubectl_path, "logs", "-f", "talky", "-c", "counter", "--tail", "1"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = [follow.stdout.readline() for _ in range(4)]          # one from the tail, then new ones
    finally:
        follow.kill()
        follow.wait(10)
    assert all(line == "tick\n" for line in lines)
    bad = lab.kubectl("logs", "talky", "-c", "nope", check=False)
    assert bad.returncode != 0 and "container nope is not valid for pod talky" in bad.stderr
    lab.kubectl("delete", "pod", "talky", "--wait=false")


def test_exec_exit_codes_and_errors(lab):
    apply(lab, pod("shell", [sh("main", "exec sleep 3600")]))
    wait_ready(lab, "shell")
    rc = lab.kubectl("exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (rc.returncode, rc.stdout, rc.stderr.splitlines()[0]) == (3, "out\n", "err")
    assert lab.kubectl("exec", "shell", "--", "true").returncode == 0
    piped = lab.kubectl("exec", "-i", "shell", "--", "tr", "a-z", "A-Z", input="shout\n")
    assert piped.stdout == "SHOUT\n"
    missing = lab.kubectl("exec", "shell", "--", "no-such-command", check=False)
    assert missing.returncode == 127


def test_exec_it_gives_a_shell_with_a_tty(lab):
    wait_ready(lab, "shell")
    term = PtyKubectl(lab, "exec", "-it", "shell", "--", "/bin/sh")
    try:
        term.read_until(b"# ")
        term.send(b"tty; hostname; echo $((6*7))\n")
        out = term.read_until(b"42\r\n")
        assert b"/dev/pts/" in out and b"shell\r\n" in out
        term.send(b"exit 5\n")
        assert term.wait() == 5
    finally:
        term.kill()


def test_nginx_deployment_answers_on_port_80_behind_its_service(lab):
    lab.kubectl("create", "deployment", "web", "--image=nginx")
    lab.kubectl("expose", "deployment", "web", "--port=80")
    apply(lab, pod("client", [sh("main", "exec sleep 3600")]))
    lab.kubectl("rollout", "status", "deployment/web", "--timeout=60s", timeout=90)
    wait_ready(lab, "client")
    ip = get(lab, "svc", "web")["spec"]["clusterIP"]
    answer = wait_for("the Service answering", lambda: lab.kubectl(
        "exec", "client", "--", "curl", "-s", "-m", "2", f"http://{ip}/hostname", check=False).stdout, timeout=30)
    pods = [p["metadata"]["name"] for p in get(lab, "pods", "-l", "app=web")["items"]]
    assert answer in pods and answer.startswith("web-")


def _mount_namespaces(pids: list[int]) -> set[str]:
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            out.add(os.readlink(f"/proc/{pid}/ns/mnt"))
    return out


def _processes_in(namespaces: set[str]) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{d}/ns/mnt") in namespaces:
                    found.append(int(d))
    return found


def test_lab_down_after_kill_9_leaves_no_process_mount_or_namespace(lab):
    """Last: ends the module's lab."""
    state = json.loads(lab.cfg.state_file.read_text())
    pods = json.loads((lab.cfg.node_dir("node1") / "pods.json").read_text())
    pids = [pid for entry in pods.values() for pid in entry.get("pids") or []]
    namespaces = _mount_namespaces(pids)
    assert pids and namespaces and os.readlink("/proc/self/ns/mnt") not in namespaces
    for pid in lifecycle.find_processes(lab.name, state["token"]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    down = down_lab(lab.name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not lifecycle.find_processes(lab.name, None)

    def describe(pids: list[int]) -> list[str]:
        out = []
        for pid in pids:
            with contextlib.suppress(OSError):
                out.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()!r} "
                           f"{Path(f'/proc/{pid}/stat').read_text().split(')')[1].split()[0]}")
        return out
    # a process SIGKILLed a moment ago may still be on its way out of the kernel under load;
    # one that nobody ended stays, and fails this
    wait_for("no process left in the containers' mount namespaces",
             lambda: not (left := _processes_in(namespaces)) or print(describe(left)), timeout=10, interval=0.5)
    assert root_mounts() == lab.mounts_before
    assert not lab.cfg.state_dir.exists()
    status = subprocess.run([KUBEWEFT, "lab", "--name", lab.name, "status"], capture_output=True, timeout=30,
                            check=False)
    assert status.returncode != 0
