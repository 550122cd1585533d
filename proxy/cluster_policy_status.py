"""What a ClusterNetworkPolicy's status says, planned from the policy as the agent read it. Pure.

network-policy-api leaves the condition types to the implementation (status.conditions, a map
keyed by type). kubeweft writes one, `Accepted`, the type Gateway API's policies use for "the
implementation read this and acts on it":

    True   Enforced      every rule is in the agents' tables as written
    True   FailedClosed  enforced, but a rule has a peer the agent cannot match (domainNames, or a
                         field of a newer API): as the API asks, that Accept rule matches nothing and
                         that Deny or Pass rule matches every packet; the message names each rule
    False  Invalid       the agent cannot read the policy (the message says why): it enforces none of it

One agent writes it (the holder of the Lease kube-system/kubeweft-cnp-status, proxy/leader.py),
not each node: what it reports depends only on the spec, which every agent renders with the same
code, and N agents writing M policies' status is N x M writes on every change. Cilium removed its
per-node CiliumNetworkPolicy status for that cost and keeps one `Valid` condition written by one
writer. A node whose table fails to load counts it in its own
kubeweft_clusternetworkpolicy_sync_failures_total instead.
"""
from __future__ import annotations

import datetime

from . import cluster_policy_model as cm

TYPE = "Accepted"
ENFORCED, FAILED_CLOSED, INVALID = "Enforced", "FailedClosed", "Invalid"


def _unreadable_rules(pol: cm.ClusterPolicy) -> list[str]:
    out = []
    for direction, rules in (("ingress", pol.ingress), ("egress", pol.egress)):
        for r, rule in enumerate(rules):
            fields = sorted({p.unknown for p in rule.peers if p.unknown})
            if fields:
                effect = "matches no traffic" if rule.action == cm.ACCEPT else "matches all traffic"
                name = f" ({rule.name})" if rule.name else ""
                out.append(f"{direction} rule {r}{name}: {', '.join(fields)} peers are not supported, "
                           f"so this {rule.action} rule {effect}")
    return out


def plan_condition(parsed: cm.ClusterPolicy | str, generation: int) -> dict:
    """The Accepted condition (without lastTransitionTime) for a policy read as `parsed`: the
    model, or the error that kept it from being read."""
    if isinstance(parsed, str):
        return {"type": TYPE, "status": "False", "reason": INVALID, "observedGeneration": generation,
                "message": f"not enforced: {parsed}"[:32768]}
    failed = _unreadable_rules(parsed)
    if failed:
        return {"type": TYPE, "status": "True", "reason": FAILED_CLOSED, "observedGeneration": generation,
                "message": ("enforced, failing closed: " + "; ".join(failed))[:32768]}
    return {"type": TYPE, "status": "True", "reason": ENFORCED, "observedGeneration": generation,
            "message": f"enforced: {len(parsed.ingress)} ingress and {len(parsed.egress)} egress rules"}


def plan_conditions(current: list[dict] | None, want: dict, now: datetime.datetime) -> list[dict] | None:
    """status.conditions with `want` in place of its type's condition, keeping every other type and
    lastTransitionTime while the status does not change; None when nothing changes."""
    current = list(current or [])
    old = next((c for c in current if c.get("type") == want["type"]), None)
    if old is not None and all(old.get(k) == v for k, v in want.items()):
        return None
    when = old["lastTransitionTime"] if old is not None and old.get("status") == want["status"] and \
        old.get("lastTransitionTime") else now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [c for c in current if c.get("type") != want["type"]] + [dict(want, lastTransitionTime=when)]
