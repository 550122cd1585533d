"""kubeweft as a user installs it: the wheel built from this checkout, installed with its core
dependencies (not the [lab] extra) into a fresh venv that sees Debian's python3-nftables
(--system-site-packages), everything run from a directory outside the checkout.

- the distribution installs one top-level import package, kubeweft, and none of the names the
  product's folders carry in the checkout (cni, proxy, lab, proto);
- importing the agent's and the CNI's modules loads none of the lab's dependencies;
- that install's `kubeweft agent` starts in a scratch network namespace against a lab API
  server and serves the CNI (STATUS through that install's `kubeweft-cni`) and /healthz.

The API server (from the dev venv) listens on the control-plane address inside the scratch
netns, as it does in a lab's underlay; the agent runs there with the nodes' kubeconfig.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubeweft.lab import netns

from tests.integration import agent_helpers
from tests.integration.apiserver_proc import terminate

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
LAB_DEPENDENCIES = ("aiohttp", "cryptography", "yaml", "jsonpatch")
AGENT_AND_CNI = ("kubeweft.proxy.agent", "kubeweft.proxy.service_proxy", "kubeweft.proxy.policy_controller",
                 "kubeweft.cni.plugin", "kubeweft.cni.shim")
POD_CIDR = "10.244.7.0/24"


def checkout_files() -> list[str]:
    """The files of the checkout that git tracks or would track (no .venv, build, caches)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True, timeout=30).stdout
    return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with the wheel of this checkout and its core dependencies installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy: an in-tree build keeps build/lib between runs, and a module removed
    # since the last build would still ship
    src = tmp / "src"
    for f in checkout_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
                   cwd=tmp, check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("kubeweft-*.whl")
    env = tmp / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--system-site-packages", str(env)],
                   cwd=tmp, check=True, capture_output=True, timeout=120)
    proc = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           str(wheel)], cwd=tmp, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env


def run_python(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_distribution_installs_kubeweft_alone(venv):
    (dist_info,) = (venv / "lib").glob("python3*/site-packages/kubeweft-*.dist-info")
    assert (dist_info / "top_level.txt").read_text().split() == ["kubeweft"]


def test_the_folder_names_are_not_importable(venv, tmp_path):
    """A name the system provides (proto-plus's `proto`, say) may import, but never as kubeweft's."""
    code = """
import importlib, json, sys
out = {}
for name in ("proto", "proxy", "cni", "lab"):
    try:
        m = importlib.import_module(name)
    except ImportError:
        out[name] = None
    else:
        out[name] = getattr(m, "__file__", None) or str(list(getattr(m, "__path__", [])))
import kubeweft
out["kubeweft"] = kubeweft.__file__
print(json.dumps(out))
"""
    proc = run_python(venv, code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    site = str(venv / "lib")
    assert found.pop("kubeweft").startswith(site)           # the install, not the checkout
    for name, where in found.items():
        assert where is None or (site not in where and str(ROOT) not in where), (name, where)


def test_the_agent_and_cni_import_no_lab_dependency(venv, tmp_path):
    code = ("import importlib, json, sys\n"
            f"for m in {AGENT_AND_CNI!r}: importlib.import_module(m)\n"
            f"print(json.dumps([m for m in {LAB_DEPENDENCIES!r} if m in sys.modules]))\n")
    proc = run_python(venv, code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


# --- the agent from the install ------------------------------------------------------------------

def cni_status(venv: Path, sock: Path, cwd: Path) -> subprocess.CompletedProcess:
    conf = {"cniVersion": "1.1.0", "name": "kubeweft", "type": "kubeweft", "socket": str(sock)}
    return subprocess.run([str(venv / "bin" / "kubeweft-cni")], input=json.dumps(conf), text=True, cwd=cwd,
                          env={"CNI_COMMAND": "STATUS", "PATH": os.environ["PATH"]},
                          capture_output=True, timeout=30, check=False)


@pytest.fixture
def lab_api(tmp_path):
    with agent_helpers.lab_api(tmp_path, f"h10w{os.getpid() % 100000}") as (server, ns, _):
        yield server, ns


def test_the_installed_agent_starts_and_serves(venv, lab_api, tmp_path):
    server, ns = lab_api
    node = "wheelnode"
    server.kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}, "spec": {"podCIDR": POD_CIDR}}))
    sock = tmp_path / "run" / "agent.sock"
    log_path = tmp_path / "agent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KUBE", "NODE_NAME"))}
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(
            [str(venv / "bin" / "kubeweft"), "agent", "--kubeconfig", str(server.state / "kubeconfig-nodes"),
             "--node-name", node, "--socket", str(sock), "--state-dir", str(tmp_path / "state"),
             "--cluster-cidr", "10.244.0.0/16", "--pod-cidr-timeout", "30"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=netns.preexec(ns))  # noqa: PLW1509 - the test's main thread
    try:
        deadline = time.monotonic() + 90
        status = None
        while True:
            assert agent.poll() is None, f"the agent exited {agent.returncode}:\n{log_path.read_text()[-4000:]}"
            status = cni_status(venv, sock, tmp_path)
            if status.returncode == 0 and agent_helpers.health(ns, "/healthz") == 200:
                break
            assert time.monotonic() < deadline, \
                f"no CNI STATUS / healthz in 90 s ({status.stdout}):\n{log_path.read_text()[-4000:]}"
            time.sleep(0.5)
        text = log_path.read_text()
        assert "service proxy (IPv4) started" in text and "policy controller started" in text, text[-4000:]
        assert f"podCIDR {POD_CIDR}" in text
        # the install's console script, run by the venv's python (its shebang)
        argv = Path(f"/proc/{agent.pid}/cmdline").read_bytes().split(b"\0")
        assert [a.decode() for a in argv[:3]] == [str(venv / "bin" / "python"), str(venv / "bin" / "kubeweft"),
                                                  "agent"]
    finally:
        rc = terminate(agent)
    assert rc == 0, log_path.read_text()[-4000:]          # SIGTERM ends its watches and it exits
