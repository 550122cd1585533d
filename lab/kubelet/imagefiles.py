"""The files kubeweft's image holds beside its install, for the lab's kubelet to show at the
image's paths (deploy/image/root.sh makes them in the real image):

    /opt/kubeweft/cni                    the frozen CNI executable (kubeweft.cni.freeze)
    /opt/kubeweft/cni-plugins/loopback   the reference loopback plugin (this machine's)

The frozen build is made once per checkout under out/lab/cni-<key>/, where the key is a hash of
what goes into it (the sources the build stages, this Python's version, PyInstaller's version):
a changed cni/ makes a new key and so a new build. Measured here (2 shared cores, load ~6): the
build takes 9 s; a cached start only hashes ~60 files (~5 ms). Builds run under a lock file, so
labs starting at once build it once; the three newest builds are kept.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
CACHE = CHECKOUT / "out" / "lab"
FROZEN_TARGET = "/opt/kubeweft/cni"
LOOPBACK_TARGET = "/opt/kubeweft/cni-plugins/loopback"
LOOPBACK = Path("/usr/lib/cni/loopback")
KEEP_BUILDS = 3
BUILD_TIMEOUT = 900.0


def build_inputs() -> list[Path]:
    """The files kubeweft.cni.freeze stages: the top-level package's modules and cni/."""
    from kubeweft.cni import freeze

    top = [p for p in (CHECKOUT / "kubeweft").glob("*.py")]
    sub = [p for name in freeze.PACKAGES for p in (CHECKOUT / name).rglob("*.py")]
    return sorted(top + sub)


def frozen_key() -> str:
    h = hashlib.sha256()
    h.update(sys.version.encode())
    try:
        h.update(importlib.metadata.version("pyinstaller").encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in build_inputs():
        h.update(str(path.relative_to(CHECKOUT)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def frozen_dir(key: str | None = None) -> Path:
    return CACHE / f"cni-{key or frozen_key()}"


def image_files(frozen: Path) -> tuple[tuple[str, str], ...]:
    """(source on the machine, path in the image) of each file the image adds. Pure."""
    return ((str(frozen), FROZEN_TARGET), (str(LOOPBACK), LOOPBACK_TARGET))


def ensure_frozen() -> tuple[Path, bool]:
    """The frozen build for this checkout's sources, built when missing. (where, built now)."""
    out = frozen_dir()
    if (out / "kubeweft").exists():
        return out, False
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "kubeweft").exists():          # another lab built it while we waited
            return out, False
        tmp = out.with_name(out.name + ".tmp")
        proc = subprocess.run([sys.executable, "-m", "kubeweft.cni.freeze", str(tmp)], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"python -m kubeweft.cni.freeze failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        tmp.rename(out)
        _prune(out)
    return out, True


def _prune(keep: Path) -> None:
    builds = sorted((p for p in CACHE.glob("cni-*") if p.is_dir() and not p.name.endswith(".tmp")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP_BUILDS:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
