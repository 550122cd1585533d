"""Container processes: start one through nsinit, watch it, signal it, enter it.

A container is one process (nsinit execs the command in its place), in its own session so it
outlives a kubelet that is killed, with stdout and stderr appended to its log file. It is known
by PID and start time (field 22 of /proc/PID/stat), so a restarted kubelet finds it again and
never mistakes a reused PID for it. Exit codes are known for our own children; a container
adopted after a restart that then ends has an unknown one (ContainerStatusUnknown, as the real
kubelet reports a container its runtime lost).
"""
from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kubelet.runtime")
from .nsinit import START_ERROR  # noqa: F401 (re-exported: the exit code of a container that could not start)

START_TIMEOUT = 30.0             # nsinit's setup (mounts) under load; then the start failed
EXEC_FLAGS = ("-m", "-u", "-n", "-r", "-w")      # mount, UTS, net; the container's root and cwd


class StartError(Exception):
    """The container's command could not be started (runc's StartError, exit code 128)."""


def proc_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None when the PID is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass
class ContainerProcess:
    pid: int
    ticks: int
    popen: subprocess.Popen | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return proc_start_ticks(self.pid) == self.ticks

    def exit_code(self) -> int | None:
        """The exit code (128+N for signal N) of an ended child; None for an adopted process."""
        if self.popen is None or self.popen.returncode is None:
            return None
        rc = self.popen.returncode
        return rc if rc >= 0 else 128 - rc

    def send(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, grace: float) -> None:
        """SIGTERM, up to `grace` seconds, then SIGKILL."""
        self.send(signal.SIGTERM)
        if not self.wait(grace):
            log.info("container %s did not end within %.0fs: SIGKILL", self.pid, grace)
            self.send(signal.SIGKILL)
            self.wait(5.0)

    def record(self) -> dict:
        return {"pid": self.pid, "ticks": self.ticks}


def adopt(entry: dict) -> ContainerProcess | None:
    """The process a pods.json entry names, if it still runs."""
    pid, ticks = entry.get("pid"), entry.get("ticks")
    if not pid or ticks is None or proc_start_ticks(int(pid)) != ticks:
        return None
    return ContainerProcess(int(pid), int(ticks))


def start(spec: dict, spec_path: Path, log_path: Path, env: dict[str, str],
          timeout: float = START_TIMEOUT) -> ContainerProcess:
    """Start a container from its nsinit spec and return once its command runs (StartError if
    it could not be started). Its output is appended to `log_path`."""
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    Path(spec["root"]).mkdir(parents=True, exist_ok=True)
    tmp = spec_path.with_name(spec_path.name + ".tmp")
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, spec_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    r, w = os.pipe()
    try:
        with open(log_path, "ab") as out:
            # output into a file, not a pipe: the container must keep running when we die
            proc = subprocess.Popen([sys.executable, "-m", "kubeweft.lab.kubelet.nsinit", str(spec_path), str(w)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, pass_fds=(w,), env=env, cwd="/")
    finally:
        os.close(w)
    try:
        message = _read_all(r, timeout)
    finally:
        os.close(r)
    if message is None:
        proc.kill()
        proc.wait(5)
        raise StartError(f"the container did not start within {timeout:g}s")
    if message:
        proc.wait(5)
        raise StartError(message)
    ticks = proc_start_ticks(proc.pid)
    return ContainerProcess(proc.pid, ticks if ticks is not None else -1, proc)


def _read_all(fd: int, timeout: float) -> str | None:
    """Everything written to pipe `fd` until it closes; None on timeout."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks).decode(errors="replace").strip()
        chunks.append(data)


def exec_argv(pid: int, command: list[str]) -> list[str]:
    """argv running `command` inside the container whose first process is `pid`."""
    return ["nsenter", "-t", str(pid), *EXEC_FLAGS, "--", *command]
