"""The policy controller's watch edge (no kernel: plans only): watch threads only queue, and the
next sync parses the queue, in order, into the planner; a broken object is skipped there."""
from __future__ import annotations

from kubeweft.proxy.policy_controller import PolicyController

NODE_CIDR = "10.244.0.0/24"


def pod(ns: str, name: str, ip: str, labels: dict, node: str = "node1") -> dict:
    return {"metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node}, "status": {"podIP": ip}}


def controller() -> PolicyController:
    return PolicyController(None, "node1", NODE_CIDR, nft=object())   # plans only: never applied


def test_watch_events_do_not_wait_for_a_sync_in_progress():
    ctl = controller()
    with ctl.lock:                                   # a sync holds the lock (an nft transaction)
        ctl._on_event("pod", "ADDED", pod("x", "a", "10.244.0.2", {}))
        ctl._on_event("pod", "ADDED", pod("x", "b", "10.244.0.3", {}))
        assert len(ctl.pending) == 2 and not ctl.planner.pods
        assert ctl.pending_events() == 2 + 1 and ctl.loop.woken      # two queued, a sync due
    with ctl.lock:
        ctl._plan_locked()                           # the next sync takes both in
    assert set(ctl.planner.pods) == {("x", "a"), ("x", "b")} and not ctl.pending


def test_events_are_taken_in_order_and_broken_objects_skipped():
    ctl = controller()
    good = {"metadata": {"namespace": "x", "name": "p"}, "spec": {"podSelector": {}}}
    broken = {"metadata": {"namespace": "x", "name": "bad"}, "spec": {"podSelector": "everything"}}
    ctl._on_sync("ns", {("", "x"): {"metadata": {"name": "x"}}})
    ctl._on_sync("pol", {("x", "p"): good, ("x", "bad"): broken})
    ctl._on_sync("pod", {})
    ctl._on_event("pod", "ADDED", pod("x", "a", "10.244.0.2", {}))
    ctl._on_event("pod", "DELETED", pod("x", "a", "10.244.0.2", {}))
    ctl._on_event("pol", "MODIFIED", broken)         # a broken update removes what was there
    ctl._on_event("pol", "ADDED", dict(good, metadata={"namespace": "x", "name": "q"}))
    with ctl.lock:
        lines, _, _ = ctl._plan_locked()
    assert sorted(ctl.planner.policies) == ["x/p", "x/q"]
    assert not ctl.planner.pods
    assert not ctl.planner.dirty and ctl.pending_events() == 1      # woken: the loop syncs next
    assert any(line.startswith("add chain") for line in lines)
