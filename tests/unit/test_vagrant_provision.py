"""tests/e2e/vagrant/provision.sh, the Vagrant VMs' provisioning: its pure functions, run by bash
(the script is sourced, so nothing of main runs), and the script as shellcheck reads it."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "e2e" / "vagrant" / "provision.sh"
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"


def bash(snippet: str, stdin: str = "") -> str:
    p = subprocess.run(["bash", "-c", f"set -euo pipefail; source {SCRIPT}; {snippet}"], input=stdin,
                       capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_the_script_parses():
    p = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, p.stderr


def test_shellcheck_finds_nothing():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (make test-setup installs it)")
    p = subprocess.run(["shellcheck", str(SCRIPT), str(ROOT / "tests" / "e2e" / "run-lab.sh")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stdout


@pytest.mark.parametrize("config, want", [
    # containerd 2 (k3s 1.31 and later): the CNI section always present, k3s's own directories
    (("[plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dir = \"/var/lib/rancher/k3s/data/cni\"\n"
      "  conf_dir = \"/var/lib/rancher/k3s/agent/etc/cni/net.d\"\n"),
     "/var/lib/rancher/k3s/data/cni /var/lib/rancher/k3s/agent/etc/cni/net.d"),
    # a list of bin dirs: the first is where the runtime looks first
    ("[plugins.x.cni]\n  bin_dirs = [\"/a/bin\", \"/b/bin\"]\n  conf_dir = \"/c\"\n", "/a/bin /c"),
    # older k3s without flannel writes no CNI section: containerd's defaults
    ("[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n",
     "/opt/cni/bin /etc/cni/net.d"),
])
def test_cni_dirs_come_from_containerds_config(tmp_path, config, want):
    path = tmp_path / "config.toml"
    path.write_text(config)
    assert bash(f"cni_dirs {path}").strip() == want


def test_cni_dirs_without_a_config_are_containerds_defaults(tmp_path):
    assert bash(f"cni_dirs {tmp_path / 'none.toml'}").strip() == "/opt/cni/bin /etc/cni/net.d"


def test_the_kubeconfig_names_the_server():
    k3s_yaml = "clusters:\n- cluster:\n    server: https://127.0.0.1:6443\n  name: default\n"
    out = bash("render_kubeconfig 192.168.56.10", stdin=k3s_yaml)
    assert "server: https://192.168.56.10:6443" in out and "127.0.0.1" not in out


def test_the_overlay_names_this_clusters_server_and_cni_dirs(tmp_path):
    bash(f"render_overlay {tmp_path / 'overlay'} {ROOT / 'deploy' / 'k3s'} 10.9.8.7 /x/bin /x/net.d")
    p = subprocess.run([str(KUBECTL), "kustomize", str(tmp_path / "overlay")], capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(p.stdout) if d}
    assert docs[("ConfigMap", "kubeweft-api-endpoint")]["data"]["KUBERNETES_SERVICE_HOST"] == "10.9.8.7"
    # the overlay's interface: the one of the route to the server (the private network, never NAT)
    assert docs[("ConfigMap", "kubeweft-config")]["data"]["iface-can-reach"] == "10.9.8.7"
    volumes = {v["name"]: v.get("hostPath", {}).get("path")
               for v in docs[("DaemonSet", "kubeweft")]["spec"]["template"]["spec"]["volumes"]}
    assert (volumes["cni-bin"], volumes["cni-conf"]) == ("/x/bin", "/x/net.d")


def test_loopback_is_installed_once_where_missing(tmp_path):
    if not Path("/usr/lib/cni/loopback").exists():
        pytest.skip("Debian's containernetworking-plugins is not installed (make setup installs it)")
    out = bash(f"install_loopback {tmp_path / 'bin'}; install_loopback {tmp_path / 'bin'}")
    assert out.count("installed loopback") == 1
    assert (tmp_path / "bin" / "loopback").read_bytes() == Path("/usr/lib/cni/loopback").read_bytes()
    assert not list((tmp_path / "bin").glob(".*"))
