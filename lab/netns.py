"""Entering network namespaces without touching the root one.

Python 3.11 has no os.setns, so libc's setns is called through ctypes. Three ways in:
- `entered(name)`: the *calling thread* moves into the netns and back; sockets made there stay
  in that netns (DESIGN.md, "The lab"). Use it on a thread of your own, never on the main one.
- `preexec(name)`: for subprocess.Popen(preexec_fn=...), so the child (single-threaded between
  fork and exec) runs wholly inside the netns while staying in the root mount namespace, where
  `ip netns add` bind-mounts are visible to everyone. Prefer this to `ip netns exec`, whose
  private mount namespace hides namespaces created inside it.
- `run(name, argv)`: subprocess.run in the netns.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def _setns_fd(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def setns(name_or_path: str | Path) -> None:
    """Move the calling thread into a netns given by name (in /run/netns) or path."""
    p = Path(name_or_path)
    if not p.is_absolute():
        p = path(str(name_or_path))
    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(name_or_path: str | Path) -> Iterator[None]:
    """Run the block with this thread in the given netns, then return to where it was."""
    home = os.open(f"/proc/self/task/{_gettid()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(name_or_path)
        try:
            yield
        finally:
            _setns_fd(home)
    finally:
        os.close(home)


def preexec(name_or_path: str | Path):
    """A preexec_fn that puts the child process into the netns (and its own session)."""
    def _enter() -> None:
        setns(name_or_path)
    return _enter


def run(name: str, argv: list[str], *, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, preexec_fn=preexec(name), check=check, **kwargs)


def _gettid() -> int:
    return threading.get_native_id()


def current_inode() -> int:
    return os.stat(f"/proc/self/task/{_gettid()}/ns/net").st_ino
