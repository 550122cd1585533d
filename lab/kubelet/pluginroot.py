"""`python -m kubeweft.lab.kubelet.pluginroot SPEC.json PLUGIN`: run a CNI plugin in the node's
filesystem, as the runtime of a kind node runs it.

A kind node is a container of its own: its /opt/cni/bin, /run, /var are the node's, and it has
no python3. The lab's kubelet runs every plugin through this launcher, so a plugin sees:

    /opt/cni/bin, /var/lib/cni   the node's CNI bin and data dirs (layout.py)
    /run, /var, /opt             the node's own (nodes/<node>/host/...): /run/kubeweft is where
                                 the agent's hostPath volume puts its socket
    /run/netns                   the machine's (the pods' namespaces)
    /usr, /etc, /bin, ...        the machine's, read-only, with python3 masked (its executables
                                 and libraries, this checkout and its virtualenv): only a
                                 self-contained executable runs, as on kind's node image

The launcher makes its own mount namespace (nsinit.setup: nothing reaches the root one), then
execs PLUGIN there with its stdin, stdout and environment. A failure before the exec is printed
on stderr with exit code 1, which the runtime reports as the plugin's failure.
"""
from __future__ import annotations

import glob
import json
import os
import sys

from . import layout, nsinit

# what a node image without python3 lacks (as a glob under the machine's root)
PYTHON_GLOBS = ("/usr/bin/python3*", "/usr/local/bin/python3*", "/usr/lib/python3*",
                "/usr/local/lib/python3*", "/usr/lib/x86_64-linux-gnu/libpython3*",
                "/usr/lib/aarch64-linux-gnu/libpython3*")
NODE_DIRS = ("/run", "/var", "/opt")
NODE_BIN = "/opt/cni/bin"
NODE_DATA = "/var/lib/cni"


def plan_spec(top: list[dict], paths: layout.NodePaths, root: str,
              masked: list[tuple[str, bool]]) -> dict:
    """nsinit's spec for the plugin's root. `top`: rootfs.plan_top with nothing of this checkout
    kept; `masked`: (path, is a directory) to hide. Pure."""
    mounts = [{"source": str(paths.host_root / d.lstrip("/")), "target": d} for d in NODE_DIRS]
    mounts += [{"source": "/run/netns", "target": "/run/netns", "propagation": "HostToContainer"},
               {"source": str(paths.bin_dir), "target": NODE_BIN},
               {"source": str(paths.data_dir), "target": NODE_DATA}]
    for path, is_dir in masked:
        mounts.append({"kind": "tmpfs", "target": path, "options": "mode=0755,size=4k"} if is_dir
                      else {"source": "/dev/null", "target": path, "readOnly": True})
    return {"netns": None, "hostname": "", "root": root, "top": top, "mounts": mounts, "workdir": "/"}


def find_masked(extra: tuple[str, ...] = ()) -> list[tuple[str, bool]]:
    """The machine's python3 files and folders (and `extra` paths), symlinks left out (what they
    name is masked). A path under no top-level folder the plugin sees is hidden anyway."""
    out = []
    for path in sorted({p for g in PYTHON_GLOBS for p in glob.glob(g)} | set(extra)):
        if os.path.islink(path) or not os.path.exists(path):
            continue
        out.append((path, os.path.isdir(path)))
    return out


def write_spec(path: str, spec: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m kubeweft.lab.kubelet.pluginroot SPEC.json PLUGIN", file=sys.stderr)
        return 2
    spec_path, plugin = argv
    try:
        with open(spec_path) as f:
            spec = json.load(f)
        nsinit.setup(spec)
        os.execve(plugin, [plugin], dict(os.environ))
    except (OSError, ValueError, nsinit.SetupError) as e:
        print(f"exec {plugin}: {e.strerror if isinstance(e, OSError) and e.strerror else e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
