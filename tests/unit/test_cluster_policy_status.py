"""The Accepted condition the agent writes on a ClusterNetworkPolicy: Enforced, FailedClosed with
the rule it cannot match named (domainNames), Invalid with the reason; other implementations'
conditions kept, lastTransitionTime kept while the status holds, no write when nothing changes."""
from __future__ import annotations

import datetime

from kubeweft.proxy import cluster_policy_model as cm
from kubeweft.proxy import cluster_policy_status as cs
from kubeweft.proxy.policy_model import ModelError

NOW = datetime.datetime(2026, 12, 7, 23, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(minutes=5)


def policy(egress) -> cm.ClusterPolicy:
    return cm.parse_cluster_policy({"metadata": {"name": "p"}, "spec": {
        "tier": "Admin", "priority": 1, "subject": {"namespaces": {}}, "egress": egress}})


def test_a_policy_read_whole_is_enforced():
    c = cs.plan_condition(policy([{"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]}]), 3)
    assert (c["type"], c["status"], c["reason"], c["observedGeneration"]) == ("Accepted", "True", "Enforced", 3)
    assert c["message"] == "enforced: 0 ingress and 1 egress rules"


def test_domain_names_fail_closed_and_the_condition_names_each_rule():
    c = cs.plan_condition(policy([
        {"name": "dns-allow", "action": "Accept", "to": [{"domainNames": ["kubernetes.io"]}]},
        {"action": "Deny", "to": [{"namespaces": {}}]},
        {"action": "Pass", "to": [{"domainNames": ["*.example.com"]}, {"namespaces": {}}]}]), 1)
    assert (c["status"], c["reason"]) == ("True", "FailedClosed")
    assert "egress rule 0 (dns-allow): domainNames peers are not supported, so this Accept rule matches " \
           "no traffic" in c["message"]
    assert "egress rule 2: domainNames peers are not supported, so this Pass rule matches all traffic" in c["message"]
    assert "rule 1" not in c["message"]


def test_a_policy_the_agent_cannot_read_is_invalid_and_not_enforced():
    try:
        cm.parse_cluster_policy({"metadata": {"name": "p"}, "spec": {"tier": "Developer"}})
    except ModelError as e:
        c = cs.plan_condition(str(e), 2)
    assert (c["status"], c["reason"]) == ("False", "Invalid")
    assert c["message"].startswith("not enforced: p.spec.tier: 'Developer'")


def test_conditions_merge_keep_transition_time_and_skip_no_change():
    other = {"type": "example.com/Seen", "status": "True", "reason": "X", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
    enforced = cs.plan_condition(policy([]), 1)
    first = cs.plan_conditions([other], enforced, NOW)
    assert first[0] == other and first[1] == dict(enforced, lastTransitionTime="2026-12-07T23:00:00Z")
    assert cs.plan_conditions(first, enforced, LATER) is None
    # a new generation, the same status: written, transition time kept
    again = cs.plan_conditions(first, cs.plan_condition(policy([]), 2), LATER)
    assert again[1]["observedGeneration"] == 2 and again[1]["lastTransitionTime"] == "2026-12-07T23:00:00Z"
    # the status changes: a new transition time
    invalid = cs.plan_conditions(again, cs.plan_condition("broken", 3), LATER)
    assert invalid[1]["status"] == "False" and invalid[1]["lastTransitionTime"] == "2026-12-07T23:05:00Z"
    assert invalid[0] == other
