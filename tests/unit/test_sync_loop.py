"""proxy/sync_loop.py: backoff and the numbers behind the metrics through run_once (a fake clock,
no thread); debounce, resync, the ready gate, a change during a sync and stop on a real thread,
each bounded by a few seconds."""
from __future__ import annotations

import threading
import time

import pytest
from kubeweft.proxy.sync_loop import SyncLoop

BOUND = 5.0          # seconds any threaded expectation may take


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sync:
    """A sync that fails while `fail` is set and takes `cost` seconds of the fake clock."""

    def __init__(self, clock: Clock | None = None, cost: float = 0.0):
        self.clock, self.cost = clock, cost
        self.fail = False
        self.calls = 0
        self.called = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.called.set()
        if self.clock is not None:
            self.clock.now += self.cost
        if self.fail:
            raise RuntimeError("the kernel said no")


def wait_until(cond, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_failures_back_off_doubling_to_the_limit_and_a_success_starts_over():
    clock, told = Clock(), []
    sync = Sync(clock, cost=0.25)
    loop = SyncLoop("t", sync, debounce=0, period=1, backoff=0.5, max_backoff=10,
                    on_failure=lambda: told.append(clock.now), clock=clock, wall=lambda: 1e9 + clock.now)
    sync.fail = True
    assert [loop.run_once() for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert loop.failures == len(told) == 7 and loop.syncs == 0 and loop.last_success == 0
    sync.fail = False
    assert loop.run_once() is None
    assert loop.syncs == 1 and loop.last_success == 1e9 + clock.now
    assert loop.last_duration == 0.25 and loop.total_duration == 8 * 0.25
    sync.fail = True
    assert loop.run_once() == 0.5


def test_run_once_takes_the_change_signal():
    loop = SyncLoop("t", Sync(), debounce=0, period=1)
    loop.wake()
    assert loop.woken
    loop.run_once()
    assert not loop.woken


@pytest.fixture
def running():
    loops: list[SyncLoop] = []

    def start(*args, **kw) -> SyncLoop:
        loop = SyncLoop(*args, **kw)
        loops.append(loop)
        return loop.start()
    yield start
    for loop in loops:
        loop.stop(BOUND)
        assert not loop._thread.is_alive()


def test_a_burst_of_changes_is_one_sync(running):
    sync = Sync()
    loop = running("t", sync, debounce=0.2, period=60)
    wait_until(lambda: sync.calls == 1, "the first sync runs at once")
    for _ in range(200):                     # well within the debounce
        loop.wake()
    wait_until(lambda: sync.calls == 2, "the burst is synced")
    time.sleep(0.3)
    assert sync.calls == 2


def test_a_change_after_a_quiet_spell_syncs_without_the_debounce(running):
    sync = Sync()
    loop = running("t", sync, debounce=1.0, period=60)
    wait_until(lambda: sync.calls == 1, "the first sync runs at once")
    time.sleep(1.1)                          # longer than the debounce since that sync
    t0 = time.monotonic()
    loop.wake()
    wait_until(lambda: sync.calls == 2, "the change is synced")
    assert time.monotonic() - t0 < 0.5, "an isolated change waited for the debounce"
    loop.wake()                              # right after a sync: waits out the debounce
    time.sleep(0.3)
    assert sync.calls == 2
    wait_until(lambda: sync.calls == 3, "the change is synced after the debounce")


def test_with_no_change_it_syncs_every_period(running):
    sync = Sync()
    running("t", sync, debounce=0, period=0.02)
    wait_until(lambda: sync.calls >= 5, "periodic syncs")


def test_a_change_during_a_sync_is_synced_next():
    release = threading.Event()
    calls = []

    def sync() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            assert release.wait(BOUND)
    loop = SyncLoop("t", sync, debounce=0, period=60).start()
    try:
        wait_until(lambda: calls, "the first sync starts")
        loop.wake()                          # while the first sync runs
        release.set()
        wait_until(lambda: len(calls) == 2, "the change made during the first sync is synced")
    finally:
        loop.stop(BOUND)


def test_the_first_sync_waits_until_ready(running):
    sync, ready = Sync(), threading.Event()
    running("t", sync, debounce=0, period=60, ready=ready.is_set)
    time.sleep(0.2)
    assert sync.calls == 0
    ready.set()
    wait_until(lambda: sync.calls == 1, "the first sync once ready")


def test_stop_ends_a_loop_that_is_not_ready_or_backing_off():
    never = SyncLoop("t", Sync(), debounce=0, period=60, ready=lambda: False).start()
    failing = Sync()
    failing.fail = True
    backing_off = SyncLoop("t", failing, debounce=0, period=60, backoff=30).start()
    assert failing.called.wait(BOUND)
    t0 = time.monotonic()
    never.stop(BOUND)
    backing_off.stop(BOUND)
    assert time.monotonic() - t0 < 1.0
    assert not never._thread.is_alive() and not backing_off._thread.is_alive()
    assert failing.calls == 1 and backing_off.failures == 1
