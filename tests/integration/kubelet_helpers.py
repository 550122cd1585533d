"""Helpers of the kubelet-as-a-runtime tests: a lab with kubelet settings in its environment,
kubectl with YAML/JSON in and JSON out, a kubectl driven under a pty, the root mount table."""
from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import time
from collections.abc import Iterator

from .conftest import KUBECTL, Lab, fresh_lab, unique_lab_name


@contextlib.contextmanager
def lab_with_env(env: dict[str, str], prefix: str = "t", **kw) -> Iterator[Lab]:
    """fresh_lab with `env` set while `lab up` starts the lab's processes (they keep it)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with fresh_lab(unique_lab_name(prefix), **kw) as lab:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield lab
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def apply(lab: Lab, *docs: dict) -> None:
    for doc in docs:
        lab.kubectl("apply", "-f", "-", input=json.dumps(doc))


def get(lab: Lab, *args: str) -> dict:
    return json.loads(lab.kubectl("get", *args, "-o", "json").stdout)


def container_status(pod: dict, name: str | None = None, init: bool = False) -> dict:
    key = "initContainerStatuses" if init else "containerStatuses"
    statuses = (pod.get("status") or {}).get(key) or []
    return next((s for s in statuses if name is None or s["name"] == name), {})


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def root_mounts() -> list[str]:
    """The root mount table as this process sees it, minus network namespaces (nsfs entries that
    `ip netns add` makes; the netns guard watches those)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split(" ", 4)[4] for line in f if " - nsfs " not in line)


class PtyKubectl:
    """kubectl run on a pseudo-terminal, as a user's terminal would run it."""

    def __init__(self, lab: Lab, *args: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:                                 # the child: exec at once
            os.environ["KUBECONFIG"] = str(lab.kubeconfig)
            os.execv(KUBECTL, [KUBECTL, *args])
        self.out = b""

    def read_until(self, text: bytes, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} within {timeout:g}s; got {self.out!r}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"kubectl ended before {text!r}; got {self.out!r}")
                self.out += chunk
        return self.out

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                if select.select([self.fd], [], [], 0.2)[0]:
                    self.out += os.read(self.fd, 4096)
        self.kill()
        raise AssertionError(f"kubectl did not exit within {timeout:g}s; got {self.out!r}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            os.close(self.fd)
