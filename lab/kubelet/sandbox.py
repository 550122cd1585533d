"""A pod's sandbox on this node: its netns and its CNI attachment.

The kubelet runs inside the node's netns and in the root mount namespace, so `ip netns add`
creates namespaces every process sees. Containers enter the pod's netns themselves (nsinit).
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from .. import cniexec, netns
from ..config import LabConfig
from . import layout, pluginroot

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


def saw_ready(path: Path, offset: int = 0) -> bool:
    """Has the lab workload logging to `path` printed its "ready" line (every socket bound)?"""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return any(line.strip() == b"ready" for line in f)
    except OSError:
        return False


# --- CNI ------------------------------------------------------------------------------------------
def plugin_spec(cfg: LabConfig, node: str) -> Path:
    """Where the node's kubelet keeps the plugins' root (pluginroot.plan_spec)."""
    return cfg.node_dir(node) / "cni" / "pluginroot.json"


def plugin_launcher(cfg: LabConfig, node: str) -> tuple[str, ...]:
    """The argv prefix that runs a CNI plugin of `node` as its kubelet does (pluginroot)."""
    return (sys.executable, "-m", "kubeweft.lab.kubelet.pluginroot", str(plugin_spec(cfg, node)))


class Network:
    """The node's CNI: the conflist in the conf dir, run through cniexec."""

    def __init__(self, cfg: LabConfig, node: str, timeout: float = 30.0):
        self.conf_dir = cfg.cni_conf_dir(node)
        # every plugin runs where the node's filesystem is, without the machine's python3
        self.plugin_spec = plugin_spec(cfg, node)
        self.runtime = cniexec.CniRuntime(cfg.cni_bin_dir(node), cfg.cni_data_dir(node), timeout=timeout,
                                          launcher=plugin_launcher(cfg, node), plugin_dir=pluginroot.NODE_BIN)

    def write_plugin_root(self, top: list[dict], paths: layout.NodePaths, masked: list[tuple[str, bool]]) -> None:
        root = self.plugin_spec.parent / "root"
        root.mkdir(parents=True, exist_ok=True)
        for d in pluginroot.NODE_DIRS:
            (paths.host_root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        pluginroot.write_spec(str(self.plugin_spec), pluginroot.plan_spec(top, paths, str(root), masked))

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
