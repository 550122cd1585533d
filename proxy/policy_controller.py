"""The agent's NetworkPolicy component: watch Pods, Namespaces and NetworkPolicies, keep the table
of proxy/render_policy.py equal to them, and cover a new pod before its CNI ADD returns.

    start(api, cfg) -> PolicyController       (agent; waits for the three informers' first list)
    .pod_added(ns, name, ips, container_id)   (CNI ADD, before the pod's interface exists)
    .pod_deleted(container_id)                (CNI DEL)
    .stop()

This module is the shell around the pure planner (proxy/policy_plan.py): the watches, the lock,
the nft transactions, the API reads of the CNI hooks. A transaction the kernel refuses (someone
changed our table) is followed by a rebuild of the whole table from the planner's state.

Speed: the watch threads only queue events; the sync loop (proxy/sync_loop.py) takes in
everything queued (a burst of 1,000 policy creates becomes a few transactions, not 1,000). The
queue keeps one entry per object, its latest version: an object changed 1,000 times a second
is parsed and planned once per sync, not once per change, and never holds up the others.
A sync's element changes go over netlink (Nft.elements), its structure through libnftables,
whose every transaction with a rule in it first fills nft's cache of the table's sets, chains
and counters: 40-110 ms with 1,000 policies on this 2-core machine under load, while a label
change's elements take under 1 ms over netlink (PolicyPlanner.plan_split).

Before the first packet: pod_added puts every address the CNI gave the pod (one per family)
into every set (local_pods, its selections, peer sets, each in its family's twin) in one
transaction, then deletes the addresses' conntrack entries (a flow that saw replies from an
address's previous pod would pass as established), all before the interface exists.
Established connections survive policy changes (like Calico and Cilium); new ones follow the
new policy.

Denied connections are logged by proxy/nflog.py; counters and gauges are exported by
proxy/policy_metrics.py.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from kubeweft.cni.errors import TRY_AGAIN_LATER, CniError

from . import policy_model as pm
from . import render_policy as rp
from .api_get import get_json
from .conntrack import forget_flows
from .informer import Informer, key_of
from .nflog import DropLog
from .nftables import Nft, NftError
from .policy_metrics import PolicyCounters, register_metrics, unregister_metrics
from .policy_plan import Plan, PodKey, PolicyPlanner
from .skip_log import SkipLog
from .sync_loop import SyncLoop

log = logging.getLogger("kubeweft.policy")

SYNC_TIMEOUT = 60.0
FETCH_TIMEOUT = 3.0
# after the first event of a burst, wait this long for the rest: one transaction for all of it
# (events that arrive while a sync runs are coalesced into the next one anyway)
DEBOUNCE = 0.005
RESYNC = 1.0             # seconds between two syncs when no event comes (nothing dirty: no command)
_PARSE = {"pod": pm.parse_pod, "ns": pm.parse_namespace, "pol": pm.parse_policy}


class PolicyController:
    def __init__(self, api, node_name: str, pod_cidr: str | Sequence[str], nft: Nft | None = None,
                 netns: str | None = None):
        self.api = api
        self.netns = netns              # None: the agent's own (the node's); else tests' scratch one
        self.node_name = node_name
        self.nft = nft or Nft()
        self.lock = threading.RLock()                         # held around every planner call
        self.planner = PolicyPlanner(node_name, pod_cidr)
        # watch events not yet taken in, the latest per object: (kind, key) -> (kind, type, object);
        # a list (type SYNC) under (kind, None) replaces the events of its kind queued before it
        self.pending: dict[tuple, tuple[str, str, object]] = {}
        self.pending_lock = threading.Lock()                  # never held for long: the watch
        self.loop = SyncLoop("policy sync", self.sync, debounce=DEBOUNCE, period=RESYNC,
                             on_failure=self._sync_failed)
        self.transactions = 0
        self.rebuilds = 0
        self.applied_policies = 0                             # in the table, as of last_applied
        self.last_applied = 0.0                               # wall clock of the last transaction
        self.last_event = 0.0                                 # wall clock of the last watch event
        self.informers: list[Informer] = []
        self.drops = DropLog(rp.NFLOG_GROUP, self.policy_of)
        self.counters = PolicyCounters(netns)
        self._collector = None
        self.skipped = {kind: SkipLog(log, kind) for kind in ("pod", "ns", "pol")}

    # --- the watch edge -----------------------------------------------------------------------
    def _parse(self, kind: str, obj: dict):
        return self.skipped[kind].parse(_PARSE[kind], key_of(obj), obj, pm.ModelError)

    def _on_event(self, kind: str, etype: str, obj: dict) -> None:
        """The watch threads only queue: a sync in progress (the lock, an nft transaction) must
        not hold up the delivery of the events that follow, which the next sync takes in whole."""
        key = (kind, key_of(obj))
        with self.pending_lock:
            self.pending.pop(key, None)             # the latest version goes last, in arrival order
            self.pending[key] = (kind, etype, obj)
            self.last_event = time.time()
        self.loop.wake()

    def _on_sync(self, kind: str, objects: dict) -> None:
        with self.pending_lock:
            self.pending = {k: v for k, v in self.pending.items() if k[0] != kind}
            self.pending[(kind, None)] = (kind, "SYNC", objects)
        self.loop.wake()

    def _drain_locked(self) -> None:
        """Take the queued watch events into the planner, in order, each object parsed into a
        policy_model value (caller holds the lock)."""
        with self.pending_lock:
            batch, self.pending = self.pending, {}
        for kind, etype, obj in batch.values():
            if etype == "SYNC":
                self._take_list(kind, obj)      # type: ignore[arg-type]
            else:
                self._take_event(kind, etype, obj)      # type: ignore[arg-type]

    def _take_event(self, kind: str, etype: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        key = meta.get("namespace", ""), meta.get("name", "")
        parsed = self._parse(kind, obj) if etype != "DELETED" else None
        if kind == "pol":
            self.planner.put_policy(f"{key[0]}/{key[1]}", parsed)
        elif kind == "ns":
            self.planner.put_namespace(key[1], parsed)
        else:
            self.planner.put_pod(key, parsed)

    def _take_list(self, kind: str, objects: dict) -> None:
        parsed = [p for p in (self._parse(kind, o) for o in objects.values()) if p]
        {"pol": self.planner.set_policies, "ns": self.planner.set_namespaces,
         "pod": self.planner.set_pods}[kind](parsed)

    def _plan_locked(self) -> Plan:
        """The changes of one sync (caller holds the lock): the queue taken in, then planned."""
        self._drain_locked()
        return self.planner.plan_split()

    # --- the kernel -----------------------------------------------------------------------------
    def _send(self, plan: Plan) -> bool:
        """Structure through libnftables, elements over netlink (PolicyPlanner.plan_split says
        in which order); False when there was nothing to send. Raises NftError."""
        pre, ops, post = plan
        if not (pre or ops or post):
            return False
        if pre:
            self.nft.run(pre)
        if ops:
            self.nft.elements.run(rp.FAMILY, rp.TABLE, ops)
        if post:
            self.nft.run(post)
        self._applied()
        return True

    def _apply(self, plan: Plan) -> bool:
        """Send a plan; a refusal (someone changed our table) rebuilds the whole table."""
        try:
            return self._send(plan)
        except NftError as e:
            log.error("policy transaction failed, rebuilding the table: %s", e)
            self.rebuild()
            return True

    def rebuild(self) -> None:
        """The whole table from the planner's state in one transaction (start, and recovery)."""
        with self.lock:
            self.nft.run(self.planner.table())
            self.rebuilds += 1
            self._applied()

    def _applied(self) -> None:
        self.transactions += 1
        self.applied_policies = len(self.planner.index.policies)
        self.last_applied = time.time()

    def pending_events(self) -> int:
        """Watch events not yet in the kernel (queued, or taken in by a sync still running)."""
        with self.pending_lock:
            queued = len(self.pending)
        return queued + (1 if self.loop.woken or self.planner.dirty else 0)

    def sync(self) -> None:
        with self.lock:
            t0 = time.monotonic()
            plan = self._plan_locked()
            t1 = time.monotonic()
            if self._apply(plan):
                log.debug("policy sync: %d commands, %d element sets: planned in %.1f ms, applied in %.1f ms",
                          len(plan[0]) + len(plan[2]), len(plan[1]), (t1 - t0) * 1000,
                          (time.monotonic() - t1) * 1000)

    def _sync_failed(self) -> None:
        """What the failed sync planned may be half in the kernel: the retry plans every pod."""
        with self.lock:
            self.planner.replan_all()

    # --- the CNI's hooks ------------------------------------------------------------------------
    def _fetch(self, path: str) -> dict | None:
        return get_json(self.api, path, FETCH_TIMEOUT)

    def pod_added(self, namespace: str, name: str, ips: Sequence[str], container_id: str) -> None:
        """Make the pod's IPs (one per family) members of every set they belong in, in the
        kernel, now. A pod the API does not know (yet) fails the ADD (the kubelet retries): its
        labels decide its isolation. An attachment without K8S_POD_* arguments is no pod: no
        policy selects it."""
        if not namespace or not name:
            namespace, name = "", f"cni:{container_id}"
        key: PodKey = (namespace, name)
        with self.lock:
            self._drain_locked()
            known, ns_known = self.planner.knows(key)
        obj = None if known else self._fetch(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if not known and obj is None:
            # common under churn (the kubelet runs ADD for a pod just deleted): a CNI error, one
            # log line, no traceback
            raise CniError(TRY_AGAIN_LATER, "Try again later", f"pod {namespace}/{name} is not in the API")
        ns_obj = None if ns_known else self._fetch(f"/api/v1/namespaces/{namespace}")
        pod = pm.parse_pod(obj) if obj is not None else None       # raises on a broken pod: ADD is retried
        ns = pm.parse_namespace(ns_obj) if ns_obj is not None else None
        with self.lock:
            self.planner.add_cni_pod(key, ips, container_id, pod, ns)
            try:
                self._send(self._plan_locked())
            except NftError:
                log.exception("pod_added %s/%s: transaction failed; rebuilding", namespace, name)
                self.rebuild()                   # raises if even that fails: ADD fails, retried
        for ip in ips:
            forget_flows(ip, self.netns)

    def pod_deleted(self, container_id: str) -> None:
        with self.lock:
            if self.planner.remove_cni_pod(container_id):
                self._apply(self._plan_locked())

    # --- observability --------------------------------------------------------------------------
    def policy_of(self, pid: str) -> str:
        return self.planner.policy_of(pid)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = SYNC_TIMEOUT) -> PolicyController:
        for kind, path in (("ns", "/api/v1/namespaces"),
                           ("pol", "/apis/networking.k8s.io/v1/networkpolicies"),
                           ("pod", "/api/v1/pods")):
            self.informers.append(Informer(
                self.api, path, name=f"policy {kind}",
                on_event=lambda t, o, k=kind: self._on_event(k, t, o),
                on_sync=lambda objs, k=kind: self._on_sync(k, objs)).start())
        deadline = time.monotonic() + timeout
        for inf in self.informers:
            if not inf.wait_synced(max(0.1, deadline - time.monotonic())):
                self.stop()
                raise RuntimeError(f"NetworkPolicy: {inf.name} did not list within {timeout:.0f}s")
        with self.lock:
            self._plan_locked()
            self.rebuild()                       # replaces any table a previous agent left
        self.drops.start()
        self.loop.start()
        self._collector = register_metrics(self)
        p = self.planner
        log.info("NetworkPolicy: %d policies, %d pods, %d namespaces", len(p.policies), len(p.pods),
                 len(p.namespaces))
        return self

    def stop(self) -> None:
        """Stop watching; the table stays (pods stay protected while the agent restarts)."""
        for inf in self.informers:
            inf.stop()
        self.loop.stop(3)
        self.drops.stop()
        if self._collector is not None:
            unregister_metrics(self._collector)
            self._collector = None
        self.skipped = {kind: SkipLog(log, kind) for kind in ("pod", "ns", "pol")}


def start(api, cfg) -> PolicyController:
    """The agent's entry point (proxy/agent.py: start_component)."""
    return PolicyController(api, cfg.node_name, cfg.pod_cidrs or cfg.pod_cidr).start()
