"""Pure plans of the ReplicaSet and DaemonSet controllers, the garbage collector, ownership claims
and deletion: which pods to create and delete given the state."""
import datetime

from kubeweft.lab.controllers.daemonset import (
    DaemonSetView,
    daemon_tolerations,
    group_by_node,
    plan_ds_status,
    plan_history,
    plan_history_cleanup,
    plan_manage,
    plan_rolling_update,
    render_daemon_pod,
    render_revision,
    should_run,
)
from kubeweft.lab.controllers.garbagecollector import ABSENT, PRESENT, WAITING, plan_dependent
from kubeweft.lab.controllers.owners import plan_claim
from kubeweft.lab.controllers.podtemplate import PodView, parse_pod
from kubeweft.lab.controllers.replicaset import plan_replicas, plan_rs_status, rank_for_deletion
from kubeweft.lab.controllers.scheduler import NodeView
from kubeweft.lab.deletion import plan_deletion
from kubeweft.lab.resources import PODS, REPLICASETS

NOW = 1_000_000.0


def pod(name, node="node1", phase="Running", ready=True, since=NOW - 100, created=0.0, **kw) -> PodView:
    labels = tuple(sorted(kw.pop("labels", {}).items()))
    return PodView("ns", name, f"uid-{name}", labels, node, phase, ready, since if ready else None,
                   created=created, **kw)


# --- ReplicaSet ------------------------------------------------------------------------------------

def test_replicaset_creates_the_missing_and_deletes_the_cheapest():
    assert plan_replicas(3, [pod("a")]) == (2, [])
    assert plan_replicas(1, [pod("a"), pod("gone", deleting=True), pod("done", phase="Succeeded")]) == (0, [])
    pods = [pod("running-old", created=1.0), pod("unscheduled", node="", phase="Pending", ready=False),
            pod("pending", phase="Pending", ready=False), pod("unready", ready=False),
            pod("running-new", created=5.0), pod("crowded", node="node2", created=9.0)]
    # unscheduled, then pending, then unready; among ready ones those on the busiest node first,
    # then the newest
    order = [p.name for p in rank_for_deletion(pods)]
    assert order[:3] == ["unscheduled", "pending", "unready"]
    assert order[3:] == ["running-new", "running-old", "crowded"]
    assert plan_replicas(4, pods) == (0, ["unscheduled", "pending"])


def test_replicaset_status_with_min_ready_seconds():
    rs = {"metadata": {"generation": 3}, "spec": {"minReadySeconds": 10, "template": {"metadata": {
        "labels": {"app": "web", "tier": "x"}}}}}
    pods = [pod("a", labels={"app": "web", "tier": "x"}), pod("b", since=NOW - 4, labels={"app": "web"}),
            pod("c", ready=False), pod("d", deleting=True)]
    status, wait = plan_rs_status(rs, pods, NOW)
    assert status == {"replicas": 3, "fullyLabeledReplicas": 1, "readyReplicas": 2, "availableReplicas": 1,
                      "observedGeneration": 3}
    assert abs(wait - 6.1) < 1e-6                     # b turns available in 6 s


def test_parse_pod_reads_readiness_owner_and_restarts():
    obj = {"metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z",
                        "ownerReferences": [{"uid": "o1"}, {"uid": "rs1", "controller": True}]},
           "spec": {"nodeName": "node1"},
           "status": {"phase": "Running", "containerStatuses": [{"restartCount": 2}, {"restartCount": 1}],
                      "conditions": [{"type": "Ready", "status": "True",
                                      "lastTransitionTime": "2026-01-01T00:00:10Z"}]}}
    p = parse_pod(obj)
    assert (p.owner, p.restarts, p.ready, p.node, p.active) == ("rs1", 3, True, "node1", True)
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert p.ready_since == t0 + 10 and p.available(5, t0 + 15) and not p.available(6, t0 + 15)


def test_claim_adopts_matching_orphans_and_releases_what_no_longer_matches():
    owner = {"metadata": {"uid": "u"}, "spec": {"selector": {"matchLabels": {"app": "web"}}}}
    mine = {"metadata": {"name": "a", "labels": {"app": "web"}}}
    moved = {"metadata": {"name": "b", "labels": {"app": "db"}}}
    orphan = {"metadata": {"name": "c", "labels": {"app": "web"}}}
    dying = {"metadata": {"name": "d", "labels": {"app": "web"}, "deletionTimestamp": "x"}}
    other = {"metadata": {"name": "e", "labels": {"app": "db"}}}
    claim = plan_claim(owner, [mine, moved], [orphan, dying, other])
    assert (claim.keep, claim.release, claim.adopt) == ([mine], [moved], [orphan])
    deleting = dict(owner, metadata={"uid": "u", "deletionTimestamp": "x"})
    assert plan_claim(deleting, [moved], [orphan]).adopt == []


# --- DaemonSet -------------------------------------------------------------------------------------

def node(name, ready=True, labels=None, taints=(), unschedulable=False) -> NodeView:
    return NodeView(name, tuple(sorted((labels or {}).items())), ready, unschedulable, tuple(taints))


def ds(**kw) -> DaemonSetView:
    spec = kw.pop("spec", {"containers": [{"name": "c", "image": "i"}]})
    return DaemonSetView("ns", "agent", "uid-ds", template={"metadata": {"labels": {"app": "agent"}}, "spec": spec},
                         **kw)


def test_eligible_nodes_selector_affinity_taints_and_not_ready():
    plain = {"containers": []}
    assert should_run(plain, node("n")) == (True, True)
    assert should_run(plain, node("n", unschedulable=True)) == (True, True)        # cordoned: daemons stay
    assert should_run({"nodeSelector": {"disk": "ssd"}}, node("n")) == (False, False)
    assert should_run({"nodeSelector": {"disk": "ssd"}}, node("n", labels={"disk": "ssd"})) == (True, True)
    # not Ready: counts as tainted not-ready NoSchedule (no new pod) and NoExecute (tolerated: keeps running)
    assert should_run(plain, node("n", ready=False)) == (False, True)
    assert should_run({"tolerations": [{"operator": "Exists"}]}, node("n", ready=False)) == (True, True)
    assert should_run(plain, node("n", taints=[("dedicated", "db", "NoSchedule")])) == (False, True)
    assert should_run(plain, node("n", taints=[("dedicated", "db", "NoExecute")])) == (False, False)
    tol = [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute"}]
    assert should_run({"tolerations": tol}, node("n", taints=[("dedicated", "db", "NoExecute")])) == (True, True)
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}
    assert should_run({"affinity": affinity}, node("n1", labels={"zone": "a"}))[0]
    assert should_run({"affinity": affinity}, node("n2"))[0]
    assert not should_run({"affinity": affinity}, node("n3", labels={"zone": "b"}))[0]
    assert should_run({"nodeName": "n2"}, node("n1")) == (False, False)


def test_daemon_tolerations_added_once():
    tol = daemon_tolerations({"hostNetwork": True, "tolerations": [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]})
    keys = [(t["key"], t["effect"]) for t in tol]
    assert len(keys) == len(set(keys)) == 7
    assert ("node.kubernetes.io/network-unavailable", "NoSchedule") in keys
    assert ("node.kubernetes.io/not-ready", "NoExecute") in keys


def test_manage_one_pod_per_eligible_node():
    nodes = [node("n1"), node("n2"), node("n3", labels={"role": "x"}, taints=[("k", "", "NoExecute")])]
    pods = [pod("a", node="n1", created=1.0), pod("b", node="n1", created=2.0), pod("c", node="n3"),
            pod("f", node="n2", phase="Failed")]
    create, delete = plan_manage(ds(), nodes, group_by_node(pods), "h1")
    assert create == [] and sorted(delete) == ["b", "c", "f"]        # the younger twin, the misplaced, the failed
    create, _ = plan_manage(ds(), nodes, group_by_node([pod("a", node="n1")]), "h1")
    assert create == ["n2"]
    # a pod still terminating holds its node until it is gone
    assert plan_manage(ds(), [node("n1")], group_by_node([pod("a", node="n1", deleting=True)]), "h1") == ([], [])


def test_rolling_update_node_by_node_within_max_unavailable():
    nodes = [node(f"n{i}") for i in range(1, 5)]
    old = [pod(f"old{i}", node=f"n{i}", labels={"controller-revision-hash": "h1"}) for i in range(1, 5)]
    by_node = group_by_node(old)
    assert plan_rolling_update(ds(max_unavailable=1), nodes, by_node, "h2", NOW) == (["old1"], [])
    assert plan_rolling_update(ds(max_unavailable="50%"), nodes, by_node, "h2", NOW) == (["old1", "old2"], [])
    # n1 already replaced but its new pod is not ready: it uses up the one unavailable slot
    fresh = pod("new1", node="n1", ready=False, labels={"controller-revision-hash": "h2"})
    assert plan_rolling_update(ds(max_unavailable=1), nodes, group_by_node([fresh, *old[1:]]), "h2", NOW) == ([], [])
    # an unavailable old pod is replaced at once; it is the unavailable one, so no other goes
    sick = pod("sick", node="n1", ready=False, labels={"controller-revision-hash": "h1"})
    assert plan_rolling_update(ds(max_unavailable=1), nodes, group_by_node([sick, *old[1:]]), "h2", NOW) \
        == (["sick"], [])
    assert plan_rolling_update(ds(max_unavailable=2), nodes, group_by_node([sick, *old[1:]]), "h2", NOW) \
        == (["sick", "old2"], [])
    # the template generation label counts as up to date too
    gen = pod("g", node="n1", labels={"pod-template-generation": "2"})
    assert plan_rolling_update(ds(template_generation="2"), [node("n1")], group_by_node([gen]), "h9", NOW) == ([], [])


def test_rolling_update_with_surge_starts_the_new_pod_first():
    nodes = [node("n1"), node("n2")]
    old = [pod(f"old{i}", node=f"n{i}", labels={"controller-revision-hash": "h1"}) for i in (1, 2)]
    d = ds(max_unavailable=0, max_surge=1)
    assert plan_rolling_update(d, nodes, group_by_node(old), "h2", NOW) == ([], ["n1"])
    new = pod("new1", node="n1", labels={"controller-revision-hash": "h2"})
    assert plan_rolling_update(d, nodes, group_by_node([*old, new]), "h2", NOW) == (["old1"], ["n2"])


def test_daemonset_status_fields():
    nodes = [node("n1"), node("n2"), node("n3", ready=False)]
    pods = [pod("a", node="n1", labels={"controller-revision-hash": "h2"}),
            pod("b", node="n2", ready=False, labels={"controller-revision-hash": "h1"}),
            pod("c", node="n3")]
    status, wait = plan_ds_status(ds(generation=5), nodes, group_by_node(pods), "h2", NOW)
    assert status == {"currentNumberScheduled": 2, "numberMisscheduled": 1, "desiredNumberScheduled": 2,
                      "numberReady": 1, "observedGeneration": 5, "updatedNumberScheduled": 1,
                      "numberAvailable": 1, "numberUnavailable": 1}
    assert wait is None


def test_revisions_and_daemon_pods():
    d = ds()
    owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {
        "name": "agent", "namespace": "ns", "uid": "uid-ds", "annotations": {"kubernetes.io/change-cause": "x"}}}
    rev = render_revision(owner, d, 3, None)
    assert rev["data"] == {"spec": {"template": {**d.template, "$patch": "replace"}}} and rev["revision"] == 3
    h = rev["metadata"]["labels"]["controller-revision-hash"]
    assert rev["metadata"]["name"] == f"agent-{h}" and rev["metadata"]["annotations"] == owner["metadata"]["annotations"]
    old = dict(render_revision(owner, ds(spec={"containers": [{"name": "c", "image": "old"}]}), 1, None))
    cur, number, others = plan_history(d, [old, dict(rev, revision=1)])
    assert cur["revision"] == 1 and number == 2 and others == [old]       # current renumbered above the old
    assert plan_history_cleanup(ds(history_limit=0), [old], {h}) == [old["metadata"]["name"]]
    assert plan_history_cleanup(ds(history_limit=0), [old], {old["metadata"]["labels"]["controller-revision-hash"]}) == []
    p = render_daemon_pod(owner, ds(template_generation="4"), "node2", h)
    assert p["spec"]["nodeName"] == "node2" and p["metadata"]["generateName"] == "agent-"
    assert p["metadata"]["labels"] == {"app": "agent", "controller-revision-hash": h, "pod-template-generation": "4"}
    terms = p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node2"]}]}]
    assert p["metadata"]["ownerReferences"][0]["controller"] is True


# --- garbage collection and deletion ----------------------------------------------------------------

def test_garbage_collector_decisions():
    a = {"uid": "a", "blockOwnerDeletion": True}
    b = {"uid": "b"}
    assert plan_dependent([], {}, False) == ("keep", None)
    assert plan_dependent([a], {"a": PRESENT}, False) == ("keep", None)
    assert plan_dependent([a], {"a": ABSENT}, False) == ("delete", None)
    assert plan_dependent([a, b], {"a": ABSENT, "b": PRESENT}, False) == ("update", [b])
    assert plan_dependent([a], {"a": WAITING}, True) == ("delete", "Foreground")
    assert plan_dependent([a], {"a": WAITING}, False) == ("delete", None)
    # a reference that does not block a foreground deletion keeps the dependent until the owner goes
    assert plan_dependent([b], {"b": WAITING}, False) == ("keep", None)


def test_deletion_graceful_pods_finalizers_and_propagation():
    pods, rs = PODS, REPLICASETS
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    scheduled = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5}}
    marked = plan_deletion(pods, scheduled, None, None, now)
    assert marked["metadata"]["deletionTimestamp"] == "2026-01-01T00:00:05Z"
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 5
    assert plan_deletion(pods, marked, None, None, now) is marked              # under way already
    assert plan_deletion(pods, marked, 0, None, now) is None                   # the kubelet's final delete
    assert plan_deletion(pods, {"metadata": {"name": "p"}, "spec": {}}, None, None, now) is None
    finished = dict(scheduled, status={"phase": "Succeeded"})
    assert plan_deletion(pods, finished, None, None, now) is None
    owner = {"metadata": {"name": "r"}, "spec": {}}
    assert plan_deletion(rs, owner, None, "Background", now) is None
    fg = plan_deletion(rs, owner, None, "Foreground", now)
    assert fg["metadata"]["finalizers"] == ["foregroundDeletion"] and fg["metadata"]["deletionGracePeriodSeconds"] == 0
    assert plan_deletion(rs, fg, None, "Foreground", now) is fg
    assert plan_deletion(rs, owner, None, "Orphan", now)["metadata"]["finalizers"] == ["orphan"]
    held = {"metadata": {"name": "r", "finalizers": ["example.com/hold"]}}
    assert plan_deletion(rs, held, None, None, now)["metadata"]["deletionTimestamp"] == "2026-01-01T00:00:00Z"
