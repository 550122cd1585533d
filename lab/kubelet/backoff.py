"""CrashLoopBackOff: when a failed container may start again. Pure.

As the kubelet's per-container back-off (flowcontrol.Backoff): the first restart happens at once
and arms a delay of `base` (10 s); each further restart waits that delay after the container
finished and doubles it, up to `cap` (5 min). A container that ran longer than twice the cap
before failing starts over from nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

BASE = 10.0
CAP = 300.0


@dataclass(frozen=True)
class Backoff:
    delay: float = 0.0           # armed delay; 0: none yet
    updated: float = 0.0         # when it was armed (monotonic seconds)


def _expired(b: Backoff, at: float, cap: float) -> bool:
    return at - b.updated > 2 * cap


def restart_at(b: Backoff, finished: float, cap: float = CAP) -> float:
    """The earliest time a container that finished at `finished` may start again."""
    if b.delay == 0 or _expired(b, finished, cap):
        return finished
    return finished + b.delay


def after_restart(b: Backoff, now: float, base: float = BASE, cap: float = CAP) -> Backoff:
    """The back-off once a restart happened at `now`."""
    if b.delay == 0 or _expired(b, now, cap):
        return Backoff(base, now)
    return Backoff(min(b.delay * 2, cap), now)


def go_duration(seconds: float) -> str:
    """A duration as Go prints it: 10s, 1m20s, 5m0s, 500ms."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{secs}s"
