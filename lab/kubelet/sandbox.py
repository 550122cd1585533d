"""A pod's sandbox on this node: its netns, its CNI attachment and its workload process.

The kubelet runs inside the node's netns and in the root mount namespace, so `ip netns add`
creates namespaces every process sees. Workloads enter their pod netns through `nsenter --net`
(thread-safe, unlike a preexec_fn in this threaded process) and run in their own session, so
they outlive a kubelet that is killed; a restarted kubelet finds them again by PID.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import cniexec, netns
from ..config import LabConfig

log = logging.getLogger("kubelet.sandbox")
IP_TIMEOUT = 10.0


class SandboxError(Exception):
    """Setting up a pod sandbox failed (netns, workload); CNI failures are cniexec.CniError."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SandboxError(f"ip {' '.join(args)}: timed out") from None
    if check and proc.returncode != 0:
        raise SandboxError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def ensure_netns(name: str) -> None:
    """The pod's netns, with lo up; idempotent."""
    if not netns.exists(name):
        _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")


def delete_netns(name: str) -> None:
    if netns.exists(name):
        _ip("netns", "del", name, check=False)


# --- the workload process ------------------------------------------------------------------------
class Workload:
    """A workload process: our child (Popen) or one adopted after a restart (PID only)."""

    def __init__(self, pid: int, popen: subprocess.Popen | None = None, pod_key: str = ""):
        self.pid = pid
        self.popen = popen
        self.pod_key = pod_key        # NS/NAME: guards an adopted PID against reuse

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_runs_workload(self.pid, self.pod_key)

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> bool:
        """True when the process has ended within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, grace: float) -> None:
        """SIGTERM, up to `grace` seconds, then SIGKILL."""
        self.signal(signal.SIGTERM)
        if not self.wait(grace):
            log.info("workload %s did not end within %.0fs: SIGKILL", self.pid, grace)
            self.signal(signal.SIGKILL)
            self.wait(5.0)


def pid_runs_workload(pid: int | None, pod_key: str) -> bool:
    """Is `pid` a live (not zombie) lab workload for pod `pod_key` (NS/NAME)?"""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X") and "kubeweft.lab.workload" in argv and is_pod_arg(argv, pod_key)


def is_pod_arg(argv: list[str], pod_key: str) -> bool:
    return any(a == "--pod" and b == pod_key for a, b in itertools.pairwise(argv))


def workload_argv(cfg: LabConfig, pod_key: str, ports: str, netns_name: str | None) -> list[str]:
    argv = [sys.executable, "-m", "kubeweft.lab.workload", "--lab", cfg.name, "--pod", pod_key, "--ports", ports]
    if netns_name:
        argv = ["nsenter", f"--net={netns.path(netns_name)}", "--", *argv]
    return argv


def start_workload(cfg: LabConfig, pod_key: str, ports: str, netns_name: str | None, log_path: Path,
                   ready_timeout: float = 20.0, env: dict[str, str] | None = None) -> Workload:
    """Start the workload (in the pod netns, or the node's for hostNetwork) and wait, bounded,
    for the "ready" line it prints once every socket is bound. Its output goes to `log_path`.
    `env` is the container's env (e.g. KUBEWEFT_TERM_DELAY: keep serving after SIGTERM)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as f:
        start = f.tell()
        # stdout into a file, not a pipe: the workload must keep running when we die
        proc = subprocess.Popen(workload_argv(cfg, pod_key, ports, netns_name), stdin=subprocess.DEVNULL,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True, cwd=str(Path(__file__).resolve().parents[2]),
                                env=render_workload_env(os.environ, env or {}))
    wl = Workload(proc.pid, proc, pod_key)
    deadline = time.monotonic() + ready_timeout
    while True:
        if _saw_ready(log_path, start):
            return wl
        if proc.poll() is not None:
            raise SandboxError(f"workload exited with code {proc.returncode} before ready: "
                               f"{_tail(log_path, start)}")
        if time.monotonic() >= deadline:
            wl.stop(0.5)
            raise SandboxError(f"workload not ready within {ready_timeout:g}s: {_tail(log_path, start)}")
        time.sleep(0.02)


def render_workload_env(base: dict[str, str] | os._Environ, container_env: dict[str, str]) -> dict[str, str]:
    """The container's env over ours, except the lab id: `lab down` finds processes by it."""
    env = {**base, **container_env, "PYTHONUNBUFFERED": "1"}
    for keep in ("KUBEWEFT_LAB_ID", "PATH"):
        if keep in base:
            env[keep] = base[keep]
        else:
            env.pop(keep, None)
    return env


def _saw_ready(path: Path, offset: int) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return any(line.strip() == b"ready" for line in f)
    except OSError:
        return False


def _tail(path: Path, offset: int, limit: int = 400) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").strip()[-limit:]
    except OSError:
        return ""


# --- CNI ------------------------------------------------------------------------------------------
class Network:
    """The node's CNI: the conflist in the conf dir, run through cniexec."""

    def __init__(self, cfg: LabConfig, node: str, timeout: float = 30.0):
        self.conf_dir = cfg.cni_conf_dir(node)
        self.runtime = cniexec.CniRuntime(cfg.cni_bin_dir(node), cfg.cni_data_dir(node), timeout=timeout)

    def config(self) -> cniexec.NetworkConfig:
        net = cniexec.load_network_config(self.conf_dir)
        if net is None:
            raise cniexec.CniError(cniexec.RUNTIME_ERROR, "no CNI configuration in " + str(self.conf_dir))
        return net

    def ready(self) -> bool:
        try:
            return cniexec.load_network_config(self.conf_dir) is not None
        except (cniexec.ConfigError, OSError):
            return False

    def runtime_conf(self, sandbox_id: str, netns_name: str, namespace: str, name: str,
                     port_mappings: list[dict] | None = None) -> cniexec.RuntimeConf:
        caps = {"portMappings": port_mappings} if port_mappings else {}
        return cniexec.RuntimeConf(sandbox_id, str(netns.path(netns_name)), "eth0",
                                   cniexec.kubernetes_args(namespace, name, sandbox_id), caps)

    def add(self, rt: cniexec.RuntimeConf) -> dict:
        return self.runtime.add(self.config(), rt)

    def delete(self, rt: cniexec.RuntimeConf) -> None:
        net = cniexec.load_network_config(self.conf_dir)
        if net is None:          # nothing was ever attached through a config we no longer have
            return
        self.runtime.delete(net, rt)
