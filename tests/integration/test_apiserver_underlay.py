"""The API server also listens on the control-plane address inside the lab's underlay netns
(a socket made on a helper thread there), while its process stays in the root netns."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubeweft.lab import netns

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]


@pytest.fixture(params=["ipv4", "dual"])
def underlay(request, tmp_path):
    name = f"h1u{os.getpid()}"
    ns = f"{name}-underlay"
    (tmp_path / name).mkdir()
    (tmp_path / name / "state.json").write_text(json.dumps({"config": {"name": name, "ip_family": request.param}}))
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        # the address lives on a bridge (as the lab's LAN) inside the lab netns, never in the root one
        for cmd in (["link", "set", "lo", "up"], ["link", "add", "lan0", "type", "bridge"],
                    ["addr", "add", "192.168.56.1/24", "dev", "lan0"],
                    ["addr", "add", "2001:db8:56::1/64", "dev", "lan0", "nodad"], ["link", "set", "lan0", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True, timeout=10)
        yield name, ns, request.param
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=10, check=False)
        assert not netns.exists(ns)


def test_listens_in_underlay_and_on_loopback(underlay, tmp_path):
    name, ns, family = underlay
    root_inode = netns.current_inode()
    env = dict(os.environ, KUBEWEFT_LAB_ROOT=str(tmp_path))
    log = open(tmp_path / "apiserver.log", "wb")  # noqa: SIM115 (open while the server runs)
    proc = subprocess.Popen([sys.executable, "-m", "kubeweft.lab.apiserver", "--lab", name], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = tmp_path / name / "apiserver.ready"
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "apiserver.log").read_text()
            time.sleep(0.1)
        assert json.loads(ready.read_text())["pid"] == proc.pid
        # the process itself is in the root netns
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == root_inode
        kc_env = dict(os.environ, HOME=str(tmp_path))
        inside = netns.run(ns, [str(KUBECTL), "--kubeconfig", str(tmp_path / name / "kubeconfig-nodes"),
                                "get", "namespaces", "-o", "name"],
                           capture_output=True, text=True, timeout=20, env=kc_env)
        assert inside.returncode == 0, inside.stderr
        assert "namespace/kube-system" in inside.stdout
        if family == "dual":
            # and on the IPv6 control-plane address, named in the serving certificate
            v6 = netns.run(ns, [str(KUBECTL), "--kubeconfig", str(tmp_path / name / "kubeconfig-nodes"),
                                "--server", "https://[2001:db8:56::1]:6443", "get", "namespaces", "-o", "name"],
                           capture_output=True, text=True, timeout=20, env=kc_env)
            assert v6.returncode == 0 and "namespace/kube-system" in v6.stdout, v6.stderr
        outside = subprocess.run([str(KUBECTL), "--kubeconfig", str(tmp_path / name / "kubeconfig"),
                                  "get", "namespaces", "-o", "name"],
                                 capture_output=True, text=True, timeout=20, env=kc_env, check=False)
        assert outside.returncode == 0 and "namespace/default" in outside.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            log.close()
