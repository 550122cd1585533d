"""`kubeweft lab exec|node-exec|ext-exec`: run a command inside a pod's, a node's or the
external host's network namespace, with the caller's stdio, returning its exit code.

The command enters the netns with setns between fork and exec (netns.preexec), so it stays in
the root mount namespace, like the lab's own processes. It does not carry KUBEWEFT_LAB_ID:
`lab down` ends the lab's processes, not a user's shell.
"""
from __future__ import annotations

import os
import subprocess
import sys

from . import netns
from .config import LabConfig
from .errors import LabError
from .lifecycle import load_config, read_pods_json


def parse_pod_target(target: str) -> tuple[str, str]:
    """"NS/POD" -> (NS, POD); a bare "POD" is in namespace "default"."""
    ns, sep, pod = target.partition("/")
    if not sep:
        ns, pod = "default", target
    if not ns or not pod or "/" in pod:
        raise LabError(f"bad pod {target!r}: expected NAMESPACE/POD")
    return ns, pod


def pod_netns(cfg: LabConfig, target: str) -> str:
    """The netns of pod NS/POD, from the kubelets' pods.json."""
    ns, pod = parse_pod_target(target)
    for entry in read_pods_json(cfg).values():
        if entry.get("namespace") == ns and entry.get("name") == pod and entry.get("netns"):
            return entry["netns"]
    raise LabError(f"pod {ns}/{pod} is not running in lab {cfg.name}")


def resolve_netns(cfg: LabConfig, verb: str, target: str | None) -> str:
    if verb == "ext-exec":
        ns = cfg.external_netns
    elif verb == "node-exec":
        if not target:
            raise LabError("node-exec needs a NODE")
        ns = cfg.node_netns(target)
    elif verb == "exec":
        if not target:
            raise LabError("exec needs NS/POD")
        ns = pod_netns(cfg, target)
    else:
        raise LabError(f"unknown verb {verb!r}")
    if not (netns.exists(ns) or (os.path.isabs(ns) and os.path.exists(ns))):
        raise LabError(f"lab {cfg.name}: no network namespace {ns} (is the lab up?)")
    return ns


def exec_command(name: str, verb: str, target: str | None, cmd: list[str]) -> int:
    try:
        ns = resolve_netns(load_config(name), verb, target)
    except LabError as e:
        print(str(e), file=sys.stderr)
        return 1
    try:
        proc = subprocess.run(cmd, check=False, preexec_fn=netns.preexec(ns))
    except FileNotFoundError:
        print(f"kubeweft lab {verb}: {cmd[0]}: command not found", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"kubeweft lab {verb}: {cmd[0]}: permission denied", file=sys.stderr)
        return 126
    except KeyboardInterrupt:
        return 130
    # A child killed by a signal: the shell convention, 128 + signal number.
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
