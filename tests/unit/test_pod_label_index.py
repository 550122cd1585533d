"""The label index the policy planner finds a selector's pods with: after any sequence of pods
coming, changing labels and going, its candidates for a selector are every pod of the
namespace the selector matches (and, with matchLabels, only pods that carry them)."""
from __future__ import annotations

import random

import pytest
from kubeweft.proxy.pod_label_index import PodLabelIndex
from kubeweft.proxy.policy_model import Requirement, Selector


def random_labels(rnd: random.Random) -> frozenset:
    return frozenset((k, rnd.choice("ab")) for k in rnd.sample("xyz", rnd.randint(0, 3)))


SELECTORS = [None, Selector(), Selector(frozenset({("x", "a")})),
             Selector(frozenset({("x", "a"), ("y", "b")})),
             Selector(expressions=(Requirement("z", "DoesNotExist"),)),
             Selector(frozenset({("y", "a")}), (Requirement("x", "NotIn", frozenset({"b"})),))]


@pytest.mark.parametrize("seed", range(20))
def test_candidates_hold_every_matching_pod_and_only_pods_with_the_match_labels(seed):
    rnd = random.Random(seed)
    index, pods = PodLabelIndex(), {}
    for _ in range(300):
        key = (rnd.choice(["n1", "n2", "n3"]), f"p{rnd.randint(0, 25)}")
        old = pods.get(key)
        new = None if old is not None and rnd.random() < 0.3 else random_labels(rnd)
        index.put(key, old, new)
        if new is None:
            del pods[key]
        else:
            pods[key] = new
        for ns in ("n1", "n2", "n3"):
            mine = {k: v for k, v in pods.items() if k[0] == ns}
            for sel in SELECTORS:
                got = set(index.candidates(ns, sel))
                assert {k for k, v in mine.items() if sel is None or sel.matches(v)} <= got
                want_labels = sel.match_labels if sel is not None else frozenset()
                assert got == {k for k, v in mine.items() if want_labels <= v}
        assert set(index.namespaces()) == {k[0] for k in pods}
