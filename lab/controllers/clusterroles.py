"""ClusterRole aggregation (kube-controller-manager's clusterrole-aggregation controller): a
ClusterRole with an aggregationRule gets as rules the union of the rules of every ClusterRole its
selectors match, in name order, without duplicates; so admin, edit and view grow when a
ClusterRole labelled rbac.authorization.k8s.io/aggregate-to-<role>=true appears.
"""
from __future__ import annotations

from ..resources import CLUSTER_ROLES
from ..truth_table import selector_matches
from .loop import Reconciler


def plan_aggregated_rules(role: dict, roles: list[dict]) -> list[dict]:
    """The rules `role` (which has an aggregationRule) should hold, given every ClusterRole."""
    sels = [s for s in ((role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []) if s]
    rules: list[dict] = []
    for other in sorted(roles, key=lambda r: r["metadata"]["name"]):
        if other["metadata"]["name"] == role["metadata"]["name"]:
            continue
        labels = other["metadata"].get("labels") or {}
        if any(selector_matches(s, labels) for s in sels):
            for r in other.get("rules") or []:
                if r not in rules:
                    rules.append(r)
    return rules


class ClusterRoleAggregationController(Reconciler):
    name = "clusterrole-aggregation-controller"

    def prime(self) -> None:
        self.mark("all")

    def on_event(self, ev) -> None:
        if ev.resource is CLUSTER_ROLES and not self.syncing:
            self.mark("all")          # any role's labels or rules may feed any aggregate

    def sync(self, key) -> None:
        # aggregates feed aggregates (view into edit into admin): repeat until nothing changes
        for _ in range(10):
            changed = False
            roles = self.store.list(CLUSTER_ROLES)[0]
            for role in roles:
                if not role.get("aggregationRule"):
                    continue
                want = plan_aggregated_rules(role, roles)
                if (role.get("rules") or []) != want:
                    new = dict(role, rules=want)
                    new["metadata"] = dict(role["metadata"])
                    self.store.update(CLUSTER_ROLES, new)
                    self.writes += 1
                    changed = True
            if not changed:
                return
