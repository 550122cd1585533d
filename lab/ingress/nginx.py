"""The nginx child process: its files under one state directory, a tested configuration written
atomically, start, reload and stop.

    STATE/conf/nginx.conf      the live configuration (replaced by rename, only after `nginx -t`)
    STATE/conf/certs/*.pem     key and certificate of each Secret in use, named by content hash
    STATE/nginx.pid, logs/error.log, logs/access.log, tmp/<kind>   (never /run or /var/log)

nginx runs in the foreground (`daemon off`) as this process's child, so its master's PID is
known without the pid file: a reload is SIGHUP to it (what `nginx -s reload` sends after reading
the pid file) and a stop is SIGQUIT (graceful), then SIGTERM. The master gets SIGTERM from the
kernel when this process dies (PR_SET_PDEATHSIG), so it never outlives the controller.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from ..files import write_atomic

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM to the child when its parent (the controller) exits, however it exits."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Nginx:
    def __init__(self, state_dir: Path, binary: str = "nginx"):
        self.state_dir = state_dir.resolve()
        self.binary = binary
        self.conf_dir = self.state_dir / "conf"
        self.conf = self.conf_dir / "nginx.conf"
        self.error_log = self.state_dir / "logs" / "error.log"
        self.proc: subprocess.Popen | None = None
        for d in (self.conf_dir / "certs", self.state_dir / "logs", *(self.state_dir / "tmp" / k for k in TEMP_KINDS)):
            d.mkdir(parents=True, exist_ok=True)

    def _argv(self, conf: Path) -> list[str]:
        # -e: the error log nginx opens before it reads the configuration (else the compiled-in
        # /var/log/nginx/error.log)
        return [self.binary, "-p", f"{self.state_dir}/", "-c", str(conf), "-e", str(self.error_log)]

    def test(self, conf: Path) -> tuple[bool, str]:
        p = subprocess.run([*self._argv(conf), "-t", "-q"], capture_output=True, text=True, timeout=30, check=False)
        return p.returncode == 0, p.stderr.strip()

    def apply(self, conf_text: str, files: dict[str, bytes]) -> tuple[bool, str]:
        """Write the certificate files, test the new configuration beside the live one, and only
        when it passes put it in place (a rename) and reload. Returns (applied, nginx's words)."""
        for name, data in files.items():
            path = self.conf_dir / name
            if not path.exists() or path.read_bytes() != data:
                write_atomic(path, data, 0o600)
        candidate = self.conf_dir / "nginx.conf.new"
        write_atomic(candidate, conf_text, 0o644)
        ok, out = self.test(candidate)
        if not ok:
            log.error("new configuration refused by nginx -t, the live one stays: %s", out)
            return False, out
        os.replace(candidate, self.conf)
        self.reload()
        self._remove_unused_certs(set(files))
        return True, out

    def _remove_unused_certs(self, keep: set[str]) -> None:
        for path in (self.conf_dir / "certs").glob("*.pem"):
            name = f"certs/{path.name}"
            if name not in keep and path.name != "default.pem":
                path.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> int:
        """Start the master on the live configuration; returns its PID once nginx serves."""
        ok, out = self.test(self.conf)
        if not ok:
            raise RuntimeError(f"nginx -t failed on {self.conf}: {out}")
        self.proc = subprocess.Popen([*self._argv(self.conf), "-g", "daemon off; master_process on;"],
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)  # noqa: PLW1509
        # nginx writes its pid file after it has bound its listening sockets: then it serves
        deadline = time.monotonic() + timeout
        while self._pid_file() != self.proc.pid:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start (exit {self.proc.returncode}); see {self.error_log}")
            time.sleep(0.02)
        log.info("nginx started, master pid %d", self.proc.pid)
        return self.proc.pid

    def _pid_file(self) -> int | None:
        try:
            return int((self.state_dir / "nginx.pid").read_text())
        except (OSError, ValueError):
            return None

    def reload(self) -> None:
        if self.running:
            os.kill(self.proc.pid, signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Graceful stop (SIGQUIT lets requests finish), then SIGTERM, then SIGKILL."""
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGQUIT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            deadline = time.monotonic() + wait
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        return self.proc.wait(5)
