"""The conflist's lifecycle as the DaemonSet runs it: install-cni puts only the executable in place,
the agent (`--cni-conf-dir`) writes the conflist once its CNI server answers, the conflist stays
when the agent stops (a rollout must not turn the node NotReady), and `kubeweft cleanup` removes
it with the executable. The agent waits for its Node's podCIDR from a lab API server; both run in
one scratch netns (prefix h12c), the API server on that netns' loopback.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from kubeweft.lab import netns as lab_netns

from tests.integration.apiserver_proc import KUBECTL, Server
from tests.integration.test_cni_conformance import KUBEWEFT, sh

pytestmark = pytest.mark.integration


def wait_for(what, timeout: float, why: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while not (value := what()):
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise AssertionError(f"{why}\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.1)
    return value


def test_the_agent_writes_the_conflist_once_it_serves_and_cleanup_removes_it(tmp_path):
    node = f"h12c{os.getpid() % 100000}-node"
    bin_dir, conf_dir, run = tmp_path / "bin", tmp_path / "net.d", tmp_path / "run"
    sock, log = run / "agent.sock", tmp_path / "agent.log"
    conflist = conf_dir / "10-kubeweft.conflist"
    sh("ip", "netns", "add", node)
    api = agent = None
    try:
        sh("ip", "-n", node, "link", "set", "lo", "up")
        (tmp_path / "api").mkdir()
        api = Server(tmp_path / "api", f"h12c{os.getpid() % 100000}", preexec_fn=lab_netns.preexec(node))
        subprocess.run([KUBEWEFT, "install-cni", "--bin-dir", str(bin_dir), "--socket", str(sock)],
                       check=True, timeout=60, capture_output=True)
        assert not conf_dir.exists()
        with open(log, "w") as out:
            agent = subprocess.Popen(
                [KUBEWEFT, "agent", "--kubeconfig", str(api.kubeconfig), "--node-name", "n1", "--socket", str(sock),
                 "--state-dir", str(run), "--cni-conf-dir", str(conf_dir), "--overlay", "none", "--no-proxy",
                 "--no-policy", "--healthz-bind-address", "", "--metrics-bind-address", ""],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "KUBEWEFT_CNI_VERSION": "1.1.0"},
                preexec_fn=lab_netns.preexec(node))  # noqa: PLW1509 - main thread only
        # no Node yet: the agent waits for its podCIDR, and the runtime must not see a network
        wait_for(lambda: "waiting for the podCIDR" in log.read_text(), 30, "the agent never waited", agent, log)
        time.sleep(1.0)
        assert agent.poll() is None and not conflist.exists() and not sock.exists()

        subprocess.run([KUBECTL, "create", "-f", "-"], input='{"kind": "Node", "apiVersion": "v1", "metadata": '
                       '{"name": "n1"}}', text=True, env={**os.environ, "KUBECONFIG": str(api.kubeconfig)},
                       check=True, timeout=30, capture_output=True, preexec_fn=lab_netns.preexec(node))
        wait_for(conflist.exists, 30, "no conflist after the Node got its podCIDR", agent, log)
        doc = json.loads(conflist.read_text())
        plugin = doc["plugins"][0]
        assert doc["cniVersion"] == "1.1.0" and plugin["type"] == "kubeweft"
        assert plugin["socket"] == str(sock) and plugin["dataDir"] == str(run / "cni" / "data")
        # the first call a runtime makes once it sees the conflist already finds the agent serving
        net = {"cniVersion": doc["cniVersion"], "name": doc["name"], **plugin}
        status = subprocess.run([str(bin_dir / "kubeweft")], input=json.dumps(net).encode(),
                                env={"CNI_COMMAND": "STATUS", "CNI_PATH": str(bin_dir), "PATH": os.environ["PATH"]},
                                capture_output=True, timeout=30, preexec_fn=lab_netns.preexec(node), check=False)
        assert (status.returncode, status.stdout) == (0, b""), status

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
        assert conflist.exists()                         # stopping is not uninstalling
        done = subprocess.run([KUBEWEFT, "cleanup", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)],
                              check=True, timeout=30, capture_output=True, text=True)
        assert not conflist.exists() and not (bin_dir / "kubeweft").exists()
        assert str(conflist) in done.stdout
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        if api is not None:
            api.stop()
        subprocess.run(["ip", "netns", "del", node], timeout=20, check=False)
