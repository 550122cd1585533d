"""The Deployment controller: Deployment -> ReplicaSets, with rolling updates.

As kube-controller-manager's (pkg/controller/deployment): the ReplicaSet whose template equals
the Deployment's (ignoring the pod-template-hash label) is the new one, named
<deployment>-<hash of the template>; every other owned ReplicaSet is old. A RollingUpdate
scales the new one up as far as maxSurge allows, then the old ones down as far as maxUnavailable
allows, counting only available pods, one step a pass (each step's ReplicaSet and pod events
bring the next pass); Recreate scales the old ones to 0 and waits for their pods to be gone.
A change of spec.replicas alone scales the ReplicaSets proportionally; a paused Deployment only
scales. Revisions live in the ReplicaSets' deployment.kubernetes.io/revision annotation (what
`kubectl rollout history|undo` read), old ReplicaSets beyond revisionHistoryLimit are deleted,
and status carries the replica counts and the Available and Progressing conditions that
`kubectl rollout status` waits on (ProgressDeadlineExceeded after progressDeadlineSeconds
without progress).

Everything deciding (`plan_*`, `calculate_status`, `plan_rollout_status`) is pure, over frozen
views of the Deployment and its ReplicaSets; the controller class does the writes.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

from .. import admission, deletion
from ..admission.workloads import drop_nulls
from ..resources import DEPLOYMENTS, PODS, REPLICASETS
from ..store import now_rfc3339
from .owners import OwnerIndex, controller_ref, controller_uid, key_of
from .podtemplate import compute_hash, epoch
from .workload import WorkloadReconciler

log = logging.getLogger("kubeweft.lab.controllers.deployment")

COMPONENT = "deployment-controller"

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# annotations a Deployment does not hand down to its ReplicaSets
SKIP_COPY = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                       DESIRED, MAX_REPLICAS, "deprecated.deployment.rollback.to"})
MAX_HISTORY_CHARS = 2000

# Progressing reasons, as kubectl and users read them
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"


# --- frozen views -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeploymentView:
    namespace: str
    name: str
    uid: str
    generation: int
    replicas: int
    recreate: bool
    max_surge: object = "25%"
    max_unavailable: object = "25%"
    min_ready: int = 0
    history_limit: int | None = 10
    progress_deadline: int | None = 600
    paused: bool = False
    deleting: bool = False
    template: dict = field(default_factory=dict, compare=False)
    annotations: dict = field(default_factory=dict, compare=False)
    status: dict = field(default_factory=dict, compare=False)

    @property
    def surge(self) -> int:
        """MaxSurge: the resolved number of pods above replicas (0 with Recreate)."""
        return 0 if self.recreate else resolve_fenceposts(self.max_surge, self.max_unavailable, self.replicas)[0]

    @property
    def unavailable(self) -> int:
        """MaxUnavailable: how many of replicas may be unavailable (0 with Recreate)."""
        if self.recreate or self.replicas == 0:
            return 0
        return min(resolve_fenceposts(self.max_surge, self.max_unavailable, self.replicas)[1], self.replicas)


@dataclass(frozen=True)
class RSView:
    name: str
    uid: str = ""
    created: float = 0.0
    replicas: int = 0                   # spec
    status_replicas: int = 0
    ready: int = 0
    available: int = 0
    revision: int = 0
    generation: int = 1
    observed: int = 0
    deleting: bool = False
    template: dict = field(default_factory=dict, compare=False)
    annotations: dict = field(default_factory=dict, compare=False)


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse_deployment(obj: dict) -> DeploymentView:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    strategy = spec.get("strategy") or {}
    ru = strategy.get("rollingUpdate") or {}
    return DeploymentView(meta.get("namespace", ""), meta["name"], meta.get("uid", ""),
                          meta.get("generation", 1), _int(spec.get("replicas"), 1),
                          strategy.get("type") == "Recreate", ru.get("maxSurge", "25%"),
                          ru.get("maxUnavailable", "25%"), _int(spec.get("minReadySeconds")),
                          spec.get("revisionHistoryLimit"), spec.get("progressDeadlineSeconds"),
                          bool(spec.get("paused")), bool(meta.get("deletionTimestamp")),
                          spec.get("template") or {}, dict(meta.get("annotations") or {}),
                          dict(obj.get("status") or {}))


def parse_rs(obj: dict) -> RSView:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    ann = meta.get("annotations") or {}
    return RSView(meta["name"], meta.get("uid", ""), epoch(meta.get("creationTimestamp")) or 0.0,
                  _int(spec.get("replicas"), 1), _int(status.get("replicas")),
                  _int(status.get("readyReplicas")), _int(status.get("availableReplicas")),
                  _int(ann.get(REVISION)), meta.get("generation", 1), _int(status.get("observedGeneration")),
                  bool(meta.get("deletionTimestamp")), spec.get("template") or {}, dict(ann))


# --- arithmetic ---------------------------------------------------------------------------------------

def scaled_value(value, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as it is, "25%" of total rounded."""
    if isinstance(value, str) and value.endswith("%"):
        exact = _int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return _int(value)


def resolve_fenceposts(max_surge, max_unavailable, desired: int) -> tuple[int, int]:
    """(surge, unavailable) in pods; never both 0 (then unavailable is 1)."""
    surge = scaled_value(max_surge if max_surge is not None else 0, desired, True)
    unavailable = scaled_value(max_unavailable if max_unavailable is not None else 0, desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _round_half_away(x: float) -> int:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


# --- which ReplicaSet is new --------------------------------------------------------------------------

def _comparable(template: dict) -> dict:
    """A template as apiequality.Semantic compares it: without the hash label, nulls and empties."""
    def clean(v):
        if isinstance(v, dict):
            out = {k: clean(x) for k, x in v.items()}
            return {k: x for k, x in out.items() if x not in (None, {}, [], "")}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    t = copy.deepcopy(template)
    ((t.get("metadata") or {}).get("labels") or {}).pop(HASH_LABEL, None)
    return clean(t)


def equal_ignoring_hash(a: dict, b: dict) -> bool:
    return _comparable(a) == _comparable(b)


def split_replicasets(d: DeploymentView, rss: list[RSView]) -> tuple[RSView | None, list[RSView]]:
    """(the new ReplicaSet or None, the old ones): the oldest one with the Deployment's template
    is the new one (FindNewReplicaSet)."""
    new = next((r for r in sorted(rss, key=lambda r: (r.created, r.name))
                if equal_ignoring_hash(r.template, d.template)), None)
    return new, [r for r in rss if r is not new]


# --- scaling plans --------------------------------------------------------------------------------------

def new_rs_replicas(d: DeploymentView, all_rss: list[RSView], new: RSView | None) -> int:
    """NewRSNewReplicas: what the new ReplicaSet may grow to now."""
    have = new.replicas if new else 0
    if d.recreate:
        return d.replicas
    current = sum(r.replicas for r in all_rss)
    max_total = d.replicas + d.surge
    if current >= max_total:
        return have
    return have + min(max_total - current, d.replicas - have)


def plan_rolling_step(d: DeploymentView, new: RSView, olds: list[RSView]) -> dict[str, int]:
    """One step of a rolling update: {ReplicaSet name: new spec.replicas}. The new ReplicaSet
    grows first (reconcileNewReplicaSet); when it cannot, the old ones shrink, unhealthy ones
    first, never below replicas - maxUnavailable available pods (reconcileOldReplicaSets)."""
    if new.replicas > d.replicas:
        return {new.name: d.replicas}
    if new.replicas < d.replicas:
        grown = new_rs_replicas(d, [*olds, new], new)
        if grown != new.replicas:
            return {new.name: grown}
    old_pods = sum(r.replicas for r in olds)
    if old_pods == 0:
        return {}
    min_available = d.replicas - d.unavailable
    max_scaled_down = old_pods + new.replicas - min_available - (new.replicas - new.available)
    if max_scaled_down <= 0:
        return {}
    out: dict[str, int] = {}
    by_age = sorted(olds, key=lambda r: (r.created, r.name))
    done = 0
    for r in by_age:                                     # cleanupUnhealthyReplicas
        if done >= max_scaled_down:
            break
        if r.replicas == 0 or r.replicas == r.available:
            continue
        n = min(max_scaled_down - done, r.replicas - r.available)
        out[r.name] = r.replicas - n
        done += n
    available = sum(r.available for r in olds) + new.available
    if available > min_available:                        # scaleDownOldReplicaSetsForRollingUpdate
        todo, done = available - min_available, 0
        for r in by_age:
            have = out.get(r.name, r.replicas)
            if done >= todo:
                break
            if have == 0:
                continue
            n = min(have, todo - done)
            out[r.name] = have - n
            done += n
    return {name: n for name, n in out.items() if n != next(r.replicas for r in olds if r.name == name)}


def is_scaling_event(d: DeploymentView, rss: list[RSView]) -> bool:
    """Only spec.replicas changed: an active ReplicaSet was sized for another replica count."""
    new, _ = split_replicasets(d, rss)
    if new is None:
        return False
    for r in rss:
        if r.replicas > 0 and DESIRED in r.annotations and _int(r.annotations[DESIRED], -1) != d.replicas:
            return True
    return False


def _fraction(r: RSView, d: DeploymentView) -> int:
    if d.replicas == 0:
        return -r.replicas
    before = _int(r.annotations.get(MAX_REPLICAS)) or _int(d.status.get("replicas"))
    if before == 0:
        return 0
    return _round_half_away(r.replicas * (d.replicas + d.surge) / before) - r.replicas


def plan_proportional_scale(d: DeploymentView, new: RSView | None, olds: list[RSView]) -> dict[str, int]:
    """The deployment controller's scale(): one active ReplicaSet takes all replicas; a saturated
    new one leaves the old ones at 0; otherwise a change is spread proportionally."""
    everyone = ([new] if new else []) + olds
    active = [r for r in everyone if r.replicas > 0]
    target = None
    if len(active) == 1:
        target = active[0]
    elif not active and everyone:
        target = new or max(olds, key=lambda r: (r.created, r.name))
    if target is not None:
        return {target.name: d.replicas} if target.replicas != d.replicas else {}
    if new is not None and new.replicas == d.replicas and new.available == d.replicas \
            and _int(new.annotations.get(DESIRED), -1) == d.replicas:
        return {r.name: 0 for r in olds if r.replicas > 0}
    if d.recreate:
        return {}
    total = sum(r.replicas for r in active)
    allowed = d.replicas + d.surge if d.replicas > 0 else 0
    to_add = allowed - total
    if to_add > 0:
        active.sort(key=lambda r: (-r.replicas, -r.created, r.name))
    elif to_add < 0:
        active.sort(key=lambda r: (-r.replicas, r.created, r.name))
    sizes, added = {}, 0
    for r in active:
        share = 0
        if to_add != 0 and to_add != added:
            frac, left = _fraction(r, d), to_add - added
            share = min(frac, left) if to_add > 0 else max(frac, left)
        sizes[r.name] = r.replicas + share
        added += share
    if active and to_add != 0:
        first = active[0].name
        sizes[first] = max(0, sizes[first] + to_add - added)
    return {r.name: sizes[r.name] for r in active if sizes[r.name] != r.replicas}


def plan_recreate_step(d: DeploymentView, new: RSView | None, olds: list[RSView],
                       old_pods_left: bool) -> tuple[dict[str, int], bool]:
    """({name: replicas}, whether the new ReplicaSet must exist now): old ones to 0 first, then,
    once none of their pods is left, the new one to replicas."""
    down = {r.name: 0 for r in olds if r.replicas > 0}
    if down:
        return down, False
    if old_pods_left or any(r.status_replicas for r in olds):
        return {}, False
    if new is None:
        return {}, True
    return ({new.name: d.replicas} if new.replicas != d.replicas else {}), True


def plan_cleanup(d: DeploymentView, olds: list[RSView]) -> list[str]:
    """Old ReplicaSets beyond revisionHistoryLimit, oldest revisions first, that are empty."""
    if d.history_limit is None:
        return []
    alive = [r for r in olds if not r.deleting]
    extra = len(alive) - d.history_limit
    if extra <= 0:
        return []
    out = []
    for r in sorted(alive, key=lambda r: (r.revision, r.created, r.name))[:extra]:
        if r.status_replicas == 0 and r.replicas == 0 and r.generation <= r.observed:
            out.append(r.name)
    return out


# --- revisions and annotations --------------------------------------------------------------------------

def plan_rs_annotations(d: DeploymentView, rs_annotations: dict, new_revision: int, exists: bool) -> dict:
    """SetNewReplicaSetAnnotations: the new ReplicaSet's annotations: the Deployment's (but
    SKIP_COPY), its revision raised to new_revision (the revisions it had kept in
    revision-history: a rollback), and for a ReplicaSet being made the replica annotations."""
    out = dict(rs_annotations)
    for k, v in d.annotations.items():
        if k not in SKIP_COPY:
            out[k] = v
    had = out.get(REVISION)
    if _int(had) < new_revision:
        out[REVISION] = str(new_revision)
        if had:
            history = [h for h in out.get(REVISION_HISTORY, "").split(",") if h] + [had]
            while len(",".join(history)) > MAX_HISTORY_CHARS and len(history) > 1:
                history.pop(0)
            out[REVISION_HISTORY] = ",".join(history)
    if not exists:
        out[DESIRED] = str(d.replicas)
        out[MAX_REPLICAS] = str(d.replicas + d.surge)
    return out


def render_new_rs(owner: dict, d: DeploymentView, olds: list[RSView], collision: int | None) -> dict:
    """The new ReplicaSet for the Deployment's template (getNewReplicaSet)."""
    template = copy.deepcopy(d.template)
    rs_hash = compute_hash(drop_nulls(template), collision)
    labels = {**((template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: rs_hash}
    template.setdefault("metadata", {})["labels"] = labels
    selector = copy.deepcopy((owner.get("spec") or {}).get("selector") or {})
    selector.setdefault("matchLabels", {})[HASH_LABEL] = rs_hash
    revision = max((r.revision for r in olds), default=0) + 1
    probe = RSView(f"{d.name}-{rs_hash}")
    replicas = new_rs_replicas(d, [*olds, probe], probe)
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{d.name}-{rs_hash}", "namespace": d.namespace, "labels": dict(labels),
                         "annotations": plan_rs_annotations(d, {}, revision, exists=False),
                         "ownerReferences": [controller_ref(owner)]},
            "spec": {"replicas": replicas, "minReadySeconds": d.min_ready, "selector": selector,
                     "template": template}}


# --- status ------------------------------------------------------------------------------------------

def condition(type_: str, status: str, reason: str, message: str, now: str) -> dict:
    return {"type": type_, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message}


def set_condition(status: dict, cond: dict) -> None:
    """SetDeploymentCondition: same status and reason keeps the old one; same status keeps its
    lastTransitionTime."""
    conds = list(status.get("conditions") or [])
    cur = next((c for c in conds if c.get("type") == cond["type"]), None)
    if cur is not None and cur.get("status") == cond["status"] and cur.get("reason") == cond["reason"]:
        return
    if cur is not None and cur.get("status") == cond["status"]:
        cond = dict(cond, lastTransitionTime=cur.get("lastTransitionTime"))
    status["conditions"] = [c for c in conds if c.get("type") != cond["type"]] + [cond]


def get_condition(status: dict, type_: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def calculate_status(d: DeploymentView, rss: list[RSView], new: RSView | None, base: dict,
                     now: str) -> dict:
    """Replica counts and the Available condition; other conditions carried over from `base`."""
    available = sum(r.available for r in rss)
    counts = {"observedGeneration": d.generation, "replicas": sum(r.status_replicas for r in rss),
              "updatedReplicas": new.status_replicas if new else 0,
              "readyReplicas": sum(r.ready for r in rss), "availableReplicas": available,
              "unavailableReplicas": max(0, sum(r.replicas for r in rss) - available)}
    status: dict = {k: v for k, v in counts.items() if v}
    if base.get("conditions"):
        status["conditions"] = [dict(c) for c in base["conditions"]]
    if base.get("collisionCount") is not None:
        status["collisionCount"] = base["collisionCount"]
    if available >= d.replicas - d.unavailable:
        set_condition(status, condition("Available", "True", "MinimumReplicasAvailable",
                                        "Deployment has minimum availability.", now))
    else:
        set_condition(status, condition("Available", "False", "MinimumReplicasUnavailable",
                                        "Deployment does not have minimum availability.", now))
    return status


def is_complete(d: DeploymentView, status: dict) -> bool:
    return (status.get("updatedReplicas", 0) == d.replicas and status.get("replicas", 0) == d.replicas
            and status.get("availableReplicas", 0) == d.replicas
            and status.get("observedGeneration", 0) >= d.generation)


def _progressing(d: DeploymentView, status: dict) -> bool:
    old = d.status
    return (status.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
            or status.get("replicas", 0) - status.get("updatedReplicas", 0)
            < old.get("replicas", 0) - old.get("updatedReplicas", 0)
            or status.get("readyReplicas", 0) > old.get("readyReplicas", 0)
            or status.get("availableReplicas", 0) > old.get("availableReplicas", 0))


def plan_rollout_status(d: DeploymentView, rss: list[RSView], new: RSView | None, base: dict,
                        now: float) -> tuple[dict, float | None]:
    """syncRolloutStatus: the status with the Progressing condition moved on (progress made,
    complete, or timed out), and in how many seconds to look again for a timeout."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    status = calculate_status(d, rss, new, base, stamp)
    if d.progress_deadline is None:
        status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "Progressing"]
    current = get_condition(base, "Progressing")
    done = (status.get("replicas", 0) == status.get("updatedReplicas", 0) and current is not None
            and current.get("reason") == NEW_RS_AVAILABLE)
    what = f'ReplicaSet "{new.name}"' if new else f'Deployment "{d.name}"'
    if d.progress_deadline is not None and not done:
        if is_complete(d, status):
            set_condition(status, condition("Progressing", "True", NEW_RS_AVAILABLE,
                                            f"{what} has successfully progressed.", stamp))
        elif _progressing(d, status):
            cond = condition("Progressing", "True", RS_UPDATED, f"{what} is progressing.", stamp)
            now_cond = get_condition(status, "Progressing")
            if now_cond is not None and now_cond.get("status") == "True":
                cond["lastTransitionTime"] = now_cond.get("lastTransitionTime")
            status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "Progressing"] + [cond]
        elif _timed_out(d, status, now):
            set_condition(status, condition("Progressing", "False", TIMED_OUT,
                                            f"{what} has timed out progressing.", stamp))
    wait = None
    cond = get_condition(status, "Progressing")
    if (d.progress_deadline is not None and cond is not None and not is_complete(d, status)
            and cond.get("reason") not in (TIMED_OUT, NEW_RS_AVAILABLE)):
        since = epoch(cond.get("lastUpdateTime"))
        since = now if since is None else since
        wait = max(since + d.progress_deadline - now, 0.0) + 1.0
    return status, wait


def _timed_out(d: DeploymentView, status: dict, now: float) -> bool:
    cond = get_condition(status, "Progressing")
    if cond is None or d.progress_deadline is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = epoch(cond.get("lastUpdateTime"))
    return since is not None and since + d.progress_deadline < now


def plan_paused_condition(d: DeploymentView, status: dict, now: str) -> None:
    """checkPausedConditions: Progressing Unknown DeploymentPaused / DeploymentResumed."""
    if d.progress_deadline is None:
        return
    cur = get_condition(status, "Progressing")
    if cur is not None and cur.get("reason") == TIMED_OUT:
        return
    is_paused = cur is not None and cur.get("reason") == PAUSED
    if d.paused and not is_paused:
        set_condition(status, condition("Progressing", "Unknown", PAUSED, "Deployment is paused", now))
    elif not d.paused and is_paused:
        set_condition(status, condition("Progressing", "Unknown", RESUMED, "Deployment is resumed", now))


# --- the controller ------------------------------------------------------------------------------------

class DeploymentController(WorkloadReconciler):
    name = COMPONENT

    kind = DEPLOYMENTS

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        self.sets = OwnerIndex()                      # ReplicaSets by Deployment uid
        self.pods = OwnerIndex()                      # pods by ReplicaSet uid (Recreate waits on them)
        self.rs_owner: dict[str, str] = {}            # ReplicaSet uid -> Deployment uid

    # --- caches ---
    def prime(self) -> None:
        for rs in self.store.list(REPLICASETS)[0]:
            self.sets.put(rs)
            self._set_rs_owner(rs, present=True)
        for pod in self.store.list(PODS)[0]:
            self.pods.put(pod)
        self.prime_owners()

    def _set_rs_owner(self, rs: dict, present: bool) -> None:
        uid, owner = rs["metadata"]["uid"], controller_uid(rs) if present else None
        if owner:
            self.rs_owner[uid] = owner
        else:
            self.rs_owner.pop(uid, None)

    def on_event(self, ev) -> None:
        if ev.resource is DEPLOYMENTS:
            self.track_owner(ev)
        elif ev.resource is REPLICASETS:
            self.track_owned(ev, self.sets)
            self._set_rs_owner(ev.obj, present=ev.type != "DELETED")
        elif ev.resource is PODS:
            key = key_of(ev.obj)
            rs_uid = self.pods.remove(key) if ev.type == "DELETED" else self.pods.put(ev.obj)[1]
            if ev.type == "DELETED" and self.rs_owner.get(rs_uid) in self.owners:
                self.mark(self.owners[self.rs_owner[rs_uid]])     # Recreate waits for old pods to go

    # --- sync ---
    def sync(self, key: tuple[str, str]) -> None:
        obj = self.store.try_get(DEPLOYMENTS, *key)
        if obj is None:
            return
        d = parse_deployment(obj)
        self.claim(obj, REPLICASETS, self.sets)
        rss = self._views(d.uid)
        status = copy.deepcopy(d.status)
        stamp = now_rfc3339()
        if d.deleting:
            new, _ = split_replicasets(d, rss)
            self._write_status(obj, calculate_status(d, rss, new, status, stamp))
            return
        plan_paused_condition(d, status, stamp)
        if d.paused or is_scaling_event(d, rss):
            new, olds = split_replicasets(d, rss)
            if new is not None:
                self._sync_revision(obj, d, new, olds)
            self._apply_scale(obj, d, plan_proportional_scale(d, new, olds))
            rss = self._views(d.uid)
            new, olds = split_replicasets(d, rss)
            if d.paused:
                self._cleanup(d, olds)
            self._write_status(obj, calculate_status(d, rss, new, status, stamp))
            return
        if d.recreate:
            self._rollout_recreate(obj, d, rss, status)
        else:
            self._rollout_rolling(obj, d, rss, status)

    def _views(self, uid: str) -> list[RSView]:
        return [parse_rs(r) for r in self.sets.of(uid)]

    def _rollout_rolling(self, obj: dict, d: DeploymentView, rss: list[RSView], status: dict) -> None:
        new, olds = split_replicasets(d, rss)
        new = self._ensure_new_rs(obj, d, new, olds, status)
        if new is None:
            self._write_status(obj, status)
            return
        self._finish(obj, d, plan_rolling_step(d, new, olds), status)

    def _rollout_recreate(self, obj: dict, d: DeploymentView, rss: list[RSView], status: dict) -> None:
        new, olds = split_replicasets(d, rss)
        left = any(p for r in olds for p in self.pods.of(r.uid)
                   if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
        step, need_new = plan_recreate_step(d, new, olds, left)
        if need_new and new is None:
            new = self._ensure_new_rs(obj, d, None, olds, status)
            if new is not None:
                step, _ = plan_recreate_step(d, new, olds, left)
        elif new is not None:
            self._sync_revision(obj, d, new, olds)
        self._finish(obj, d, step, status)

    def _finish(self, obj: dict, d: DeploymentView, step: dict[str, int], status: dict) -> None:
        """Scale by this pass's step; with nothing left to do, clean old revisions up; then the
        rollout status."""
        self._apply_scale(obj, d, step)
        rss = self._views(d.uid)
        new, olds = split_replicasets(d, rss)
        if not step and is_complete(d, d.status):
            self._cleanup(d, olds)
        final, wait = plan_rollout_status(d, rss, new, status, time.time())
        self._write_status(obj, final)
        if wait is not None:
            self.mark_later(key_of(obj), wait)

    def _ensure_new_rs(self, obj: dict, d: DeploymentView, new: RSView | None, olds: list[RSView],
                       status: dict) -> RSView | None:
        """The new ReplicaSet, made if missing; its revision and the Deployment's brought up to date."""
        stamp = now_rfc3339()
        if new is not None:
            self._sync_revision(obj, d, new, olds)
            if d.progress_deadline is not None and get_condition(status, "Progressing") is None:
                set_condition(status, condition("Progressing", "True", FOUND_NEW_RS,
                                                f'Found new replica set "{new.name}"', stamp))
            return new
        rs = render_new_rs(obj, d, olds, status.get("collisionCount"))
        if self.store.try_get(REPLICASETS, d.namespace, rs["metadata"]["name"]) is not None:
            # not ours (ours would have been found or adopted): a hash collision; with the count
            # raised the next pass hashes differently
            status["collisionCount"] = (status.get("collisionCount") or 0) + 1
            self.mark(key_of(obj))
            return None
        made = self.store.create(REPLICASETS, admission.admit(self.store, self.cfg, REPLICASETS, "CREATE",
                                                              rs, None))
        self.writes += 1
        replicas = made["spec"]["replicas"]
        if replicas > 0:
            self.record_event(obj, "Normal", "ScalingReplicaSet",
                        f"Scaled up replica set {made['metadata']['name']} from 0 to {replicas}")
        if d.progress_deadline is not None:
            set_condition(status, condition("Progressing", "True", NEW_RS_CREATED,
                                            f'Created new replica set "{made["metadata"]["name"]}"', stamp))
        self._set_deployment_revision(obj, made["metadata"]["annotations"][REVISION])
        return parse_rs(made)

    def _sync_revision(self, obj: dict, d: DeploymentView, new: RSView, olds: list[RSView]) -> None:
        revision = max((r.revision for r in olds), default=0) + 1
        annotations = plan_rs_annotations(d, new.annotations, revision, exists=True)
        current = self.store.try_get(REPLICASETS, d.namespace, new.name)
        if current is None:
            return
        if annotations != new.annotations or (current.get("spec") or {}).get("minReadySeconds", 0) != d.min_ready:
            rs = copy.deepcopy(current)
            rs["metadata"]["annotations"] = annotations
            rs["spec"]["minReadySeconds"] = d.min_ready
            self.store.update(REPLICASETS, rs)
            self.writes += 1
        self._set_deployment_revision(obj, annotations.get(REVISION, ""))

    def _set_deployment_revision(self, obj: dict, revision: str) -> None:
        current = self.store.try_get(DEPLOYMENTS, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if current is None or not revision or (current["metadata"].get("annotations") or {}).get(REVISION) == revision:
            return
        new = copy.deepcopy(current)
        new["metadata"].setdefault("annotations", {})[REVISION] = revision
        self.store.update(DEPLOYMENTS, new)
        self.writes += 1

    def _apply_scale(self, obj: dict, d: DeploymentView, plan: dict[str, int]) -> None:
        """scaleReplicaSet: spec.replicas and the replica annotations, and the event."""
        for name, replicas in plan.items():
            cur = self.store.try_get(REPLICASETS, d.namespace, name)
            if cur is None:
                continue
            rs = copy.deepcopy(cur)
            before = rs["spec"].get("replicas", 1)
            rs["spec"]["replicas"] = replicas
            ann = rs["metadata"].setdefault("annotations", {})
            ann[DESIRED], ann[MAX_REPLICAS] = str(d.replicas), str(d.replicas + d.surge)
            self.store.update(REPLICASETS, rs)
            self.writes += 1
            if before != replicas:
                way = "up" if replicas > before else "down"
                self.record_event(obj, "Normal", "ScalingReplicaSet",
                                  f"Scaled {way} replica set {name} from {before} to {replicas}")

    def _cleanup(self, d: DeploymentView, olds: list[RSView]) -> None:
        for name in plan_cleanup(d, olds):
            rs = self.store.try_get(REPLICASETS, d.namespace, name)
            if rs is not None:
                deletion.delete_object(self.store, self.cfg, REPLICASETS, rs)
                self.writes += 1

    def _write_status(self, obj: dict, status: dict) -> None:
        cur = self.store.try_get(DEPLOYMENTS, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if cur is None or cur.get("status") == status:
            return
        self.store.update(DEPLOYMENTS, {"metadata": {"namespace": obj["metadata"]["namespace"],
                                                     "name": obj["metadata"]["name"]},
                                        "status": status}, subresource="status")
        self.writes += 1
