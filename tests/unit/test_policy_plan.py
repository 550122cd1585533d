"""The policy controller's incremental bookkeeping (no kernel: plans only): after any sequence of
watch events, what it holds (per-pod members, reference counts, the structure) equals what a
controller that saw only the final state computes from scratch, and the commands it produced
along the way take the kernel from one to the other."""
from __future__ import annotations

import random

import pytest
from kubeweft.proxy import render_policy as rp
from kubeweft.proxy.policy_controller import PolicyController

NODE_CIDR = "10.244.0.0/24"


def pod(ns: str, name: str, ip: str, labels: dict, node: str = "node1") -> dict:
    return {"metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"ports": [{"name": "http", "containerPort": 80}]}]},
            "status": {"podIP": ip}}


def policy(ns: str, name: str, rnd: random.Random) -> dict:
    peers = [{"podSelector": {"matchLabels": {"app": rnd.choice("abc")}}},
             {"namespaceSelector": {"matchLabels": {"team": rnd.choice(["red", "blue"])}}},
             {"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": rnd.choice("xy")}}}]
    spec = {"podSelector": rnd.choice([{}, {"matchLabels": {"app": rnd.choice("abc")}}]),
            "ingress": [{"from": rnd.sample(peers, rnd.randint(1, 2)),
                         "ports": [rnd.choice([{"port": 80}, {"port": "http"}])]}]}
    if rnd.random() < 0.4:
        spec["egress"] = [{"to": rnd.sample(peers, 1)}]
        spec["policyTypes"] = ["Ingress", "Egress"]
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def namespace(name: str, team: str) -> dict:
    return {"metadata": {"name": name, "labels": {"team": team}}}


def controller() -> PolicyController:
    return PolicyController(None, "node1", NODE_CIDR, nft=object())   # plans only: never applied


def apply_structure(objects: dict[str, list[str]], lines: list[str]) -> None:
    """Just enough of nft to follow declarations and chain contents."""
    for line in lines:
        words = line.split()
        if words[1] in ("set", "counter", "chain") and words[0] in ("add", "delete", "flush"):
            key = f"{words[1]} {words[4]}"
            if words[0] == "add":
                objects.setdefault(key, [])
            elif words[0] == "flush":
                assert key in objects, line
                objects[key] = []
            else:
                assert key in objects and not objects[key], f"{line}: missing, or a chain not empty"
                del objects[key]
        elif words[:2] == ["add", "rule"]:
            assert f"chain {words[4]}" in objects, line
            objects[f"chain {words[4]}"].append(line)


def apply_lines(elements: dict[str, set[str]], lines: list[str]) -> None:
    """Just enough of nft to follow element commands."""
    for line in lines:
        verb, _, rest = line.partition(" element " + rp.T + " ")
        if verb not in ("add", "delete") or not rest:
            if line.startswith(f"delete set {rp.T} "):
                elements.pop(line.split()[-1], None)
            continue
        name, _, body = rest.partition(" { ")
        items = [e.strip() for e in body.rstrip(" }").split(", ")]
        target = elements.setdefault(name, set())
        for e in items:
            if verb == "add":
                assert e not in target, f"{e} added twice to {name}"
                target.add(e)
            else:
                assert e in target, f"{e} deleted from {name} without being there"
                target.discard(e)


@pytest.mark.parametrize("seed", range(12))
def test_incremental_equals_from_scratch(seed):
    rnd = random.Random(seed)
    nss = {n: namespace(n, rnd.choice(["red", "blue"])) for n in ("x", "y", "z")}
    pods = {}
    for i in range(30):
        ns = rnd.choice(list(nss))
        node = rnd.choice(["node1", "node2"])
        ip = f"10.244.{0 if node == 'node1' else 1}.{i + 2}"
        pods[(ns, f"p{i}")] = pod(ns, f"p{i}", ip, {"app": rnd.choice("abc"), "tier": rnd.choice("xy")}, node)
    pols = {}
    ctl = controller()
    ctl._on_sync("ns", {("", k): v for k, v in nss.items()})
    ctl._on_sync("pol", {})
    ctl._on_sync("pod", dict(pods))
    with ctl.lock:
        ctl._plan_locked()
    objects: dict[str, list[str]] = {}
    apply_structure(objects, rp.render_table(ctl.decls, [])[3:])
    elements: dict[str, set[str]] = {}
    for s, e in ctl.counts:
        elements.setdefault(s, set()).add(e)
    for step in range(60):
        r = rnd.random()
        if r < 0.45:                                 # a policy comes, changes or goes
            ns, name = rnd.choice(list(nss)), f"pol{rnd.randint(0, 8)}"
            if (ns, name) in pols and rnd.random() < 0.4:
                ctl._on_event("pol", "DELETED", pols.pop((ns, name)))
            else:
                pols[(ns, name)] = policy(ns, name, rnd)
                ctl._on_event("pol", "MODIFIED", pols[(ns, name)])
        elif r < 0.8:                                # a pod's labels change
            key = rnd.choice(list(pods))
            doc = pods[key]
            doc = dict(doc, metadata=dict(doc["metadata"], labels={"app": rnd.choice("abc"),
                                                                   "tier": rnd.choice("xy")}))
            pods[key] = doc
            ctl._on_event("pod", "MODIFIED", doc)
        elif r < 0.93:                               # a pod goes, or a new one comes
            if rnd.random() < 0.5 and pods:
                key = rnd.choice(list(pods))
                ctl._on_event("pod", "DELETED", pods.pop(key))
            else:
                i = 100 + step
                ns, node = rnd.choice(list(nss)), rnd.choice(["node1", "node2"])
                ip = f"10.244.{0 if node == 'node1' else 1}.{i}"
                pods[(ns, f"p{i}")] = pod(ns, f"p{i}", ip, {"app": rnd.choice("abc"), "tier": rnd.choice("xy")}, node)
                ctl._on_event("pod", "ADDED", pods[(ns, f"p{i}")])
        else:                                        # a namespace's labels change
            n = rnd.choice(list(nss))
            nss[n] = namespace(n, rnd.choice(["red", "blue"]))
            ctl._on_event("ns", "MODIFIED", nss[n])
        if rnd.random() < 0.5:                       # sometimes several events in one sync
            with ctl.lock:
                lines = ctl._plan_locked()
            apply_lines(elements, lines)
            apply_structure(objects, lines)
    with ctl.lock:
        lines = ctl._plan_locked()
    apply_lines(elements, lines)
    apply_structure(objects, lines)

    fresh = controller()
    fresh._on_sync("ns", {("", k): v for k, v in nss.items()})
    fresh._on_sync("pol", {(k[0], k[1]): v for k, v in pols.items()})
    fresh._on_sync("pod", dict(pods))
    with fresh.lock:
        fresh._plan_locked()
    assert ctl.members == fresh.members
    assert ctl.counts == fresh.counts
    assert ctl.decls == fresh.decls
    assert list(ctl.decls) == list(rp.render_decls(ctl.index, NODE_CIDR))
    want_objects: dict[str, list[str]] = {}
    apply_structure(want_objects, rp.render_table(fresh.decls, [])[3:])
    assert objects == want_objects
    want: dict[str, set[str]] = {}
    for s, e in fresh.counts:
        want.setdefault(s, set()).add(e)
    assert {k: v for k, v in elements.items() if v} == want
    # a policy change took only its affected pods' members into account, yet the result is whole
    assert all(ctl.pid_pods.get(pid, set()) == {k for k, ms in ctl.members.items()
                                                if any(s.startswith(pid) for s, _ in ms)}
               for pid, _ in ctl.index.policies)


def test_watch_events_do_not_wait_for_a_sync_in_progress():
    ctl = controller()
    with ctl.lock:                                   # a sync holds the lock (an nft transaction)
        ctl._on_event("pod", "ADDED", pod("x", "a", "10.244.0.2", {}))
        ctl._on_event("pod", "ADDED", pod("x", "b", "10.244.0.3", {}))
        assert len(ctl.pending) == 2 and not ctl.pods
    with ctl.lock:
        ctl._plan_locked()                           # the next sync takes both in
    assert set(ctl.pods) == {("x", "a"), ("x", "b")} and not ctl.pending
