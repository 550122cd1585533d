"""kubeweft.proxy.policy_metrics: the table's named counters as metric labels."""
from __future__ import annotations

from kubeweft.proxy.policy_metrics import parse_counters


def test_named_counters_become_namespace_policy_direction_and_verdict():
    names = {"p0a1b2c3d4e5": "x/web"}
    items = [{"table": {"name": "kubeweft-policy"}},
             {"counter": {"name": "p0a1b2c3d4e5_in_drop", "packets": 7}},
             {"counter": {"name": "p0a1b2c3d4e5_eg_ok", "packets": 3}},
             {"counter": {"name": "pffffffffffff_in_ok"}},
             {"counter": {"name": "stray"}},
             {"set": {"name": "in_isolated"}}]
    got = parse_counters(items, lambda pid: names.get(pid) or f"?/{pid}")
    assert got == {("x", "web", "ingress", "drop"): 7, ("x", "web", "egress", "ok"): 3,
                   ("?", "pffffffffffff", "ingress", "ok"): 0}
