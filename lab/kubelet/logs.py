"""Container log files: one per container instance (<restartCount>.log), read as kubectl logs asks.

A container's stdout and stderr go straight into its file (the process outlives the kubelet),
so the files hold raw output without timestamps; --timestamps is not available.
"""
from __future__ import annotations

from pathlib import Path

MAX_READ = 4 * 1024 * 1024       # one read of a follow loop


def previous_log(current: Path | None, restarts: int) -> Path | None:
    """The log of the instance before the current one, when there is one."""
    if current is None or restarts < 1:
        return None
    path = current.with_name(f"{restarts - 1}.log")
    return path if path.exists() else None


def tail_lines(data: bytes, n: int | None) -> bytes:
    """The last `n` lines of `data` (all of it for None); a last line without newline counts."""
    if n is None:
        return data
    if n <= 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:])


def read_tail(path: Path, tail: int | None, limit: int | None) -> tuple[bytes, int]:
    """(what `kubectl logs [--tail N] [--limit-bytes B]` shows now, the offset to follow from)."""
    try:
        data = path.read_bytes()
    except OSError:
        return b"", 0
    out = tail_lines(data, tail)
    if limit is not None:
        out = out[:limit]
    return out, len(data)


def read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """What was appended since `offset`, and the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(MAX_READ)
    except OSError:
        return b"", offset
    return data, offset + len(data)
