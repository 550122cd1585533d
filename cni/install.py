"""`kubeweft install-cni --bin-dir D [--conf-dir D] [--socket S] [--data-dir D] [--cni-version V]
[--standalone | --frozen DIR] [--loopback FILE]`: put the CNI executable into the runtime's bin dir
as "kubeweft" and, with --conf-dir, the conflist into its conf dir.

Three forms of the executable:

- default (a host where kubeweft is installed, such as the lab's nodes): a tiny script, this
  interpreter with -I -S (no site.py, no user site, no PYTHON* variables: tens of ms saved on
  every pod), the module path frozen at install time, and a call to cni.shim:main. It needs
  this venv to exist where the runtime runs it.
- --standalone (the DaemonSet's init container, whose venv the host never sees): a zipapp that
  the host's own python3 runs (`#!/usr/bin/env python3`, Python >= 3.9): the shim, the
  standard-library-only modules it imports, and what the DEL fallback needs with the agent down
  (cni.datapath, cni.ipam, cni.netns, cni.nft, and pyroute2, pure Python, vendored from the
  installed package). Every module is also there precompiled (unchecked-hash .pyc next to the
  .py, which zipimport reads first and skips when the host's Python has another bytecode magic).

Both files are written to a temporary name and renamed, so a runtime never reads half a file.

The third form, --frozen DIR: the onedir build that kubeweft.cni.freeze made at image build time,
an interpreter and its libraries included. The DaemonSet's init container installs this form,
not the zipapp: kind's and k3s's nodes have no python3. It lands in BIN/kubeweft.d/<digest of
the build>/, and BIN/kubeweft is a relative symlink to the executable in it (runtimes stat and
exec it, which follows the link; PyInstaller's bootloader finds its _internal/ from the link's
target). A new build is copied beside the old one and the symlink renamed over it, so a call
never sees half of either; the build the link pointed to before is kept for calls still starting
from it, older ones are removed. All that kubeweft puts in BIN is `kubeweft` and `kubeweft.d/`,
which `kubeweft cleanup` removes.

--loopback FILE copies the reference loopback plugin (which runtimes call for the pod's lo) into
BIN when BIN has none, and records its digest in kubeweft.d/ so that cleanup removes it only
while it is still that file.

The DaemonSet passes no --conf-dir: its agent writes the conflist once its gRPC server answers
(`kubeweft agent --cni-conf-dir`), so a node's runtime reports the network ready only when
kubeweft can wire pods. The conflist's cniVersion defaults to 1.0.0: containerd 1.6 and 1.7, which
many kind and k3s releases ship, vendor libcni 1.1, which rejects 1.1.0 and so every pod; STATUS
and GC need 1.1.0 (`--cni-version 1.1.0` where the runtime has libcni >= 1.2, as containerd 2 and
the lab's runtime have). No runtime tells a plugin which versions it takes before it loads the
conflist, so the version is configured, not negotiated.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import py_compile
import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

from .spec import SUPPORTED_VERSIONS

EXECUTABLE = "kubeweft"
CONFLIST = "10-kubeweft.conflist"
DEFAULT_SOCKET = "/run/kubeweft/agent.sock"
# what the standalone executable holds: the shim's imports, and the DEL fallback's
STANDALONE_MODULES = ("__init__", "shim", "protowire", "spec", "protocols", "errors", "datapath", "ipam", "netns",
                      "nft", "antispoof")
VENDORED = ("pyroute2",)
STANDALONE_INTERPRETER = "/usr/bin/env python3"
DEFAULT_CNI_VERSION = "1.0.0"
FROZEN_DIR = "kubeweft.d"          # BIN/kubeweft.d/<digest>/: the frozen builds
LOOPBACK = "loopback"
LOOPBACK_MARK = "loopback.sha256"  # in kubeweft.d: the digest of the loopback install-cni copied


def render_script(python: str, paths: list[str], package_dirs: list[str]) -> str:
    """package_dirs: where kubeweft's subpackages live. In an editable install they are the
    checkout's top-level folders (setuptools' package-dir), which only the .pth hook that -S
    skips would map; so the script sets the package's search path itself."""
    return (f"#!{python} -IS\n"
            "# kubeweft CNI shim, written by `kubeweft install-cni`; see cni/shim.py\n"
            "import sys\n"
            f"sys.path[:] = {paths!r}\n"
            "import kubeweft\n"
            f"kubeweft.__path__[:] = {package_dirs!r}\n"
            "from kubeweft.cni.shim import main\n"
            "sys.exit(main())\n")


def render_zipapp_main() -> str:
    return ("# kubeweft CNI shim, written by `kubeweft install-cni --standalone`; see cni/shim.py\n"
            "import sys\n"
            "from kubeweft.cni.shim import main\n"
            "sys.exit(main())\n")


def render_conflist(socket: str, data_dir: str, bridge: str = "kw0", mtu: int | None = None,
                    version: str = DEFAULT_CNI_VERSION) -> dict:
    plugin = {"type": EXECUTABLE, "socket": socket, "dataDir": data_dir, "bridge": bridge,
              "capabilities": {"portMappings": True, "mac": True, "ips": True, "bandwidth": True}}
    if mtu:
        plugin["mtu"] = mtu
    return {"cniVersion": version, "name": "kubeweft", "plugins": [plugin]}


def module_paths() -> list[str]:
    """sys.path entries that hold what the shim (and its in-process DEL) imports."""
    import kubeweft
    top = str(Path(kubeweft.__file__).resolve().parent.parent)
    script_dir = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else ""
    paths = [top] + [p for p in sys.path
                     if p and p != script_dir and (os.path.isdir(p) or p.endswith(".zip"))]
    return list(dict.fromkeys(paths))


def package_dirs() -> list[str]:
    """kubeweft's __path__ as the shim must see it: the package's own folder, and the folder
    that holds cni/ (the same one in a wheel install; the checkout in an editable one)."""
    import kubeweft
    from kubeweft import cni
    dirs = [str(Path(kubeweft.__file__).resolve().parent), str(Path(cni.__file__).resolve().parent.parent)]
    return list(dict.fromkeys(dirs))


def write_atomic(path: Path, data: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _stage_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))


def _compile_tree(root: Path) -> None:
    """A legacy-location .pyc next to every .py (zipimport looks there, never in __pycache__),
    unchecked-hash so that zip entry times do not matter."""
    for src in sorted(root.rglob("*.py")):
        arcname = src.relative_to(root).as_posix()
        py_compile.compile(str(src), cfile=str(src.with_suffix(".pyc")), dfile=arcname, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def build_zipapp(target: Path) -> Path:
    """The standalone executable at target (written beside it, then renamed over it)."""
    import importlib

    from kubeweft import cni
    cni_dir = Path(cni.__file__).resolve().parent
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kubeweft-cni-build-") as tmp:
        stage = Path(tmp) / "app"
        (stage / "kubeweft" / "cni").mkdir(parents=True)
        (stage / "kubeweft" / "__init__.py").write_text("")
        for name in STANDALONE_MODULES:
            shutil.copy2(cni_dir / f"{name}.py", stage / "kubeweft" / "cni" / f"{name}.py")
        for name in VENDORED:
            pkg = Path(importlib.import_module(name).__file__).resolve().parent
            _stage_tree(pkg, stage / name)
        (stage / "__main__.py").write_text(render_zipapp_main())
        _compile_tree(stage)
        # written beside the target (same filesystem: the rename is atomic); stored, not
        # deflated: nothing to inflate on every pod's call
        out = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            zipapp.create_archive(stage, out, interpreter=STANDALONE_INTERPRETER, compressed=False)
            os.chmod(out, 0o755)
            os.replace(out, target)
        finally:
            if out.exists():
                out.unlink()
    return target


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_digest(root: Path) -> str:
    """sha256 over a folder's relative paths, modes, file contents and symlink targets."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_mode:o}\0".encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(file_digest(path).encode())
    return h.hexdigest()


def install_frozen(build: Path, bin_dir: Path) -> Path:
    """BIN/kubeweft -> kubeweft.d/<digest>/kubeweft, the build copied there first (see above)."""
    if not (build / EXECUTABLE).is_file():
        raise FileNotFoundError(f"{build / EXECUTABLE}: not a frozen build (python -m kubeweft.cni.freeze)")
    builds = bin_dir / FROZEN_DIR
    builds.mkdir(parents=True, exist_ok=True)
    name = tree_digest(build)[:16]
    target = builds / name
    if not target.is_dir():
        tmp = builds / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(build, tmp, symlinks=True)
        os.rename(tmp, target)
    exe = bin_dir / EXECUTABLE
    previous = _frozen_target(exe)
    link = bin_dir / f".{EXECUTABLE}.tmp-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(f"{FROZEN_DIR}/{name}/{EXECUTABLE}", link)
    os.replace(link, exe)
    for old in builds.iterdir():
        if old.is_dir() and old.name not in (name, previous):
            shutil.rmtree(old, ignore_errors=True)
    return exe


def _frozen_target(exe: Path) -> str | None:
    """The build folder's name that BIN/kubeweft links to, if it is a frozen install."""
    try:
        parts = Path(os.readlink(exe)).parts
    except OSError:
        return None
    return parts[1] if len(parts) == 3 and parts[0] == FROZEN_DIR else None


def install_loopback(src: Path, bin_dir: Path) -> Path | None:
    """Copy the loopback plugin into BIN unless BIN has one; the copy's path, or None."""
    dst = bin_dir / LOOPBACK
    if dst.exists():
        return None
    tmp = bin_dir / f".{LOOPBACK}.tmp-{os.getpid()}"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o755)
    (bin_dir / FROZEN_DIR).mkdir(exist_ok=True)
    write_atomic(bin_dir / FROZEN_DIR / LOOPBACK_MARK, file_digest(tmp) + "\n", 0o644)
    os.replace(tmp, dst)
    return dst


def write_conflist(conf_dir: Path, socket: str, data_dir: str, bridge: str = "kw0", mtu: int | None = None,
                   version: str = DEFAULT_CNI_VERSION) -> Path:
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"cniVersion {version!r} is not one of {', '.join(SUPPORTED_VERSIONS)}")
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / CONFLIST
    write_atomic(conf, json.dumps(render_conflist(socket, data_dir, bridge, mtu, version), indent=2) + "\n", 0o644)
    return conf


def install(bin_dir: Path, conf_dir: Path | None, socket: str, data_dir: str, bridge: str = "kw0",
            mtu: int | None = None, standalone: bool = False, frozen: Path | None = None,
            loopback: Path | None = None, version: str = DEFAULT_CNI_VERSION) -> tuple[Path, Path | None]:
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / EXECUTABLE
    if frozen is not None:
        install_frozen(frozen, bin_dir)
    elif standalone:
        build_zipapp(exe)
    else:
        write_atomic(exe, render_script(sys.executable, module_paths(), package_dirs()), 0o755)
    if loopback is not None:
        install_loopback(loopback, bin_dir)
    conf = write_conflist(conf_dir, socket, data_dir, bridge, mtu, version) if conf_dir is not None else None
    return exe, conf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubeweft install-cni")
    p.add_argument("--bin-dir", required=True, type=Path)
    p.add_argument("--conf-dir", type=Path, default=None,
                   help="write the conflist here (without it, only the executables are installed: the "
                        "DaemonSet's agent writes the conflist once it serves)")
    p.add_argument("--socket", default=DEFAULT_SOCKET)
    p.add_argument("--data-dir", default=None,
                   help="IPAM store (default: <socket dir>/cni/data, where the agent keeps it "
                        "when its --state-dir is the socket's dir)")
    p.add_argument("--bridge", default="kw0")
    p.add_argument("--mtu", type=int, default=None)
    form = p.add_mutually_exclusive_group()
    form.add_argument("--standalone", action="store_true",
                      help="install a zipapp that the host's python3 runs, not a script bound to this "
                           "interpreter")
    form.add_argument("--frozen", type=Path, default=None, metavar="DIR",
                      help="install the frozen build in DIR (python -m kubeweft.cni.freeze; the image has "
                           "it): runs on a node without python3")
    p.add_argument("--loopback", type=Path, default=None, metavar="FILE",
                   help="copy this loopback plugin into the bin dir if the bin dir has none")
    p.add_argument("--cni-version", default=DEFAULT_CNI_VERSION, choices=SUPPORTED_VERSIONS,
                   help=f"the conflist's cniVersion (default {DEFAULT_CNI_VERSION}: containerd 1.6/1.7 "
                        "reject 1.1.0)")
    args = p.parse_args(argv)
    socket = os.path.abspath(args.socket)
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else str(Path(socket).parent / "cni" / "data")
    exe, conf = install(args.bin_dir, args.conf_dir, socket, data_dir, args.bridge, args.mtu,
                        standalone=args.standalone, frozen=args.frozen, loopback=args.loopback,
                        version=args.cni_version)
    print(f"installed {exe}" + (f" and {conf}" if conf else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
