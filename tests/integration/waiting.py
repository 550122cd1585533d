"""Polling until a condition holds, for tests that wait on controllers, agents and the kernel."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Call fn() until it returns something true, and return that. After `timeout` seconds,
    AssertionError naming `what` and the last value fn() returned."""
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)
