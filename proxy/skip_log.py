"""The one log line of an object the agent skips at the watch edge.

An object the API changes 1,000 times a second and that stays broken would otherwise log 1,000
lines a second, each event its own warning. Here the refusals of one object are logged at most
once every REPEAT seconds, the line saying how many refusals it stood for; an object taken in
again or deleted is forgotten after that window (so one that flips between valid and broken
still logs once per window). Memory: one entry per object refused in the last window, and at
most MAX_KEYS of them (past that the oldest is forgotten, and would log once more).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 10_000
REPEAT = 60.0            # seconds between two lines about one object


class SkipLog:
    def __init__(self, logger: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic):
        self.log = logger
        self.what = what                       # "service", "endpointslice", "pod", ...
        self.clock = clock
        # key -> (when its last line was logged, refusals since that line)
        self.refused: OrderedDict[tuple, tuple[float, int]] = OrderedDict()
        self.lock = threading.Lock()

    def skipped(self, key: tuple, reason: object) -> bool:
        """Object `key` is refused for `reason`; True when this call logged it."""
        now = self.clock()
        with self.lock:
            seen = self.refused.get(key)
            if seen is not None and now - seen[0] < REPEAT:
                self.refused[key] = (seen[0], seen[1] + 1)
                return False
            self.refused[key] = (now, 0)
            self.refused.move_to_end(key)
            if len(self.refused) > MAX_KEYS:
                self.refused.popitem(last=False)
        more = f" (and {seen[1]} more refusals of it in {now - seen[0]:.0f}s)" if seen and seen[1] else ""
        self.log.warning("%s %s skipped: %s%s", self.what, "/".join(str(k) for k in key if k),
                         one_line(reason), more)
        return True

    def taken(self, key: tuple) -> None:
        """Object `key` is valid again, or deleted: forgotten once its window is over."""
        if key in self.refused:
            with self.lock:
                seen = self.refused.get(key)
                if seen is not None and self.clock() - seen[0] >= REPEAT:
                    del self.refused[key]


    def parse(self, parse: Callable[[dict], object], key: tuple, obj: dict, errors: type[Exception]):
        """parse(obj), or None after logging the refusal (errors: what the parser raises)."""
        try:
            parsed = parse(obj)
        except errors as e:
            self.skipped(key, e)
            return None
        self.taken(key)
        return parsed


def one_line(reason: object) -> str:
    """The first line of an error's text, at most 300 characters (never a traceback)."""
    text = str(reason).strip()
    first = text.splitlines()[0] if text else type(reason).__name__
    return first[:300]
