"""CrashLoopBackOff timing, what an image runs, pod phases and conditions, log tails, the exec
exit status: the pure parts of the lab's container runtime."""
import pytest
from kubeweft.lab.kubelet import backoff, images, logs, podspec, server, status


def test_back_off_doubles_from_the_base_to_the_cap_and_forgives_a_long_run():
    b, t, waits = backoff.Backoff(), 0.0, []
    for _ in range(8):
        start = backoff.restart_at(b, t)
        waits.append(start - t)
        b = backoff.after_restart(b, start)
        t = start + 1.0                      # runs one second, then fails again
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]
    assert backoff.restart_at(b, t + 601) == t + 601            # ran > 2 x cap before failing
    assert backoff.after_restart(b, t + 700).delay == 10
    assert backoff.after_restart(backoff.Backoff(), 0, base=1).delay == 1


@pytest.mark.parametrize("seconds,text", [(10, "10s"), (80, "1m20s"), (300, "5m0s"), (0.5, "500ms"),
                                          (3725, "1h2m5s")])
def test_go_durations(seconds, text):
    assert backoff.go_duration(seconds) == text


def _pod(container: dict) -> podspec.Pod:
    return podspec.parse_pod({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                              "spec": {"containers": [{"name": "c", **container}]}})


@pytest.mark.parametrize("container,argv,workload", [
    ({"image": "nginx"}, ("py", "-m", "kubeweft.lab.workload", "--lab", "kw", "--pod", "ns/p", "--ports", "80/TCP"),
     True),
    ({"image": "docker.io/library/nginx:1.27", "ports": [{"containerPort": 8080}]},
     ("py", "-m", "kubeweft.lab.workload", "--lab", "kw", "--pod", "ns/p", "--ports", "8080/TCP"), True),
    ({"image": "anything"}, ("py", "-m", "kubeweft.lab.workload", "--lab", "kw", "--pod", "ns/p", "--ports", ""),
     True),
    ({"image": "busybox", "args": ["sleep", "3600"]}, ("sleep", "3600"), False),
    ({"image": "busybox", "command": ["sh", "-c"], "args": ["echo hi"]}, ("sh", "-c", "echo hi"), False),
    ({"image": "registry.k8s.io/e2e-test-images/agnhost:2.52", "args": ["netexec", "--http-port=9000"]},
     ("py", "-m", "kubeweft.lab.workload", "--lab", "kw", "--pod", "ns/p", "--ports", "9000/TCP,8081/UDP"), True),
    ({"image": "registry.k8s.io/pause:3.10"}, ("sleep", "infinity"), False),
    ({"image": "registry.k8s.io/coredns/coredns:v1.12.0", "args": ["-conf", "/etc/coredns/Corefile"]},
     ("py", "-m", "kubeweft.lab.dns", "-conf", "/etc/coredns/Corefile"), False),
    ({"image": "registry.k8s.io/ingress-nginx/controller:v1.12.1@sha256:d2fb",
      "args": ["/nginx-ingress-controller", "--publish-service=ingress-nginx/c", "--ingress-class=nginx"]},
     ("py", "-m", "kubeweft.lab.ingress", "--publish-service=ingress-nginx/c", "--ingress-class=nginx"), False),
    ({"image": "registry.k8s.io/ingress-nginx/controller:v1.11.0", "command": ["/nginx-ingress-controller"]},
     ("py", "-m", "kubeweft.lab.ingress"), False),
    ({"image": "ghcr.io/kubeweft/kubeweft:latest", "command": ["kubeweft", "agent", "--x"]},
     ("/venv/bin/kubeweft", "agent", "--x"), False),
    ({"image": "ghcr.io/kubeweft/kubeweft@sha256:ab", "command": ["python3", "-c", "1"]}, ("py", "-c", "1"), False),
])
def test_what_an_image_runs(container, argv, workload):
    pod = _pod(container)
    c = pod.containers[0]
    p = images.plan_process(pod, c, c.command, c.args, "/venv/bin", "py", "kw")
    assert (p.argv, p.workload) == (argv, workload)
    if images.is_kubeweft_image(c.image):
        assert p.path.startswith("/venv/bin:")


def view(state: str, code: int | None = None, last: bool = False, ready: bool = False, name: str = "c"):
    term = status.Terminated(code, status.terminated_reason(code)) if code is not None else None
    return status.ContainerView(name, "img", state, terminated=term if state == "terminated" else None,
                                last=status.Terminated(1, "Error") if last else None, ready=ready)


@pytest.mark.parametrize("policy,inits,mains,phase", [
    ("Always", [], [view("waiting")], "Pending"),
    ("Always", [], [view("running")], "Running"),
    ("Always", [], [view("waiting", last=True)], "Running"),                 # CrashLoopBackOff
    ("Always", [view("running")], [view("waiting")], "Pending"),
    ("Never", [view("terminated", 1)], [view("waiting")], "Failed"),
    ("OnFailure", [view("waiting", last=True)], [view("waiting")], "Pending"),
    ("Never", [view("terminated", 0)], [view("terminated", 0)], "Succeeded"),
    ("Never", [], [view("terminated", 0), view("terminated", 3)], "Failed"),
    ("OnFailure", [], [view("terminated", 3)], "Running"),
    ("OnFailure", [], [view("terminated", 0), view("running")], "Running"),
    ("Always", [], [view("terminated", 0)], "Running"),
])
def test_phase(policy, inits, mains, phase):
    assert status.plan_phase(policy, inits, mains) == phase


def test_conditions_and_rendering():
    pod = _pod({})
    inits = [view("terminated", 0, name="i1"), view("running", name="i2")]
    conds = {c.type: c for c in status.plan_conditions(pod, "Pending", True, inits, [view("waiting")], {}, "t1")}
    assert conds["Initialized"].message == "containers with incomplete status: [i2]"
    assert conds["Ready"].reason == "ContainersNotReady" and conds["Ready"].message == \
        "containers with unready status: [c]"
    done = {c.type: c for c in status.plan_conditions(pod, "Succeeded", False, [], [view("terminated", 0)],
                                                      conds, "t2")}
    assert done["Ready"].reason == "PodCompleted" and done["Ready"].since == "t1"   # still False: kept
    cs = status.ContainerView("c", "img", "waiting", "CrashLoopBackOff", "back-off 10s", restart_count=2,
                              last=status.Terminated(2, "Error", "s", "f", container_id="abc")).render()
    assert cs["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    assert cs["lastState"] == {"terminated": {"exitCode": 2, "reason": "Error", "startedAt": "s", "finishedAt": "f",
                                              "containerID": "lab://abc"}}
    doc = status.render_pod_status(status.PodView("Running", "192.168.56.11", "10.244.0.5", "t0"), inits,
                                   [view("running", ready=True)])
    assert doc["podIPs"] == [{"ip": "10.244.0.5"}] and len(doc["initContainerStatuses"]) == 2


def test_log_tails():
    assert logs.tail_lines(b"a\nb\nc", 2) == b"b\nc" and logs.tail_lines(b"a\nb\n", 1) == b"b\n"
    assert logs.tail_lines(b"a\n", 0) == b"" and logs.tail_lines(b"a\n", None) == b"a\n"


def test_exec_exit_status_as_kubectl_reads_it():
    assert server.render_exit_status(["true"], 0) == {"metadata": {}, "status": "Success"}
    st = server.render_exit_status(["sh", "-c", "exit 3"], 3)
    assert st["status"] == "Failure" and st["reason"] == "NonZeroExitCode"
    assert st["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
