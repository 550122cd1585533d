"""The reconcile loop every controller shares: a set of dirty keys, woken by store events.

Store hooks run synchronously inside each write, so `on_event` must be cheap: it updates the
controller's caches and marks keys. The loop sleeps until something is marked, waits a short
debounce so a burst of writes becomes one pass, then syncs each key once. `sync` runs on the API
server's event loop and writes to the store directly, so it must never block; the loop yields
between keys now and then so that 30k keys do not starve the API server.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable

from .. import errors
from ..resources import EVENTS
from ..store import now_rfc3339
from .events import render_event

log = logging.getLogger("kubeweft.lab.controllers")

DEBOUNCE = 0.02          # seconds: long enough to batch a burst, short enough to feel instant
YIELD_EVERY = 100        # keys synced between two yields to the event loop
RETRY_AFTER = 1.0        # seconds before a key whose sync raised is tried again


class Reconciler:
    name = "reconciler"

    def __init__(self, store, cfg):
        self.store = store
        self.cfg = cfg
        self.dirty: dict[Hashable, None] = {}      # insertion-ordered set
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}     # see mark_later
        self.wake = asyncio.Event()
        self.syncing = False                        # True while our own writes emit events
        self.passes = 0                             # completed passes (tests and metrics)
        self.writes = 0                             # store writes made by sync
        self.synced = 0                             # keys synced
        self.busy = False                           # a pass is running (it yields now and then)

    # --- to override -------------------------------------------------------------------------
    def prime(self) -> None:
        """Fill caches from the store and mark every key (called once, before the hook is added)."""

    def on_event(self, ev) -> None:
        """React to one store event: update caches, mark keys. Must be cheap and never raise."""

    def sync(self, key: Hashable) -> None:
        """Make the store match what `key` should look like."""

    def sync_batch(self, keys: list[Hashable]) -> None:
        """Sync a whole pass at once; the default syncs key by key (see run())."""
        raise NotImplementedError

    # --- machinery ---------------------------------------------------------------------------
    def mark(self, key: Hashable) -> None:
        self.dirty[key] = None
        self.wake.set()

    def record_event(self, obj: dict, kind: str, reason: str, message: str, action: str = "") -> None:
        """A core/v1 Event about `obj`, from this controller (kubectl describe lists it)."""
        self.store.create(EVENTS, render_event(obj, kind, reason, message, self.name, now_rfc3339(),
                                               time.time_ns(), action))

    def mark_later(self, key: Hashable, seconds: float) -> None:
        """Mark `key` again in `seconds` (a time-based change: minReadySeconds, a deadline).
        One timer per key, the earliest asked for: a rollout's every pass asks again."""
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.mark(key)

    def hook(self, ev) -> None:
        try:
            self.on_event(ev)
        except Exception:                       # a bad object must not break the store's write
            log.exception("%s: on_event failed", self.name)

    def delete(self, resource, namespace: str, name: str) -> None:
        """Delete an object this controller keeps; one that is already gone is no error."""
        try:
            self.store.delete(resource, namespace, name)
            self.writes += 1
        except errors.APIError as e:
            if e.code != 404:
                raise

    def _retry(self, key: Hashable) -> None:
        self.mark_later(key, RETRY_AFTER)

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            await asyncio.sleep(DEBOUNCE)
            self.wake.clear()
            self.busy = True
            keys, self.dirty = list(self.dirty), {}
            self.synced += len(keys)
            if type(self).sync_batch is not Reconciler.sync_batch:
                self._guarded(self.sync_batch, keys, None)
            else:
                for i, key in enumerate(keys):
                    self._guarded(self.sync, key, key)
                    if i % YIELD_EVERY == YIELD_EVERY - 1:
                        await asyncio.sleep(0)
            self.passes += 1
            self.busy = False

    def _guarded(self, fn, arg, key) -> None:
        self.syncing = True
        try:
            fn(arg)
        except Exception:
            log.exception("%s: sync of %r failed; retrying in %.0fs", self.name, key, RETRY_AFTER)
            for k in (arg if key is None else [key]):
                self._retry(k)
        finally:
            self.syncing = False

    @property
    def idle(self) -> bool:
        return not self.busy and not self.dirty and not self.wake.is_set()
