"""Container lifecycle hooks through the real kubectl on ONE 1-node lab: a preStop hook runs
before the container gets SIGTERM, a preStop that outlasts terminationGracePeriodSeconds is cut
off (SIGTERM then, SIGKILL 2 s later, as the kubelet's minimum grace), and postStart runs before
the container is Running; a failing postStart gets the container killed and restarted.

The containers write what they see (their own SIGTERM trap, the hook's marker) with timestamps to
a hostPath directory, which a reader pod shows after the writer is gone."""
from __future__ import annotations

import time

import pytest

from .kubelet_helpers import apply, container_status, get, lab_with_env
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "default"
OUT = {"name": "out", "hostPath": {"path": "/var/lib/hooktest", "type": "DirectoryOrCreate"}}
OUT_MOUNT = {"name": "out", "mountPath": "/out"}


@pytest.fixture(scope="module")
def lab():
    with lab_with_env({"KUBEWEFT_LAB_BACKOFF_BASE": "1"}, nodes=1, cni="kubeweft", timeout=150) as lab:
        apply(lab, pod("reader", sh("r", "sleep 100000"), grace=0))
        lab.kubectl("wait", "--for=condition=Ready", "pod/reader", "--timeout=60s", timeout=70)
        yield lab


def pod(name: str, container: dict, grace: int, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"terminationGracePeriodSeconds": grace, "containers": [container],
                     "volumes": [OUT, {"name": "data", "emptyDir": {}}], **spec}}


def sh(name: str, script: str, **extra) -> dict:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script],
            "volumeMounts": [OUT_MOUNT, {"name": "data", "mountPath": "/data"}], **extra}


def trap_term(log: str, then: str) -> str:
    """A container that logs SIGTERM with the time it got it, then runs `then` (exit, or go on)."""
    return (f"trap 'echo TERM $(date +%s.%N) >> /out/{log}; {then}' TERM; echo start > /out/{log}; "
            "while :; do sleep 0.1; done")


def read_log(lab, log: str) -> list[list[str]]:
    out = lab.kubectl("exec", "reader", "--", "cat", f"/out/{log}").stdout
    return [line.split() for line in out.splitlines()]


def run_until_ready(lab, doc: dict) -> None:
    apply(lab, doc)
    lab.kubectl("wait", "--for=condition=Ready", f"pod/{doc['metadata']['name']}", "--timeout=60s", timeout=70)


def test_pre_stop_runs_before_sigterm(lab):
    hook = {"exec": {"command": ["sh", "-c", "echo PRESTOP $(date +%s.%N) >> /out/order.log; sleep 1"]}}
    run_until_ready(lab, pod("order", sh("c", trap_term("order.log", "exit 0"), lifecycle={"preStop": hook}),
                             grace=20))
    lab.kubectl("delete", "pod", "order", "--timeout=40s", timeout=50)
    lines = read_log(lab, "order.log")
    assert [line[0] for line in lines] == ["start", "PRESTOP", "TERM"], lines
    # the hook's own second (sleep 1) passes before the container sees SIGTERM
    assert float(lines[2][1]) - float(lines[1][1]) >= 1.0, lines


def test_a_pre_stop_longer_than_the_grace_period_is_cut_off(lab):
    # the container notes SIGTERM and keeps running: only SIGKILL ends it
    run_until_ready(lab, pod("cut", sh("c", trap_term("cut.log", ":"),
                                       lifecycle={"preStop": {"sleep": {"seconds": 60}}}), grace=3))
    t0 = time.time()
    lab.kubectl("delete", "pod", "cut", "--timeout=40s", timeout=50)
    took = time.time() - t0
    lines = read_log(lab, "cut.log")
    assert [line[0] for line in lines] == ["start", "TERM"], lines
    term_after = float(lines[1][1]) - t0
    # SIGTERM when the 3 s grace period has cut the hook off, SIGKILL 2 s after that
    assert 2.5 <= term_after <= 5.0, (term_after, took)
    assert term_after + 1.5 <= took <= 15.0, (term_after, took)


def test_post_start_runs_before_the_container_is_running(lab):
    hook = {"exec": {"command": ["sh", "-c", "sleep 2; echo hooked > /data/hooked"]}}
    t0 = time.time()
    apply(lab, pod("post", sh("c", "sleep 100000", lifecycle={"postStart": hook}), grace=0))
    try:
        def running():
            state = container_status(get(lab, "pod", "post")).get("state") or {}
            return "running" in state
        wait_for("post running", running, timeout=60, interval=0.2)
        assert time.time() - t0 >= 2.0
        assert lab.kubectl("exec", "post", "--", "cat", "/data/hooked").stdout.strip() == "hooked"
    finally:
        lab.kubectl("delete", "pod", "post", "--wait=false", check=False)


def test_a_failing_post_start_kills_and_restarts_the_container(lab):
    apply(lab, pod("postfail", sh("c", "sleep 100000", lifecycle={"postStart": {"exec": {"command": ["false"]}}}),
                   grace=0))
    try:
        def restarted():
            s = container_status(get(lab, "pod", "postfail"))
            return s.get("restartCount", 0) >= 1 and s
        s = wait_for("postfail restarted", restarted, timeout=60)
        assert "PostStartHookError" in s["lastState"]["terminated"].get("message", ""), s
        assert s["ready"] is False
    finally:
        lab.kubectl("delete", "pod", "postfail", "--wait=false", check=False)
