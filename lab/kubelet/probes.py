"""Liveness, readiness and startup probes: one run (I/O) and what a result means (pure).

Probes run from the kubelet, in the node's network namespace, as the real kubelet does:
httpGet and tcpSocket connect to the pod's IP (or the probe's host); exec runs the command
inside the container (runtime.exec_argv) and succeeds on exit code 0.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from dataclasses import dataclass

from . import runtime
from .podspec import Handler, Probe

USER_AGENT = "kube-probe/1.35"


@dataclass(frozen=True)
class ProbeState:
    successes: int = 0
    failures: int = 0
    ok: bool = False             # the probe's verdict so far (readiness: ready; startup: started)


def record(state: ProbeState, probe: Probe, success: bool) -> ProbeState:
    """The state after one result: the verdict flips after successThreshold successes in a row,
    or failureThreshold failures in a row."""
    if success:
        n = state.successes + 1
        return ProbeState(n, 0, state.ok or n >= probe.success_threshold)
    n = state.failures + 1
    return ProbeState(0, n, state.ok and n < probe.failure_threshold)


def failed(state: ProbeState, probe: Probe) -> bool:
    """Liveness and startup: the container is to be killed."""
    return state.failures >= probe.failure_threshold


def run(probe: Probe, pod_ip: str, pid: int, env: dict[str, str]) -> tuple[bool, str]:
    """(success, why it failed) of one probe, bounded by its timeout."""
    host = probe.host or pod_ip
    try:
        if probe.kind == "tcp":
            with socket.create_connection((host, probe.port), timeout=probe.timeout):
                return True, ""
        if probe.kind == "http":
            return http_get(probe, host, probe.timeout)
        return run_exec(pid, probe.command, env, probe.timeout)
    except OSError as e:
        target = f"{host}:{probe.port}"
        return False, f"dial tcp {target}: {e.strerror or e}"


def run_exec(pid: int, command: tuple[str, ...], env: dict[str, str], timeout: float) -> tuple[bool, str]:
    """(success, why not) of `command` run inside the container, killed after `timeout`."""
    try:
        proc = subprocess.run(runtime.exec_argv(pid, list(command)), capture_output=True,
                              timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout:g}s"
    if proc.returncode == 0:
        return True, ""
    out = (proc.stdout + proc.stderr).decode(errors="replace").strip()
    return False, f"command {list(command)} exited with {proc.returncode}: {out}"[:400]


def http_get(probe: Probe | Handler, host: str, timeout: float) -> tuple[bool, str]:
    """(success, why not) of a GET to the target's scheme, port and path: 2xx and 3xx succeed."""
    if probe.scheme == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, probe.port, timeout=timeout,
                                                                       context=ctx)
    else:
        conn = http.client.HTTPConnection(host, probe.port, timeout=timeout)
    try:
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **dict(probe.headers)}
        conn.request("GET", probe.path, headers=headers)
        code = conn.getresponse().status
    except http.client.HTTPException as e:
        return False, f"Get \"http://{host}:{probe.port}{probe.path}\": {e}"
    finally:
        conn.close()
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"
