"""`kubeweft cleanup [--bin-dir D] [--conf-dir D] [--datapath]`: take kubeweft's CNI files off a
node, the inverse of `install-cni` and of the agent's conflist: the conflist, BIN/kubeweft,
BIN/kubeweft.d/ (the frozen builds), and BIN/loopback if install-cni put it there and nobody
replaced it since. With --datapath, also what the agent left in the kernel of the network
namespace it runs in: the nftables tables named kubeweft*, the links named kw* (the bridge kw0,
the VXLAN device kw.1, pods' host-side veths) and the overlay's routes (protocol 0xAF).

The agent does not remove its conflist when it stops: a DaemonSet rollout stops it too, and a
node whose conflist disappeared during every upgrade would go NotReady each time. So an uninstall
is `kubectl delete -k deploy/...`, then this command on every node, as Calico's and Cilium's
uninstall steps do; from a machine with kubectl, through the image:

    kubectl debug node/NODE -it --image=ghcr.io/kubeweft/kubeweft:VERSION -- \\
        kubeweft cleanup --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d --datapath

(kubectl debug node/ runs on the host network, so --datapath cleans the node's namespace).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
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


TABLE_PREFIX = "kubeweft"
LINK_PREFIX = "kw"
RTPROT_KUBEWEFT = 0xAF


def plan_datapath(tables: list[tuple[str, str]], links: list[str], routes: list[dict]) -> list[str]:
    """nft and ip commands (argv joined by spaces) removing kubeweft's kernel state, from
    `nft list tables` (family, name), link names and `ip -j route` entries. Pure."""
    out = [f"nft delete table {family} {name}" for family, name in tables if name.startswith(TABLE_PREFIX)]
    gone = {name for name in links if name.startswith(LINK_PREFIX)}
    out += [f"ip link delete {name}" for name in sorted(gone)]
    for r in routes:
        if r.get("protocol") in (RTPROT_KUBEWEFT, str(RTPROT_KUBEWEFT), hex(RTPROT_KUBEWEFT)) \
                and r.get("dev") not in gone:
            out.append(f"ip route delete {r['dst']}")
    return out


def _run_json(argv: list[str]) -> object:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out) if out.strip() else []


def read_datapath() -> tuple[list[tuple[str, str]], list[str], list[dict]]:
    """(tables, links, routes) of this network namespace, for plan_datapath."""
    tables = [(t["table"]["family"], t["table"]["name"])
              for t in _run_json(["nft", "-j", "list", "tables"]).get("nftables", []) if "table" in t]
    links = [link["ifname"] for link in _run_json(["ip", "-j", "link", "show"])]
    routes = _run_json(["ip", "-j", "-4", "route", "show", "proto", str(RTPROT_KUBEWEFT)])
    for r in routes:
        r.setdefault("protocol", RTPROT_KUBEWEFT)
    return tables, links, routes


def apply_datapath(commands: list[str]) -> None:
    """Runs each command; one may fail on what an earlier one took with it (a veth's peer)."""
    for cmd in commands:
        subprocess.run(cmd.split(), capture_output=True, text=True, timeout=30, check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubeweft cleanup", description=__doc__.splitlines()[0])
    p.add_argument("--bin-dir", type=Path, default=Path("/opt/cni/bin"))
    p.add_argument("--conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    p.add_argument("--datapath", action="store_true",
                   help="also remove kubeweft's nftables tables, kw* links and overlay routes from this "
                        "network namespace (the node's: run it on the host network)")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed")
    args = p.parse_args(argv)
    paths = ours(args.bin_dir, args.conf_dir)
    if not args.dry_run:
        remove(paths)
    for path in paths:
        print(f"{'would remove' if args.dry_run else 'removed'} {path}")
    if args.datapath:
        commands = plan_datapath(*read_datapath())
        if not args.dry_run:
            apply_datapath(commands)
        for cmd in commands:
            print(f"{'would run' if args.dry_run else 'ran'} {cmd}")
        left = [] if args.dry_run else plan_datapath(*read_datapath())
        if left:
            print(f"kubeweft cleanup: still there: {'; '.join(left)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
