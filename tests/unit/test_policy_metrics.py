"""kubeweft.proxy.policy_metrics: the table's named counters as metric labels."""
from __future__ import annotations

from kubeweft.proxy.policy_metrics import parse_counters


def test_named_counters_become_namespace_policy_direction_and_verdict():
    names = {"p0a1b2c3d4e5": "x/web"}
    counters = [("p0a1b2c3d4e5_in_drop", 7, 700), ("p0a1b2c3d4e5_eg_ok", 3, 180),
                ("pffffffffffff_in_ok", 0, 0), ("stray", 1, 1), ("p0a1b2c3d4e5_in_other", 1, 1)]
    got = parse_counters(counters, lambda pid: names.get(pid) or f"?/{pid}")
    assert got == {("x", "web", "ingress", "drop"): 7, ("x", "web", "egress", "ok"): 3,
                   ("?", "pffffffffffff", "ingress", "ok"): 0}
