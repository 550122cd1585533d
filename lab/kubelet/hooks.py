"""Container lifecycle hooks (postStart, preStop), run as the real kubelet runs them.

exec runs the command inside the container's namespaces (as exec probes and kubectl exec do),
httpGet is sent by the kubelet to the pod's IP (or the hook's host), sleep waits in the kubelet.
A hook fails on a non-zero exit, an HTTP status outside 2xx/3xx, or an error reaching it.

The preStop budget follows kuberuntime's killContainer: the hook gets the whole grace period,
what it used is taken off the time SIGTERM has before SIGKILL, and never less than
MIN_TERM_GRACE is left, so a hook that overruns still lets the container see SIGTERM.
"""
from __future__ import annotations

import threading
import time

from . import probes
from .podspec import Handler

MIN_TERM_GRACE = 2.0             # kubelet's minimumGracePeriodInSeconds
POST_START_TIMEOUT = 120.0       # an exec/httpGet postStart that hangs is cut off after this


def plan_term_grace(grace: float, hook_seconds: float) -> float:
    """Seconds from SIGTERM to SIGKILL after a preStop hook that took `hook_seconds` of `grace`."""
    return max(grace - hook_seconds, MIN_TERM_GRACE)


def hook_timeout(grace: float) -> float:
    """How long a preStop hook may run: the grace period (a hook past it is cut off)."""
    return max(0.0, grace)


def run(hook: Handler, pod_ip: str, pid: int, env: dict[str, str], timeout: float,
        cancel: threading.Event | None = None) -> tuple[bool, str]:
    """(success, why it failed) of one hook, bounded by `timeout` seconds."""
    if hook.kind == "sleep":
        waited = (cancel or threading.Event()).wait(min(float(hook.seconds), timeout))
        return (False, "sleep cut off") if waited else (True, "")
    if timeout <= 0:
        return False, "no time left for the hook"
    try:
        if hook.kind == "http":
            return probes.http_get(hook, hook.host or pod_ip, timeout)
        return probes.run_exec(pid, hook.command, env, timeout)
    except OSError as e:
        return False, f"dial tcp {hook.host or pod_ip}:{hook.port}: {e.strerror or e}"


def run_all(jobs: list[tuple[str, Handler, int, dict[str, str]]], pod_ip: str, timeout: float) -> dict[str, tuple]:
    """Run several containers' preStop hooks at once, as the kubelet stops containers in parallel;
    returns {container: (success, why, seconds taken)} once each has ended or `timeout` passed."""
    results: dict[str, tuple] = {}

    def one(name: str, hook: Handler, pid: int, env: dict[str, str]) -> None:
        t0 = time.monotonic()
        ok, why = run(hook, pod_ip, pid, env, timeout)
        results[name] = (ok, why, time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=job, daemon=True, name=f"prestop-{job[0]}") for job in jobs]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, timeout - (time.monotonic() - t0)) + 0.5)
    for name, *_ in jobs:
        results.setdefault(name, (False, f"cut off after {timeout:g}s", timeout))
    return results
