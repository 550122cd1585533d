"""A missing dependency stops the agent at start, naming the package to install; the CNI plugin
does not run its masquerade and hostPorts without libnftables either.

Each case runs in a fresh interpreter where the module cannot be imported (None in sys.modules,
so `import nftables` raises ModuleNotFoundError as it does where python3-nftables is absent).
The agent gets no --node-name: had the check not stopped it, it would exit 2 before touching
anything.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

AGENT_WITHOUT = """
import sys
sys.modules[{module!r}] = None
from kubeweft.cli import main
sys.exit(main(["agent", *{args!r}]))
"""
# the CNI alone: state under /dev/null, so that an agent the check did not stop fails at its IPAM
# store, before it makes a bridge
CNI_ONLY = ["--test-pod-cidr", "10.99.0.0/24", "--state-dir", "/dev/null/kubeweft", "--socket", "/dev/null/sock"]

PLUGIN_WITHOUT_NFTABLES = """
import sys
sys.modules["nftables"] = None
from kubeweft.cni.plugin import CniPlugin
try:
    CniPlugin("10.99.0.0/24", {data!r}, mtu=1450)
except ModuleNotFoundError as e:
    print(e)
    sys.exit(3)
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_NAME", "KUBECONFIG")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


@pytest.mark.parametrize(("module", "install"), [
    ("nftables", "apt-get install python3-nftables"),
    ("pyroute2", "pip install 'pyroute2>=0.9'"),
    ("kubernetes", "pip install kubernetes"),
])
def test_the_agent_refuses_to_start_without(module, install):
    proc = run_python(AGENT_WITHOUT.format(module=module, args=[]))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        f"kubeweft agent: cannot start: no python module {module!r} ({install})"


def test_the_agent_with_everything_gets_past_the_check():
    proc = run_python(AGENT_WITHOUT.format(module="a_module_nobody_imports", args=[]))
    assert proc.returncode == 2 and "--node-name" in proc.stderr, proc.stderr


def test_the_cni_alone_needs_libnftables_but_not_the_kubernetes_client():
    proc = run_python(AGENT_WITHOUT.format(module="nftables", args=CNI_ONLY))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == \
        "kubeweft agent: cannot start: no python module 'nftables' (apt-get install python3-nftables)"
    proc = run_python(AGENT_WITHOUT.format(module="kubernetes", args=CNI_ONLY))
    assert "no python module" not in proc.stderr and "/dev/null/kubeweft" in proc.stderr, proc.stderr


def test_the_cni_plugin_needs_libnftables(tmp_path):
    proc = run_python(PLUGIN_WITHOUT_NFTABLES.format(data=str(tmp_path)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "apt-get install python3-nftables" in proc.stdout
