"""The control-plane store: versions, conflicts, watch history and 410 Gone."""
import asyncio

import pytest
from kubeweft.lab import errors
from kubeweft.lab.resources import BY_PLURAL
from kubeweft.lab.store import Store

NS = BY_PLURAL[("", "namespaces")]
PODS = BY_PLURAL[("", "pods")]


def make_store(history: int = 1000) -> Store:
    s = Store(history=history)
    s.create(NS, {"metadata": {"name": "default"}})
    return s


def pod(name: str, labels: dict | None = None) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels or {}}, "spec": {}}


def test_versions_increase_and_stale_update_conflicts():
    s = make_store()
    a = s.create(PODS, pod("a"))
    rv1 = int(a["metadata"]["resourceVersion"])
    b = s.update(PODS, dict(pod("a", {"x": "1"}), metadata={**pod("a")["metadata"], "labels": {"x": "1"},
                                                              "resourceVersion": str(rv1)}))
    assert int(b["metadata"]["resourceVersion"]) > rv1
    stale = pod("a", {"x": "2"})
    stale["metadata"]["resourceVersion"] = str(rv1)
    with pytest.raises(errors.APIError) as e:
        s.update(PODS, stale)
    assert e.value.code == 409


def test_create_in_missing_namespace_is_not_found():
    s = make_store()
    p = pod("a")
    p["metadata"]["namespace"] = "nope"
    with pytest.raises(errors.APIError) as e:
        s.create(PODS, p)
    assert e.value.code == 404


def test_watch_replays_history_and_expires():
    async def go():
        s = make_store(history=3)
        rv0 = s.resource_version
        s.create(PODS, pod("a"))
        w = s.watch(PODS, "default", since=rv0)
        assert (await w.next(0.1))[0] == "ADDED"
        for n in "bcde":
            s.create(PODS, pod(n))
        with pytest.raises(errors.APIError) as e:
            s.watch(PODS, since=rv0)
        assert e.value.code == 410
    asyncio.run(go())


def test_selector_transitions_become_added_and_deleted():
    async def go():
        s = make_store()
        s.create(PODS, pod("a", {"app": "x"}))
        w = s.watch(PODS, predicate=lambda o: o["metadata"].get("labels", {}).get("app") == "web")
        cur = s.get(PODS, "default", "a")
        s.update(PODS, {**cur, "metadata": {**cur["metadata"], "labels": {"app": "web"}}})
        assert (await w.next(0.1))[0] == "ADDED"
        cur = s.get(PODS, "default", "a")
        s.update(PODS, {**cur, "metadata": {**cur["metadata"], "labels": {"app": "db"}}})
        assert (await w.next(0.1))[0] == "DELETED"
        assert await w.next(0.05) is None
    asyncio.run(go())


def test_queued_events_come_out_even_with_a_zero_timeout():
    # A watch whose bookmark is due polls with timeout 0: queued events must still come out
    # (asyncio.wait_for(get(), 0) used to time out with items queued, starving the watch).
    async def go():
        s = make_store()
        w = s.watch(PODS)
        for n in "abc":
            s.create(PODS, pod(n))
        got = [await w.next(0) for _ in range(3)]
        assert [o["metadata"]["name"] for _, o in got] == ["a", "b", "c"]
        assert await w.next(0) is None
    asyncio.run(go())


def test_snapshot_restores_objects_and_versions_never_go_back():
    import json

    s = make_store()
    s.create(PODS, pod("a"))
    b = s.create(PODS, pod("b"))
    s.delete(PODS, "default", "a")
    rv = s.resource_version
    copy_ = Store()
    copy_.restore(json.loads(json.dumps(s.snapshot())))
    assert copy_.resource_version == rv
    assert [p["metadata"]["name"] for p in copy_.list(PODS)[0]] == ["b"]
    assert copy_.get(PODS, "default", "b")["metadata"] == b["metadata"]
    assert copy_.try_get(NS, "", "default") is not None
    # a watch from before the restore cannot be replayed: 410, so the watcher re-lists
    with pytest.raises(errors.APIError) as e:
        copy_.watch(PODS, since=rv - 1)
    assert e.value.code == 410
    copy_.watch(PODS, since=rv).close()          # from the current version: no gap, no 410
    c = copy_.create(PODS, pod("c"))
    assert int(c["metadata"]["resourceVersion"]) == rv + 1
