"""Volume contents on disk: the atomic writer of configMap, secret, downwardAPI and projected
volumes, and the hostPath type checks. I/O; the plans come from volumes.py.

The writer lays files out as the kubelet's AtomicWriter does, so a running container sees one
set of files or the next, never a mix: the payload in a timestamped directory `..<time>`, the
symlink `..data` to it (swapped with a rename), and each top-level name a symlink into `..data`.
"""
from __future__ import annotations

import datetime
import os
import shutil
import stat
from pathlib import Path

from .volumes import HostPathCheck, VolumeError

DATA = "..data"


def _read_payload(root: Path) -> dict[str, tuple[bytes, int]]:
    cur = root / DATA
    out: dict[str, tuple[bytes, int]] = {}
    if not cur.is_dir():
        return out
    for dirpath, _, names in os.walk(cur):
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(cur))] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def write_payload(root: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Make `root` hold exactly `files` ({relative path: (content, mode)}); False when it did already."""
    root.mkdir(parents=True, exist_ok=True)
    if _read_payload(root) == files and (root / DATA).is_symlink():
        return False
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    new = root / stamp
    new.mkdir(mode=0o755)
    for rel, (data, mode) in files.items():
        p = new / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, mode)
    old = os.readlink(root / DATA) if (root / DATA).is_symlink() else None
    tmp = root / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(stamp, tmp)
    os.replace(tmp, root / DATA)
    tops = {rel.split("/", 1)[0] for rel in files}
    for name in tops:
        link = root / name
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            os.symlink(f"{DATA}/{name}", link)
    for entry in root.iterdir():
        if entry.name.startswith(".."):
            if entry.name not in (DATA, stamp) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name not in tops and entry.is_symlink():
            entry.unlink()
    if old and old != stamp:
        shutil.rmtree(root / old, ignore_errors=True)
    return True


def check_host_path(c: HostPathCheck) -> None:
    """hostPath type semantics: create what *OrCreate asks for, refuse a wrong kind of file."""
    p = c.path
    if c.type == "DirectoryOrCreate" or (c.type == "" and not c.passthrough and not p.exists()):
        # an unset type on a missing path: containerd creates a directory, as here
        if p.exists() and not p.is_dir():
            raise VolumeError(f"hostPath type check failed: {p} is not a directory")
        p.mkdir(parents=True, exist_ok=True, mode=0o755)
    elif c.type == "FileOrCreate":
        if p.is_dir():
            raise VolumeError(f"hostPath type check failed: {p} is not a file")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch(exist_ok=True)
    elif c.type == "Directory" and not p.is_dir():
        raise VolumeError(f"hostPath type check failed: {p} is not a directory")
    elif c.type == "File" and not p.is_file():
        raise VolumeError(f"hostPath type check failed: {p} is not a file")
    elif c.type == "Socket" and not (p.exists() and stat.S_ISSOCK(p.stat().st_mode)):
        raise VolumeError(f"hostPath type check failed: {p} is not a socket file")
    elif c.type == "CharDevice" and not (p.exists() and stat.S_ISCHR(p.stat().st_mode)):
        raise VolumeError(f"hostPath type check failed: {p} is not a character device")
    elif c.type == "BlockDevice" and not (p.exists() and stat.S_ISBLK(p.stat().st_mode)):
        raise VolumeError(f"hostPath type check failed: {p} is not a block device")
    elif c.type == "" and not p.exists():
        raise VolumeError(f"hostPath {p} does not exist")
