"""`kubeweft cleanup [--bin-dir D] [--conf-dir D]`: take kubeweft's CNI files off a node, the
inverse of `install-cni` and of the agent's conflist: the conflist, BIN/kubeweft, BIN/kubeweft.d/
(the frozen builds), and BIN/loopback if install-cni put it there and nobody replaced it since.

The agent does not remove its conflist when it stops: a DaemonSet rollout stops it too, and a
node whose conflist disappeared during every upgrade would go NotReady each time. So an uninstall
is `kubectl delete -k deploy/...`, then this command on every node, as Calico's and Cilium's
uninstall steps do; from a machine with kubectl, through the image:

    kubectl debug node/NODE -it --image=ghcr.io/kubeweft/kubeweft:VERSION -- \\
        kubeweft cleanup --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .install import CONFLIST, EXECUTABLE, FROZEN_DIR, LOOPBACK, LOOPBACK_MARK, file_digest


def ours(bin_dir: Path, conf_dir: Path) -> list[Path]:
    """What of kubeweft is there: the paths cleanup removes, in the order it removes them (the
    conflist first, so that the runtime stops calling the executable before it goes)."""
    found = [p for p in (conf_dir / CONFLIST, bin_dir / EXECUTABLE) if p.is_symlink() or p.exists()]
    mark, loopback = bin_dir / FROZEN_DIR / LOOPBACK_MARK, bin_dir / LOOPBACK
    try:
        if loopback.is_file() and file_digest(loopback) == mark.read_text().strip():
            found.append(loopback)
    except OSError:
        pass
    if (bin_dir / FROZEN_DIR).is_dir():
        found.append(bin_dir / FROZEN_DIR)
    return found


def remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubeweft cleanup", description=__doc__.splitlines()[0])
    p.add_argument("--bin-dir", type=Path, default=Path("/opt/cni/bin"))
    p.add_argument("--conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    p.add_argument("--dry-run", action="store_true", help="print what would be removed")
    args = p.parse_args(argv)
    paths = ours(args.bin_dir, args.conf_dir)
    if not args.dry_run:
        remove(paths)
    for path in paths:
        print(f"{'would remove' if args.dry_run else 'removed'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
