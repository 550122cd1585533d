"""Where a node keeps things: its own host filesystem under the lab's state dir. Pure.

Every node has a directory of its own (`nodes/<node>/`); a path on "the node" is a path under
`nodes/<node>/host/` so that nodes never share state, except for these:

    /etc/cni/net.d        nodes/<node>/cni/net.d   (the CNI conf dir the kubelet reads)
    /opt/cni/bin          nodes/<node>/cni/bin     (CNI_PATH)
    /var/lib/cni          nodes/<node>/cni/data    (IPAM stores, cached results)
    /run/netns            /run/netns               (pod network namespaces, named per lab)
    /proc /sys /dev /lib/modules                   the machine's (the kernel is shared anyway)

/var/run is /run, as on the real hosts. The kubelet keeps pods where a real one does, so a
hostPath /var/log sees the pod logs: /var/lib/kubelet/pods/<uid>/ and /var/log/pods/<ns>_<pod>_<uid>/.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

PASSTHROUGH = ("/proc", "/sys", "/dev", "/lib/modules", "/usr/lib/modules", "/run/netns")


@dataclass(frozen=True)
class NodePaths:
    node_dir: Path
    conf_dir: Path
    bin_dir: Path
    data_dir: Path
    # PASSTHROUGH paths this machine lacks (a container may have no /lib/modules): the node
    # gets a directory of its own there, as containerd creates a missing hostPath
    absent: frozenset[str] = frozenset()

    @property
    def host_root(self) -> Path:
        return self.node_dir / "host"

    def pod_dir(self, uid: str) -> Path:
        return self.host_root / "var/lib/kubelet/pods" / uid

    def log_dir(self, namespace: str, name: str, uid: str) -> Path:
        return self.host_root / "var/log/pods" / f"{namespace}_{name}_{uid}"


def normalize(path: str) -> str:
    """An absolute, clean path; /var/run is /run."""
    p = posixpath.normpath("/" + path.lstrip("/"))
    if p == "/var/run" or p.startswith("/var/run/"):
        p = "/run" + p[len("/var/run"):]
    return p


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def map_host_path(path: str, paths: NodePaths) -> tuple[Path, bool]:
    """(where node path `path` lives on the machine, whether it is the machine's own)."""
    p = normalize(path)
    for prefix in PASSTHROUGH:
        if _under(p, prefix) and prefix not in paths.absent:
            return Path(p), True
    for prefix, target in (("/etc/cni/net.d", paths.conf_dir), ("/opt/cni/bin", paths.bin_dir),
                           ("/var/lib/cni", paths.data_dir)):
        if _under(p, prefix):
            return target / p[len(prefix):].lstrip("/"), False
    return paths.host_root / p.lstrip("/"), False


def absent_passthrough() -> frozenset[str]:
    """The PASSTHROUGH paths missing on this machine."""
    return frozenset(p for p in PASSTHROUGH if not os.path.exists(p))


def hold_path(node_dir: Path, namespace: str, container: str) -> Path:
    """While this file exists, the node's kubelet starts no container named `container` in a
    pod of `namespace` (nor restarts one that ended)."""
    return node_dir / "hold" / namespace / container
