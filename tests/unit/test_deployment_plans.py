"""The deployment controller's pure plans: which ReplicaSet is new, rolling update steps,
proportional scaling, revisions, status and progress conditions."""
import pytest
from kubeweft.lab.controllers.deployment import (
    DESIRED,
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
    DeploymentView,
    RSView,
    calculate_status,
    get_condition,
    is_scaling_event,
    parse_deployment,
    plan_cleanup,
    plan_proportional_scale,
    plan_recreate_step,
    plan_rolling_step,
    plan_rollout_status,
    plan_rs_annotations,
    render_new_rs,
    resolve_fenceposts,
    split_replicasets,
)
from kubeweft.lab.controllers.podtemplate import compute_hash

T1 = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}
T2 = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}


def dep(replicas=3, surge="25%", unavailable="25%", **kw) -> DeploymentView:
    kw.setdefault("template", T2)
    return DeploymentView("ns", "web", "uid-d", kw.pop("generation", 1), replicas, kw.pop("recreate", False),
                          surge, unavailable, **kw)


def rs(name, replicas, available=None, template=T1, created=0.0, **kw) -> RSView:
    available = replicas if available is None else available
    return RSView(name, f"uid-{name}", created, replicas, kw.pop("status_replicas", replicas),
                  kw.pop("ready", available), available, template=template, **kw)


@pytest.mark.parametrize("surge,unavailable,replicas,want", [
    ("25%", "25%", 3, (1, 0)), ("25%", "25%", 10, (3, 2)), (0, 0, 3, (0, 1)), ("0%", "10%", 3, (0, 1)),
    (2, 1, 5, (2, 1)), ("100%", 0, 4, (4, 0))])
def test_fenceposts_round_surge_up_and_unavailable_down(surge, unavailable, replicas, want):
    assert resolve_fenceposts(surge, unavailable, replicas) == want


def test_new_replicaset_is_the_oldest_with_the_template_ignoring_hash_and_nulls():
    with_hash = {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}, "creationTimestamp": None},
                 "spec": {"containers": [{"name": "c", "image": "nginx:2", "resources": {}}]}}
    a, b, c = rs("a", 3), rs("b", 0, template=with_hash, created=2.0), rs("c", 0, template=T2, created=1.0)
    new, olds = split_replicasets(dep(), [a, b, c])
    assert new is c and olds == [a, b]
    assert split_replicasets(dep(template={"spec": {}}), [a])[0] is None


def simulate(d: DeploymentView, new: RSView, olds: list[RSView], limit=20):
    """Apply rolling steps, every new pod available at once; return the states seen."""
    states = []
    for _ in range(limit):
        step = plan_rolling_step(d, new, olds)
        if not step:
            return states
        new = rs(new.name, step.get(new.name, new.replicas), template=new.template)
        olds = [rs(o.name, step.get(o.name, o.replicas)) for o in olds]
        states.append((new.replicas, sum(o.replicas for o in olds)))
    raise AssertionError("no convergence")


def test_rolling_update_replaces_one_pod_at_a_time_with_25_percent_on_3():
    states = simulate(dep(), rs("new", 0, template=T2), [rs("old", 3)])
    assert states == [(1, 3), (1, 2), (2, 2), (2, 1), (3, 1), (3, 0)]
    assert all(n + o <= 4 and n + o >= 3 for n, o in states)        # surge 1, unavailable 0


def test_rolling_update_with_max_unavailable_and_no_surge():
    states = simulate(dep(replicas=4, surge=0, unavailable=2), rs("new", 0, template=T2), [rs("old", 4)])
    assert states[0] == (0, 2)                       # two old pods go first: no room to surge
    assert all(n + o <= 4 and n + o >= 2 for n, o in states) and states[-1] == (4, 0)


def test_rolling_step_waits_for_availability_and_removes_unhealthy_old_pods_first():
    d = dep()
    # the new pod is not available yet: nothing may go down
    assert plan_rolling_step(d, rs("new", 1, available=0, template=T2), [rs("old", 3)]) == {}
    # old pods that are not available cost no availability: they go first, oldest set first
    olds = [rs("older", 2, available=0, created=1.0), rs("old", 2, available=2, created=2.0)]
    assert plan_rolling_step(dep(replicas=2, surge=0, unavailable=1), rs("new", 0, template=T2), olds) \
        == {"older": 0, "old": 1}
    # a new ReplicaSet above replicas is cut back
    assert plan_rolling_step(d, rs("new", 5, template=T2), []) == {"new": 3}


def test_proportional_scaling_in_the_middle_of_a_rollout():
    d = dep(replicas=15, surge=3, unavailable=0, status={"replicas": 13})
    new = rs("new", 5, template=T2, annotations={MAX_REPLICAS: "13", DESIRED: "10"})
    old = rs("old", 8, annotations={MAX_REPLICAS: "13", DESIRED: "10"})
    assert is_scaling_event(d, [new, old])
    plan = plan_proportional_scale(d, new, [old])
    assert plan == {"new": 7, "old": 11}
    assert sum(plan.values()) == 18                                   # 15 + maxSurge 3
    # only one active ReplicaSet: it takes the new count whole
    assert plan_proportional_scale(dep(replicas=5), rs("new", 3, template=T2), [rs("old", 0)]) == {"new": 5}
    assert not is_scaling_event(dep(replicas=3), [rs("new", 3, template=T2, annotations={DESIRED: "3"})])


def test_recreate_scales_old_to_zero_then_waits_for_their_pods():
    d = dep(recreate=True)
    assert plan_recreate_step(d, None, [rs("old", 3)], old_pods_left=True) == ({"old": 0}, False)
    assert plan_recreate_step(d, None, [rs("old", 0, status_replicas=0)], old_pods_left=True) == ({}, False)
    assert plan_recreate_step(d, None, [rs("old", 0, status_replicas=0)], old_pods_left=False) == ({}, True)
    assert plan_recreate_step(d, rs("new", 0, template=T2), [], old_pods_left=False) == ({"new": 3}, True)


def test_cleanup_keeps_revision_history_limit_of_empty_old_replicasets():
    olds = [rs(f"r{i}", 0, revision=i, observed=1) for i in range(1, 6)] + [rs("busy", 2, revision=0)]
    assert plan_cleanup(dep(history_limit=3), olds) == ["r1", "r2"]      # "busy" still has pods
    assert plan_cleanup(dep(history_limit=None), olds) == []


def test_revision_annotations_and_rollback_history():
    d = dep(annotations={"kubernetes.io/change-cause": "v2", REVISION: "7",
                         "kubectl.kubernetes.io/last-applied-configuration": "{}"})
    made = plan_rs_annotations(d, {}, 3, exists=False)
    assert made == {"kubernetes.io/change-cause": "v2", REVISION: "3", DESIRED: "3", MAX_REPLICAS: "4"}
    # a ReplicaSet brought back by `rollout undo` gets the next revision and remembers its old one
    back = plan_rs_annotations(d, {REVISION: "1", DESIRED: "3"}, 4, exists=True)
    assert back[REVISION] == "4" and back[REVISION_HISTORY] == "1" and back[DESIRED] == "3"
    assert plan_rs_annotations(d, {REVISION: "5"}, 4, exists=True)[REVISION] == "5"


def test_new_replicaset_object():
    owner = {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "web", "namespace": "ns", "uid": "uid-d"},
             "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": T2}}
    d = parse_deployment(dict(owner, spec=dict(owner["spec"], replicas=3)))
    new = render_new_rs(owner, d, [rs("old", 3, revision=1)], None)
    h = compute_hash(T2)
    assert new["metadata"]["name"] == f"web-{h}"
    assert new["spec"]["selector"] == {"matchLabels": {"app": "web", "pod-template-hash": h}}
    assert new["spec"]["template"]["metadata"]["labels"] == {"app": "web", "pod-template-hash": h}
    assert new["spec"]["replicas"] == 1                      # 3 old + 1 surge
    assert new["metadata"]["annotations"][REVISION] == "2"
    assert new["metadata"]["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                                   "uid": "uid-d", "controller": True, "blockOwnerDeletion": True}]


def test_template_hash_form_and_stability():
    h = compute_hash(T1)
    assert h == compute_hash(dict(T1)) and 8 <= len(h) <= 10
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert compute_hash(T1, 1) != h and compute_hash(T2) != h


def test_status_counts_and_available_condition():
    d = dep(generation=4)
    status = calculate_status(d, [rs("new", 2, template=T2), rs("old", 2, available=1)], rs("new", 2),
                              {}, "2026-01-01T00:00:00Z")
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 4, "replicas": 4, "updatedReplicas": 2, "readyReplicas": 3,
        "availableReplicas": 3, "unavailableReplicas": 1}
    assert get_condition(status, "Available")["reason"] == "MinimumReplicasAvailable"
    low = calculate_status(d, [rs("new", 3, available=1)], None, {}, "t")
    assert get_condition(low, "Available")["status"] == "False" and "updatedReplicas" not in low


def test_progress_complete_progressing_and_deadline():
    done, _ = plan_rollout_status(dep(), [rs("new", 3, template=T2)], rs("new", 3), {}, 1000.0)
    cond = get_condition(done, "Progressing")
    assert (cond["status"], cond["reason"], cond["message"]) == \
        ("True", "NewReplicaSetAvailable", 'ReplicaSet "new" has successfully progressed.')
    stuck_cond = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                  "lastUpdateTime": "1970-01-01T00:00:00Z", "lastTransitionTime": "1970-01-01T00:00:00Z"}
    base = {"conditions": [stuck_cond], "updatedReplicas": 1, "replicas": 3, "readyReplicas": 2,
            "availableReplicas": 2}
    d = dep(progress_deadline=600, status=base)
    rss = [rs("new", 1, available=0, template=T2), rs("old", 2)]
    status, wait = plan_rollout_status(d, rss, rss[0], base, 300.0)
    assert get_condition(status, "Progressing")["reason"] == "ReplicaSetUpdated" and wait == pytest.approx(301.0)
    status, wait = plan_rollout_status(d, rss, rss[0], base, 601.0)
    cond = get_condition(status, "Progressing")
    assert (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded") and wait is None
    assert cond["message"] == 'ReplicaSet "new" has timed out progressing.'
