"""The loop that keeps a kernel table equal to what the watches say, shared by the service proxy
and the policy controller: one thread that sleeps until a change is signalled, then syncs
everything pending in one go (kube-proxy's BoundedFrequencyRunner has the same shape).

    debounce     the least time from the end of one sync to the start of the next that a change
                 asks for (kube-proxy's minSyncPeriod): a change after a quiet spell syncs at
                 once, and the rest of its burst (arriving during that sync or just after) waits
                 out the remainder and joins one sync. A wait after every first change would add
                 the whole debounce to an isolated change: 2 ms of the service proxy's 5 ms
                 budget from a watch event to the kernel
    period       with no change, sync anyway after this long: a resync that costs next to nothing
                 when nothing is dirty
    backoff      a failed sync is tried again after `backoff` seconds, doubling up to
                 `max_backoff`, and back to `backoff` after a success
    ready        the first sync waits until it returns True (the informers' first lists)

It keeps the numbers its owner exports as metrics: syncs, failures, the wall clock of the last
successful sync, the duration of the last one and of all of them.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

READY_POLL = 0.05        # seconds between two looks at `ready` before the first sync


class SyncLoop:
    def __init__(self, name: str, sync: Callable[[], object], *, debounce: float, period: float,
                 backoff: float = 0.5, max_backoff: float = 10.0,
                 on_failure: Callable[[], None] | None = None,
                 ready: Callable[[], bool] | None = None, ready_warn: float = 120.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.name = name
        self._sync = sync
        self.debounce = debounce
        self.period = period
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retry_in = backoff                 # the wait after the next failure
        self._on_failure = on_failure
        self._ready = ready
        self.ready_warn = ready_warn
        self._clock = clock
        self._wall = wall
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.syncs = 0                          # successful syncs
        self.failures = 0
        self.last_success = 0.0                 # wall clock at the end of the last successful sync
        self.last_duration = 0.0                # seconds, of the last sync (failed or not)
        self.total_duration = 0.0               # seconds, of every sync
        self._ended = float("-inf")             # clock at the end of the last sync

    # --- signals ------------------------------------------------------------------------------
    def wake(self) -> None:
        """Something changed: sync soon (after the debounce)."""
        self._wake.set()

    @property
    def woken(self) -> bool:
        """A change is signalled that no sync has started to take in yet."""
        return self._wake.is_set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --- the thread ---------------------------------------------------------------------------
    def start(self) -> SyncLoop:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end and wait up to `timeout` for a sync in progress to finish."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run(self) -> None:
        if not self._wait_ready():
            return
        while not self._stopping.is_set():
            delay = self.run_once()
            if delay is not None:
                if self._stopping.wait(delay):
                    return
                continue
            if self._wake.wait(self.period) and not self._stopping.is_set():
                rest = self.debounce - (self._clock() - self._ended)
                if rest > 0:
                    self._stopping.wait(rest)

    def run_once(self) -> float | None:
        """One sync and its numbers: None when it succeeded; else the seconds to wait before the
        next try (the failure is logged and `on_failure` told before this returns)."""
        self._wake.clear()                      # a change from now on wakes the next sync
        t0 = self._clock()
        try:
            self._sync()
        except Exception:  # the table stays enforced as it was; the retry syncs again
            self._account(t0)
            self.failures += 1
            delay = self.retry_in
            self.retry_in = min(delay * 2, self.max_backoff)
            log.exception("%s: sync failed; retrying in %.1fs", self.name, delay)
            if self._on_failure is not None:
                self._on_failure()
            return delay
        self._account(t0)
        self.syncs += 1
        self.last_success = self._wall()
        self.retry_in = self.backoff
        return None

    def _account(self, t0: float) -> None:
        self._ended = self._clock()
        self.last_duration = self._ended - t0
        self.total_duration += self.last_duration

    def _wait_ready(self) -> bool:
        """Until `ready` holds (logging every `ready_warn` seconds); False when stopped first."""
        if self._ready is None:
            return not self._stopping.is_set()
        since = self._clock()
        while not self._ready():
            if self._stopping.wait(READY_POLL):
                return False
            if self._clock() - since > self.ready_warn:
                log.error("%s: not ready after %.0fs; still waiting", self.name, self.ready_warn)
                since = self._clock()
        return not self._stopping.is_set()
