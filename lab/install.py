"""kubeweft on a lab, installed as its users install it: `kubectl apply -k deploy/lab` with the
lab's admin kubeconfig, then the DaemonSet's rollout; and where its agents are once they run
(a container of the kubeweft pod on each node: its process, its log).

The lab's nodes start with no CNI (NotReady); the DaemonSet's init container copies the frozen
CNI executable into each node's /opt/cni/bin, and the agent writes the conflist once it serves,
which turns the node Ready.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .config import LabConfig
from .errors import LabError

CHECKOUT = Path(__file__).resolve().parents[1]
OVERLAY = CHECKOUT / "deploy" / "lab"
NAMESPACE = "kube-system"
DAEMONSET = "kubeweft"
AGENT_CONTAINER = "agent"
POD_PREFIX = f"{NAMESPACE}_{DAEMONSET}-"
KUBECTL_TIMEOUT = 60.0
DEFAULTS = LabConfig()


def kubectl_path() -> str:
    """This virtualenv's kubectl (make setup puts it there), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise LabError("kubectl not found (run `make setup`)")
    return found


def kubectl(cfg: LabConfig, *args: str, timeout: float = KUBECTL_TIMEOUT) -> subprocess.CompletedProcess:
    """The real kubectl with the lab's admin kubeconfig; LabError when it fails or times out."""
    argv = [kubectl_path(), "--kubeconfig", str(cfg.kubeconfig), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"kubectl {' '.join(args)} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        raise LabError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc


# --- the manifests ---------------------------------------------------------------------------------
def plan_config(cfg: LabConfig) -> dict[str, str]:
    """kubeweft-config keys where this lab differs from deploy/lab's (a lab's defaults). Pure."""
    out = {}
    if cfg.backend != DEFAULTS.backend:
        out["backend"] = cfg.backend
    if cfg.cluster_cidrs != DEFAULTS.cluster_cidrs:
        # one range per family, primary first, comma-separated (kube-proxy's --cluster-cidr)
        out["cluster-cidr"] = ",".join(cfg.cluster_cidrs)
    return out


def render_kustomization(overlay: str, config: dict[str, str]) -> str:
    """An overlay on deploy/lab (`overlay`: its path relative to this one's folder, as kustomize
    takes no absolute one) that sets `config` in kubeweft-config. Pure."""
    patch = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "kubeweft-config", "namespace": NAMESPACE}, "data": config}
    return json.dumps({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                       "resources": [overlay], "patches": [{"patch": json.dumps(patch)}]}, indent=2)


def apply_manifests(cfg: LabConfig) -> str:
    """`kubectl apply -k deploy/lab` (or an overlay on it for a lab that differs). Returns the dir."""
    config = plan_config(cfg)
    target = OVERLAY
    if config:
        target = cfg.state_dir / "deploy"
        target.mkdir(parents=True, exist_ok=True)
        (target / "kustomization.yaml").write_text(render_kustomization(os.path.relpath(OVERLAY, target), config)
                                                   + "\n")
    kubectl(cfg, "apply", "-k", str(target))
    return str(target)


# --- the rollout ---------------------------------------------------------------------------------
def rollout_status(ds: dict, nodes: int) -> str | None:
    """None once the DaemonSet is rolled out on `nodes` nodes, as `kubectl rollout status`
    says it (every scheduled pod updated and available, the latest generation observed); else
    what it waits for. Pure."""
    meta, st = ds.get("metadata") or {}, ds.get("status") or {}
    if st.get("observedGeneration", 0) < meta.get("generation", 1):
        return "waiting for the daemon set spec update to be observed"
    desired = st.get("desiredNumberScheduled", 0)
    if desired < nodes:
        return f"{desired} of {nodes} nodes scheduled"
    updated, available = st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0)
    if updated < desired:
        return f"{updated} of {desired} updated pods are available"
    if available < desired:
        return f"{available} of {desired} updated pods are available"
    return None


def wait_rollout(cfg: LabConfig, nodes: int, deadline: float, alive=lambda: None) -> None:
    """Until rollout_status says done; `alive` raises when a lab process died."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    client = k8s_config.new_client_from_config(config_file=str(cfg.kubeconfig))
    try:
        apps = k8s.AppsV1Api(client)
        why = "no DaemonSet yet"
        while True:
            alive()
            try:
                resp = apps.read_namespaced_daemon_set(DAEMONSET, NAMESPACE, _preload_content=False,
                                                       _request_timeout=5)
                why = rollout_status(json.loads(resp.data), nodes)
            except Exception as e:  # noqa: BLE001 - the API server is ours: transient
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
            if why is None:
                return
            if time.monotonic() >= deadline:
                raise LabError(f"daemon set {NAMESPACE}/{DAEMONSET} not rolled out in time: {why}")
            time.sleep(0.25)
    finally:
        client.close()


# --- the agents ---------------------------------------------------------------------------------
def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def is_agent(pid: int, node: str) -> bool:
    """Is `pid` a kubeweft agent of `node`: `kubeweft agent ...` with NODE_NAME=node (the
    downward API's spec.nodeName, as the DaemonSet sets it)."""
    argv = _read(f"/proc/{pid}/cmdline").split(b"\0")
    if b"agent" not in argv[:3] or not any(a.endswith(b"kubeweft") for a in argv[:2]):
        return False
    return f"NODE_NAME={node}".encode() in _read(f"/proc/{pid}/environ").split(b"\0")


def agent_logs(cfg: LabConfig, node: str) -> list[Path]:
    """The agent container's logs on `node`, oldest first (one per restart; the kubelet keeps
    the current and the previous one, under the node's /var/log/pods as a real one does)."""
    pods = cfg.node_dir(node) / "host" / "var" / "log" / "pods"
    logs = [p for d in pods.glob(f"{POD_PREFIX}*") for p in (d / AGENT_CONTAINER).glob("*.log")]

    def order(p: Path) -> tuple[float, int]:
        try:
            return p.parent.parent.stat().st_mtime, int(p.stem)
        except (OSError, ValueError):
            return 0.0, 0
    return sorted(logs, key=order)


def agent_log(cfg: LabConfig, node: str) -> Path:
    """The running (or last) agent container's log on `node`."""
    logs = agent_logs(cfg, node)
    return logs[-1] if logs else cfg.node_dir(node) / "host" / "var" / "log" / "pods" / "(no agent log yet)"


def agent_log_text(cfg: LabConfig, node: str) -> str:
    """Every agent log still on `node`, oldest first, as one text."""
    return "".join(p.read_text(errors="replace") for p in agent_logs(cfg, node) if p.exists())
