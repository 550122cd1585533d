"""A lab API server alone, as a subprocess on loopback (no namespaces): for tests of clients."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"


def terminate(proc: subprocess.Popen) -> int | None:
    """SIGTERM, SIGKILL if it is still there 10 s later; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class Server:
    def __init__(self, tmp: Path, name: str, history: int = 40, preexec_fn=None, ip_family: str | None = None):
        """preexec_fn: e.g. netns.preexec(ns), to serve on that netns' loopback. ip_family: serve
        a lab of that family ("ipv4", "ipv6", "dual"), written to the lab's state.json as `lab up`
        would."""
        self.root, self.name = tmp, name
        self.state = tmp / name
        if ip_family is not None:
            self.state.mkdir(parents=True, exist_ok=True)
            (self.state / "state.json").write_text(json.dumps({"config": {"name": name, "ip_family": ip_family}}))
        self.kubeconfig = self.state / "kubeconfig"
        env = dict(os.environ, KUBEWEFT_LAB_ROOT=str(tmp))
        self.log = open(tmp / "apiserver.log", "wb")  # noqa: SIM115 (open while the server runs)
        self.proc = subprocess.Popen([sys.executable, "-m", "kubeweft.lab.apiserver", "--lab", name,
                                      "--history", str(history)],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec_fn)  # noqa: PLW1509 - tests start it from the main thread
        ready = self.state / "apiserver.ready"
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("apiserver did not start:\n" + (tmp / "apiserver.log").read_text())
            time.sleep(0.1)
        self.ready = json.loads(ready.read_text())

    def stop(self) -> int | None:
        code = terminate(self.proc)
        self.log.close()
        return code

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), HOME=str(self.root),
                        **(env or {}))
        p = subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, input=input,
                           env=full_env, timeout=timeout, cwd=self.root, check=False)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stdout}{p.stderr}")
        return p
