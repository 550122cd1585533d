"""The lab's named network namespaces (/run/netns/NAME) and commands run inside them.

Entering a netns (setns: `entered`, `call_in`, `preexec`) is the product's, kubeweft.cni.netns,
and is re-exported here for the lab's modules. Prefer `preexec` and `run` to `ip netns exec`,
whose private mount namespace hides namespaces created inside it.
"""
from __future__ import annotations

import subprocess

from kubeweft.cni.netns import NETNS_DIR, call_in, current_inode, entered, path, preexec, setns

__all__ = ["NETNS_DIR", "call_in", "current_inode", "entered", "exists", "path", "preexec", "run", "setns"]


def exists(name: str) -> bool:
    return path(name).exists()


def run(name: str, argv: list[str], *, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run of argv inside the netns."""
    return subprocess.run(argv, preexec_fn=preexec(name), check=check, **kwargs)
