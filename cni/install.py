"""`kubeweft install-cni --bin-dir D --conf-dir D [--socket S] [--data-dir D]`: put the CNI
executable into the runtime's bin dir as "kubeweft" and the conflist into its conf dir.

The executable is a tiny script: this interpreter with -I -S (no site.py, no user site, no
PYTHON* variables: tens of ms saved on every pod), the module path frozen at install time, and
a call to cni.shim:main. Both files are written to a temporary name and renamed, so a runtime
never reads half a file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXECUTABLE = "kubeweft"
CONFLIST = "10-kubeweft.conflist"
DEFAULT_SOCKET = "/run/kubeweft/agent.sock"


def render_script(python: str, paths: list[str]) -> str:
    return (f"#!{python} -IS\n"
            "# kubeweft CNI shim, written by `kubeweft install-cni`; see cni/shim.py\n"
            "import sys\n"
            f"sys.path[:] = {paths!r}\n"
            "from cni.shim import main\n"
            "sys.exit(main())\n")


def render_conflist(socket: str, data_dir: str, bridge: str = "kw0", mtu: int | None = None,
                    version: str = "1.1.0") -> dict:
    plugin = {"type": EXECUTABLE, "socket": socket, "dataDir": data_dir, "bridge": bridge,
              "capabilities": {"portMappings": True, "mac": True, "ips": True, "bandwidth": True}}
    if mtu:
        plugin["mtu"] = mtu
    return {"cniVersion": version, "name": "kubeweft", "plugins": [plugin]}


def module_paths() -> list[str]:
    """sys.path entries that hold what the shim (and its in-process DEL) imports."""
    import cni
    repo = str(Path(cni.__file__).resolve().parent.parent)
    script_dir = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else ""
    paths = [repo] + [p for p in sys.path
                      if p and p != script_dir and (os.path.isdir(p) or p.endswith(".zip"))]
    return list(dict.fromkeys(paths))


def write_atomic(path: Path, data: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install(bin_dir: Path, conf_dir: Path, socket: str, data_dir: str, bridge: str = "kw0",
            mtu: int | None = None) -> tuple[Path, Path]:
    bin_dir.mkdir(parents=True, exist_ok=True)
    conf_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / EXECUTABLE
    write_atomic(exe, render_script(sys.executable, module_paths()), 0o755)
    conf = conf_dir / CONFLIST
    write_atomic(conf, json.dumps(render_conflist(socket, data_dir, bridge, mtu), indent=2) + "\n", 0o644)
    return exe, conf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubeweft install-cni")
    p.add_argument("--bin-dir", required=True, type=Path)
    p.add_argument("--conf-dir", required=True, type=Path)
    p.add_argument("--socket", default=DEFAULT_SOCKET)
    p.add_argument("--data-dir", default=None,
                   help="IPAM store (default: <socket dir>/cni/data, where the agent keeps it "
                        "when its --state-dir is the socket's dir)")
    p.add_argument("--bridge", default="kw0")
    p.add_argument("--mtu", type=int, default=None)
    args = p.parse_args(argv)
    socket = os.path.abspath(args.socket)
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else str(Path(socket).parent / "cni" / "data")
    exe, conf = install(args.bin_dir, args.conf_dir, socket, data_dir, args.bridge, args.mtu)
    print(f"installed {exe} and {conf}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
