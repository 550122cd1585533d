"""The DaemonSet controller: one pod of the template on every eligible Node.

As kube-controller-manager's (pkg/controller/daemon): a Node is eligible when it matches the
template's nodeName, nodeSelector and required node affinity and the pod tolerates its
NoSchedule and NoExecute taints; a pod keeps running on a Node whose untolerated taints are only
NoSchedule. Pods get the DaemonSet tolerations (not-ready and unreachable NoExecute; disk, memory
and pid pressure, unschedulable, and for hostNetwork network-unavailable, NoSchedule), so a
cordoned Node keeps its daemon pods and `kubectl drain --ignore-daemonsets` leaves them. A Node
that is not Ready counts as tainted node.kubernetes.io/not-ready (NoSchedule and NoExecute), as
the node lifecycle controller would taint it: only DaemonSets tolerating that run there.

Pods are bound to their Node at creation (spec.nodeName) and carry the node affinity the real
controller gives them; the scheduler leaves bound pods alone. Each template is recorded in a
ControllerRevision (<ds>-<hash>, data: the template as a strategic merge patch that replaces it,
which is what `kubectl rollout undo ds/...` applies) and its pods are labelled
controller-revision-hash and pod-template-generation. RollingUpdate replaces out-of-date pods
node by node, at most maxUnavailable at once (or, with maxSurge, starts the new pod first).
Status carries the counts `kubectl rollout status ds/...` reads. The plans are pure.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

from .. import admission, deletion
from ..admission.workloads import TEMPLATE_GENERATION
from ..resources import DAEMONSETS, NODES, PODS, REVISIONS
from .deployment import scaled_value
from .owners import OwnerIndex, controller_ref
from .podtemplate import PodView, compute_hash, parse_pod, render_pod
from .scheduler import NodeView, parse_node, tolerates, track_node
from .workload import WorkloadReconciler

log = logging.getLogger("kubeweft.lab.controllers.daemonset")

COMPONENT = "daemonset-controller"
HASH_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"
NOT_READY = "node.kubernetes.io/not-ready"

DAEMON_TOLERATIONS = (
    (NOT_READY, "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"), ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"), ("node.kubernetes.io/unschedulable", "NoSchedule"),
)
HOST_NETWORK_TOLERATION = ("node.kubernetes.io/network-unavailable", "NoSchedule")


# --- which nodes --------------------------------------------------------------------------------------

def daemon_tolerations(spec: dict) -> list[dict]:
    """The template's tolerations plus the DaemonSet ones (AddOrUpdateDaemonPodTolerations)."""
    out = [dict(t) for t in spec.get("tolerations") or []]
    wanted = list(DAEMON_TOLERATIONS) + ([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])
    for key, effect in wanted:
        if not any(t.get("key") == key and t.get("effect") == effect and t.get("operator") == "Exists"
                   for t in out):
            out.append({"key": key, "operator": "Exists", "effect": effect})
    return out


def node_taints(node: NodeView) -> list[tuple[str, str, str]]:
    """The Node's taints, with not-ready ones for a Node that is not Ready and has none yet."""
    taints = list(node.taints)
    if not node.ready and not any(t[0] == NOT_READY for t in taints):
        taints += [(NOT_READY, "", "NoSchedule"), (NOT_READY, "", "NoExecute")]
    return taints


def _requirement_matches(req: dict, value: str | None) -> bool:
    op, values = req.get("operator"), req.get("values") or []
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_matches(spec: dict, node: NodeView) -> bool:
    """The pod's nodeSelector and required node affinity (terms ORed, requirements ANDed)."""
    labels = dict(node.labels)
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if not terms:
        return True
    fields = {"metadata.name": node.name}
    return any(
        (term.get("matchExpressions") or term.get("matchFields"))
        and all(_requirement_matches(r, labels.get(r.get("key"))) for r in term.get("matchExpressions") or [])
        and all(_requirement_matches(r, fields.get(r.get("key"))) for r in term.get("matchFields") or [])
        for term in terms)


def should_run(spec: dict, node: NodeView) -> tuple[bool, bool]:
    """(should a daemon pod start on `node`, may one already there keep running)."""
    if spec.get("nodeName") and spec["nodeName"] != node.name:
        return False, False
    if not node_matches(spec, node):
        return False, False
    tolerations = daemon_tolerations(spec)
    untolerated = [t for t in node_taints(node)
                   if t[2] in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t)]
    if untolerated:
        return False, not any(t[2] == "NoExecute" for t in untolerated)
    return True, True


# --- the DaemonSet ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DaemonSetView:
    namespace: str
    name: str
    uid: str
    generation: int = 1
    template_generation: str = "1"
    rolling: bool = True
    max_unavailable: object = 1
    max_surge: object = 0
    min_ready: int = 0
    history_limit: int = 10
    deleting: bool = False
    template: dict = field(default_factory=dict, compare=False)

    @property
    def pod_spec(self) -> dict:
        return self.template.get("spec") or {}


def parse_daemonset(obj: dict) -> DaemonSetView:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    strategy = spec.get("updateStrategy") or {}
    ru = strategy.get("rollingUpdate") or {}
    return DaemonSetView(meta.get("namespace", ""), meta["name"], meta.get("uid", ""), meta.get("generation", 1),
                         (meta.get("annotations") or {}).get(TEMPLATE_GENERATION, ""),
                         strategy.get("type", "RollingUpdate") == "RollingUpdate",
                         ru.get("maxUnavailable", 1), ru.get("maxSurge", 0),
                         int(spec.get("minReadySeconds") or 0), int(spec.get("revisionHistoryLimit", 10)),
                         bool(meta.get("deletionTimestamp")), spec.get("template") or {})


def is_updated(pod: PodView, ds: DaemonSetView, rev_hash: str) -> bool:
    """util.IsPodUpdated: its revision hash, or its template generation, is the current one."""
    return ((bool(rev_hash) and pod.label(HASH_LABEL) == rev_hash)
            or (bool(ds.template_generation) and pod.label(GENERATION_LABEL) == ds.template_generation))


def group_by_node(pods: list[PodView]) -> dict[str, list[PodView]]:
    """Daemon pods by Node, without the finished ones already being deleted."""
    out: dict[str, list[PodView]] = {}
    for p in sorted(pods, key=lambda p: (not p.node, p.created, p.name)):
        if p.deleting and p.phase in ("Succeeded", "Failed"):
            continue
        out.setdefault(p.node, []).append(p)
    return out


def plan_manage(ds: DaemonSetView, nodes: list[NodeView], by_node: dict[str, list[PodView]],
                rev_hash: str) -> tuple[list[str], list[str]]:
    """(Nodes that need a daemon pod, pods to delete): failed pods, pods on Nodes that should not
    run them, all but the oldest where there are several (with surge: the oldest updated one and
    the oldest other one stay)."""
    create, delete = [], []
    surge = scaled_value(ds.max_surge, 1, True) > 0 if ds.rolling else False
    for node in nodes:
        run, keep = should_run(ds.pod_spec, node)
        pods = by_node.get(node.name, [])
        if run and not pods:
            create.append(node.name)
        elif keep:
            running = []
            for p in pods:
                if p.deleting:
                    continue
                if p.phase in ("Failed", "Succeeded"):
                    delete.append(p.name)
                    continue
                running.append(p)
            if len(running) > 1 and not surge:
                delete += [p.name for p in running[1:]]
            elif len(running) > 1:
                seen_new = seen_old = False
                for p in running:
                    if is_updated(p, ds, rev_hash) and not seen_new:
                        seen_new = True
                    elif not is_updated(p, ds, rev_hash) and not seen_old:
                        seen_old = True
                    else:
                        delete.append(p.name)
        else:
            delete += [p.name for p in pods if not p.deleting]
    return create, delete


def _updated_and_old(pods: list[PodView], ds: DaemonSetView, rev_hash: str
                     ) -> tuple[PodView | None, PodView | None, bool]:
    """findUpdatedPodsOnNode: (the updated pod, the out-of-date pod, whether at most one each)."""
    new = old = None
    for p in pods:
        if p.deleting:
            continue
        if is_updated(p, ds, rev_hash):
            if new is not None:
                return None, None, False
            new = p
        else:
            if old is not None:
                return None, None, False
            old = p
    return new, old, True


def plan_rolling_update(ds: DaemonSetView, nodes: list[NodeView], by_node: dict[str, list[PodView]],
                        rev_hash: str, now: float) -> tuple[list[str], list[str]]:
    """(out-of-date pods to delete, Nodes to surge a new pod onto) for this pass."""
    wanted = [n.name for n in nodes if should_run(ds.pod_spec, n)[0]]
    desired = len(wanted)
    max_unavailable = scaled_value(ds.max_unavailable, desired, True)
    max_surge = scaled_value(ds.max_surge, desired, True)
    if desired > 0 and max_unavailable == 0 and max_surge == 0:
        max_unavailable = 1
    names = list(dict.fromkeys(wanted + [n for n in by_node if n]))
    # per node: (updated pod, out-of-date pod, whether there is at most one of each)
    pairs = [(name, *_updated_and_old(by_node.get(name, []), ds, rev_hash)) for name in names]
    if max_surge == 0:
        unavailable, replace, candidates = 0, [], []
        for _, new, old, ok in pairs:
            if not ok or (old is None) == (new is None):
                unavailable += 1                     # nothing there, or two: the manage pass sorts it
            elif new is not None:
                if not new.available(ds.min_ready, now):
                    unavailable += 1
            elif not old.available(ds.min_ready, now):
                replace.append(old.name)
                unavailable += 1
            elif unavailable < max_unavailable:
                candidates.append(old.name)
        room = max(0, min(max_unavailable - unavailable, len(candidates)))
        return replace + candidates[:room], []
    surged, delete, create = 0, [], []
    for name, new, old, ok in pairs:
        if not ok:
            surged += 1
        elif old is None:
            continue
        elif new is None:
            if not old.available(ds.min_ready, now):
                create.append(name)
            elif surged < max_surge:
                create.append(name)
                surged += 1
        elif not new.available(ds.min_ready, now):
            surged += 1
        else:
            delete.append(old.name)
    return delete, create


def plan_ds_status(ds: DaemonSetView, nodes: list[NodeView], by_node: dict[str, list[PodView]],
                   rev_hash: str, now: float) -> tuple[dict, float | None]:
    """The status `kubectl rollout status ds/...` and `get ds` read, and in how many seconds a
    ready pod becomes available (minReadySeconds)."""
    desired = current = ready = available = updated = misscheduled = 0
    waits = []
    for node in nodes:
        run, _ = should_run(ds.pod_spec, node)
        pods = by_node.get(node.name, [])
        if not run:
            misscheduled += bool(pods)
            continue
        desired += 1
        if not pods:
            continue
        current += 1
        pod = pods[0]
        if pod.ready:
            ready += 1
            if pod.available(ds.min_ready, now):
                available += 1
            elif pod.ready_since is not None:
                waits.append(pod.ready_since + ds.min_ready - now)
        if is_updated(pod, ds, rev_hash):
            updated += 1
    status: dict = {"currentNumberScheduled": current, "numberMisscheduled": misscheduled,
                    "desiredNumberScheduled": desired, "numberReady": ready,
                    "observedGeneration": ds.generation}
    for name, n in (("updatedNumberScheduled", updated), ("numberAvailable", available),
                    ("numberUnavailable", desired - available)):
        if n:
            status[name] = n
    return status, (max(0.0, min(waits)) + 0.1 if waits else None)


# --- history --------------------------------------------------------------------------------------------

def render_revision_data(template: dict) -> dict:
    """getPatch: the DaemonSet's template as a strategic merge patch that replaces it."""
    return {"spec": {"template": {**copy.deepcopy(template), "$patch": "replace"}}}


def plan_history(ds: DaemonSetView, revisions: list[dict]) -> tuple[dict | None, int, list[dict]]:
    """(the revision holding the current template or None, the revision number it must have,
    the other revisions)."""
    data = render_revision_data(ds.template)
    current = [r for r in revisions if r.get("data") == data]
    old = [r for r in revisions if r.get("data") != data]
    number = max((int(r.get("revision", 0)) for r in old), default=0) + 1
    cur = max(current, key=lambda r: int(r.get("revision", 0)), default=None)
    return cur, number, old + [r for r in current if r is not cur]


def render_revision(owner: dict, ds: DaemonSetView, number: int, collision: int | None) -> dict:
    rev_hash = compute_hash(ds.template, collision)
    labels = {**((ds.template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: rev_hash}
    meta = {"name": f"{ds.name[:223]}-{rev_hash}", "namespace": ds.namespace, "labels": labels,
            "ownerReferences": [controller_ref(owner)]}
    if owner["metadata"].get("annotations"):
        meta["annotations"] = dict(owner["metadata"]["annotations"])
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": meta,
            "data": render_revision_data(ds.template), "revision": number}


def plan_history_cleanup(ds: DaemonSetView, old: list[dict], live_hashes: set[str]) -> list[str]:
    """Old revisions beyond revisionHistoryLimit, lowest first, that no pod still runs."""
    extra = len(old) - ds.history_limit
    out = []
    for r in sorted(old, key=lambda r: int(r.get("revision", 0))):
        if extra <= 0:
            break
        if (r["metadata"].get("labels") or {}).get(HASH_LABEL) in live_hashes:
            continue
        out.append(r["metadata"]["name"])
        extra -= 1
    return out


def render_daemon_pod(owner: dict, ds: DaemonSetView, node: str, rev_hash: str) -> dict:
    """A daemon pod for `node`: bound to it, with its node affinity and the daemon tolerations."""
    template = copy.deepcopy(ds.template)
    spec = template.setdefault("spec", {})
    spec["tolerations"] = daemon_tolerations(spec)
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    affinity = spec.setdefault("affinity", {})
    required = affinity.setdefault("nodeAffinity", {}).setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {})
    required["nodeSelectorTerms"] = [term]
    labels = {HASH_LABEL: rev_hash}
    if ds.template_generation:
        labels[GENERATION_LABEL] = ds.template_generation
    return render_pod(owner, template, labels, node=node)


# --- the controller ---------------------------------------------------------------------------------------

class DaemonSetController(WorkloadReconciler):
    name = COMPONENT

    kind = DAEMONSETS

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        self.pods = OwnerIndex()
        self.revisions = OwnerIndex()
        self.nodes: dict[str, NodeView] = {}

    def prime(self) -> None:
        for n in self.store.list(NODES)[0]:
            self.nodes[n["metadata"]["name"]] = parse_node(n)
        for pod in self.store.list(PODS)[0]:
            self.pods.put(pod)
        for rev in self.store.list(REVISIONS)[0]:
            self.revisions.put(rev)
        self.prime_owners()

    def on_event(self, ev) -> None:
        if ev.resource is DAEMONSETS:
            self.track_owner(ev)
        elif ev.resource is PODS:
            self.track_owned(ev, self.pods)
        elif ev.resource is REVISIONS:
            self.track_owned(ev, self.revisions)
        elif ev.resource is NODES and track_node(self.nodes, ev):
            for key in self.owners.values():
                self.mark(key)

    def sync(self, key: tuple[str, str]) -> None:
        obj = self.store.try_get(DAEMONSETS, *key)
        if obj is None:
            return
        ds = parse_daemonset(obj)
        if ds.deleting:
            return
        self.claim(obj, PODS, self.pods)
        self.claim(obj, REVISIONS, self.revisions)
        rev_hash, old = self._history(obj, ds)
        if not rev_hash:
            return                   # a hash collision was counted: the status event brings a new pass
        nodes = sorted(self.nodes.values(), key=lambda n: n.name)
        by_node = group_by_node([parse_pod(p) for p in self.pods.of(ds.uid)])
        create, delete = plan_manage(ds, nodes, by_node, rev_hash)
        if not (create or delete) and ds.rolling:
            delete, create = plan_rolling_update(ds, nodes, by_node, rev_hash, time.time())
        for name in delete:
            self.delete_pod(obj, name)
        for node in create:
            self.create_pod(obj, render_daemon_pod(obj, ds, node, rev_hash))
        live = {p.label(HASH_LABEL) for p in map(parse_pod, self.pods.of(ds.uid))}
        for name in plan_history_cleanup(ds, old, live):
            rev = self.store.try_get(REVISIONS, ds.namespace, name)
            if rev is not None:
                deletion.delete_object(self.store, self.cfg, REVISIONS, rev)
                self.writes += 1
        by_node = group_by_node([parse_pod(p) for p in self.pods.of(ds.uid)])
        status, wait = plan_ds_status(ds, nodes, by_node, rev_hash, time.time())
        collision = (obj.get("status") or {}).get("collisionCount")
        if collision is not None:
            status["collisionCount"] = collision
        cur = self.store.get(DAEMONSETS, *key)
        if status != cur.get("status"):
            self.store.update(DAEMONSETS, {"metadata": {"namespace": key[0], "name": key[1]}, "status": status},
                              subresource="status")
            self.writes += 1
        if wait is not None:
            self.mark_later(key, wait)

    def _history(self, obj: dict, ds: DaemonSetView) -> tuple[str, list[dict]]:
        """The current revision's hash (made or renumbered as needed) and the old revisions;
        no hash when the name it would take is another template's (a collision)."""
        cur, number, old = plan_history(ds, self.revisions.of(ds.uid))
        if cur is None:
            collision = (obj.get("status") or {}).get("collisionCount")
            rev = render_revision(obj, ds, number, collision)
            if self.store.try_get(REVISIONS, ds.namespace, rev["metadata"]["name"]) is not None:
                # another template already has this name: count the collision, hash again next pass
                self.store.update(DAEMONSETS, {"metadata": {"namespace": ds.namespace, "name": ds.name},
                                               "status": dict(obj.get("status") or {},
                                                              collisionCount=(collision or 0) + 1)},
                                  subresource="status")
                self.writes += 1
                return "", old
            cur = self.store.create(REVISIONS, admission.admit(self.store, self.cfg, REVISIONS, "CREATE", rev, None))
            self.writes += 1
        elif int(cur.get("revision", 0)) < number:
            renumbered = copy.deepcopy(cur)
            renumbered["revision"] = number
            cur = self.store.update(REVISIONS, renumbered)
            self.writes += 1
        return (cur["metadata"].get("labels") or {}).get(HASH_LABEL, ""), old
