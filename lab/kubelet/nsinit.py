"""`python -m kubeweft.lab.kubelet.nsinit SPEC.json ERRFD`: a container's first process.

Started by the kubelet for every container (and nothing else); single-threaded, so it may
change its own namespaces. It enters the pod's network namespace (none for hostNetwork), makes
its own mount and UTS namespaces, builds the container's root filesystem there and execs the
container's command, which keeps its PID. The root is a tmpfs holding the host's system
directories read-only (`top` in the spec: what `rootfs.plan_top` chose), empty /tmp, /run,
/var, /home..., then every volume mount of the spec; pivot_root makes it `/`.

Nothing here can reach the root mount namespace: the first mount call turns every inherited
mount into a slave (events flow in from the host, never out), and every mount made afterwards is
in this namespace only; it dies with the container's last process.

ERRFD is a close-on-exec pipe to the kubelet: a failure before the exec writes its message there
and exits 128 (what runc reports for a container that could not start); a successful exec closes
the pipe with nothing written, so the kubelet knows the command runs.
"""
from __future__ import annotations

import ctypes
import json
import os
import stat
import sys

from .. import netns

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
OLD_ROOT = "/.kw-oldroot"
START_ERROR = 128

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           f"mount {source or fstype or ''} on {target}")


def bind(source: str, target: str, read_only: bool, recursive: bool = True) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if read_only:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def pivot_root(new_root: str, put_old: str) -> None:
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise SetupError(f"pivot_root: unknown machine {os.uname().machine}")
    _check(_libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)), "pivot_root")


# --- the root filesystem ---------------------------------------------------------------------------
def build_top(root: str, top: list[dict]) -> None:
    """The tmpfs root's first level: host directories bound (ro or rw), symlinks, empty dirs."""
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    for entry in top:
        path = os.path.join(root, entry["name"])
        how = entry["how"]
        if how == "ro_path":                 # a checkout inside a private top, at its own path only
            os.makedirs(path, exist_ok=True)
            bind("/" + entry["name"], path, read_only=True)
            continue
        if how == "symlink":
            os.symlink(entry["link"], path)
            continue
        os.makedirs(path, mode=entry.get("mode", 0o755), exist_ok=True)
        if how in ("ro", "rw"):
            bind("/" + entry["name"], path, read_only=how == "ro")
        if entry.get("mode") is not None:
            os.chmod(path, entry["mode"])


def _writable(path: str) -> bool:
    try:
        return not os.statvfs(path).f_flag & os.ST_RDONLY
    except OSError:
        return False


def shim(path: str) -> None:
    """Make read-only directory `path` writable for new entries: a tmpfs over it, holding a bind
    of each original entry (reached through an fd opened before the tmpfs covers them)."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
    try:
        entries = os.listdir(f"/proc/self/fd/{fd}")
        mode = stat.S_IMODE(os.stat(f"/proc/self/fd/{fd}").st_mode)
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode:o}")
        for name in entries:
            src = f"/proc/self/fd/{fd}/{name}"
            dst = os.path.join(path, name)
            st = os.lstat(src)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
                continue
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(dst)
            else:
                open(dst, "wb").close()
            bind(src, dst, read_only=True)
    finally:
        os.close(fd)


def ensure_target(target: str, is_file: bool) -> None:
    """Create the mount point `target` (inside the new root), shimming a read-only ancestor."""
    if os.path.lexists(target) and not os.path.islink(target):
        return
    real = os.path.realpath(target)        # a symlink (e.g. /var/run) resolves inside the new root
    if os.path.exists(real):
        return
    parent = os.path.dirname(real)
    ancestor = parent
    while not os.path.isdir(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not _writable(ancestor):
        shim(ancestor)
    os.makedirs(parent, exist_ok=True)
    if is_file:
        open(real, "ab").close()
    else:
        os.mkdir(real)


def apply_mounts(mounts: list[dict]) -> None:
    """The volume mounts, parents first; sources are host paths seen under OLD_ROOT."""
    for m in mounts:
        target = m["target"]
        if m.get("kind") == "tmpfs":
            ensure_target(target, False)
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, m.get("options") or "mode=1777")
            continue
        source = OLD_ROOT + m["source"]
        ensure_target(target, not os.path.isdir(source))
        bind(source, target, read_only=bool(m.get("readOnly")))
        # None (the default) receives nothing from the host; HostToContainer stays a slave.
        # Bidirectional is never honoured: nothing may propagate to the host.
        if m.get("propagation") != "HostToContainer":
            mount(None, target, None, MS_REC | MS_PRIVATE)


def setup(spec: dict) -> None:
    if spec.get("netns"):
        netns.setns(spec["netns"])
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    mount(None, "/", None, MS_REC | MS_SLAVE)
    hostname = spec.get("hostname") or ""
    if hostname:
        _check(_libc.sethostname(hostname.encode(), len(hostname.encode())), "sethostname")
    root = spec["root"]
    build_top(root, spec["top"])
    os.makedirs(root + OLD_ROOT, exist_ok=True)
    pivot_root(root, root + OLD_ROOT)
    os.chdir("/")
    apply_mounts(spec.get("mounts") or [])
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")
    _check(_libc.umount2(_b(OLD_ROOT), MNT_DETACH), "umount old root")
    os.rmdir(OLD_ROOT)
    os.chdir(spec.get("workdir") or "/")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    errfd = int(argv[1])
    os.set_inheritable(errfd, False)
    cmd: list[str] = []
    try:
        with open(argv[0]) as f:
            spec = json.load(f)
        setup(spec)
        cmd = spec["argv"]
        os.execvpe(cmd[0], cmd, spec.get("env") or {})
    except Exception as e:  # noqa: BLE001 (told to the kubelet, which reports it on the pod)
        msg = str(e)
        if cmd and isinstance(e, FileNotFoundError):
            msg = f'exec: "{cmd[0]}": executable file not found in $PATH'
        try:
            os.write(errfd, msg.encode()[:4000])
        except OSError:
            pass
        print(f"nsinit: {msg}", file=sys.stderr, flush=True)
        return START_ERROR
    return START_ERROR


if __name__ == "__main__":
    sys.exit(main())
