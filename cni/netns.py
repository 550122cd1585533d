"""Network namespaces seen from a thread: enter one and come back, or run a callable inside one.

setns(2) moves only the calling thread, and what that thread makes while inside (a netlink
socket, a libnftables context, a TCP socket) belongs to that netns for life, wherever it is used
from afterwards. So the two ways in are:

- `entered(ns)`: the calling thread moves into the netns and back (a context manager). Use it on
  a thread of your own, never on one whose netns others rely on.
- `call_in(ns, fn, ...)`: fn runs on a new thread inside the netns; its result (or exception)
  comes back to the caller, whose thread never moves. Costs well under a millisecond, where
  forking a helper process (pyroute2's netns=) costs tens.

and, for a child process, `preexec(ns)` (subprocess.Popen(preexec_fn=...)): the child is
single-threaded between fork and exec, so it runs wholly inside the netns while staying in the
caller's mount namespace (where `ip netns add` bind-mounts are visible), unlike `ip netns exec`.

A netns is named by a path (CNI_NETNS, /proc/PID/ns/net) or by a name under /run/netns.
Python 3.11 has no os.setns: libc's is called through ctypes. Standard library only: the CNI
shim's in-process DEL imports this, also from the standalone zipapp that a host's python3 runs.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
CALL_TIMEOUT = 10.0

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def path(name_or_path: str | os.PathLike) -> Path:
    """An absolute path as it is; a bare name is /run/netns/NAME."""
    p = Path(name_or_path)
    return p if p.is_absolute() else NETNS_DIR / p


def _thread_netns() -> str:
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


def current_inode() -> int:
    """The inode of the calling thread's netns: equal inodes, same netns."""
    return os.stat(_thread_netns()).st_ino


def _setns_fd(fd: int, what: object) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns {what}: {os.strerror(err)}")


def setns(name_or_path: str | os.PathLike) -> None:
    """Move the calling thread into the netns. FileNotFoundError if it does not exist."""
    p = path(name_or_path)
    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_fd(fd, p)
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(name_or_path: str | os.PathLike) -> Iterator[None]:
    """Run the block with this thread in the netns, then return it to the netns it was in."""
    home = os.open(_thread_netns(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(name_or_path)
        try:
            yield
        finally:
            _setns_fd(home, "back")
    finally:
        os.close(home)


def call_in(name_or_path: str | os.PathLike, fn: Callable[..., T], *args,
            timeout: float = CALL_TIMEOUT, thread_name: str = "kubeweft-netns", **kwargs) -> T:
    """fn(*args, **kwargs) on a throwaway thread inside the netns: its result, or its exception
    raised here. TimeoutError if it takes longer than `timeout` (the thread is left to finish)."""
    out: dict = {}

    def run() -> None:
        try:
            setns(name_or_path)
            out["result"] = fn(*args, **kwargs)
        except BaseException as e:          # noqa: BLE001 - raised again on the caller's thread
            out["error"] = e

    t = threading.Thread(target=run, name=thread_name, daemon=True)
    t.start()
    t.join(timeout)
    if "error" in out:
        raise out["error"]
    if "result" not in out:
        raise TimeoutError(f"{getattr(fn, '__name__', 'a call')} in netns {name_or_path} "
                           f"did not finish in {timeout:g} s")
    return out["result"]


def preexec(name_or_path: str | os.PathLike) -> Callable[[], None]:
    """A preexec_fn that puts the child process into the netns."""
    def enter() -> None:
        setns(name_or_path)
    return enter
