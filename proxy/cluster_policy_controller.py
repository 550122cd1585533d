"""The agent's ClusterNetworkPolicy component: watch ClusterNetworkPolicies, Pods, Namespaces and
Nodes, keep `table inet kubeweft-cnp` (proxy/render_cluster_policy.py) equal to them, and cover
a new pod before its CNI ADD returns.

    start(api, cfg) -> ClusterPolicyController
    .pod_added(ns, name, ips, container_id)   (CNI ADD, before the pod's interface exists)
    .pod_deleted(container_id)                (CNI DEL)
    .stop()

Each sync renders the whole structure and every set's elements from the objects held. While the
structure is what the kernel has, only the element changes go in (a pod's ADD: its addresses);
a policy change replaces the table in one transaction (add, delete, re-create): atomic, so no
packet meets a half-written table, and established connections are untouched (they are
accepted before any rule). Rendering is O(pods x rules with selectors): 5,000 pods, 20
policies, 94k elements: ~2 s of Python and ~1.5 s for nft to load the whole table, measured on
the shared 2-core machine at load 12; an element change costs nft milliseconds. NetworkPolicy's
planner (proxy/policy_plan.py) shows how to evaluate only what an event changes, which this
needs before it scales to thousands of pods per policy.

Every rule counts the packets it matches in a named counter, exported by
proxy/cluster_policy_metrics.py; a Deny rule's packets are logged (proxy/nflog.py reads the
table's NFLOG group) with the policy and the rule that dropped them.

One agent, the holder of the Lease kube-system/kubeweft-cnp-status (proxy/leader.py), writes
each policy's `Accepted` condition (proxy/cluster_policy_status.py says what and why one writer).

A cluster without the ClusterNetworkPolicy CRD answers 404 to the list: the agent starts anyway,
enforcing none, and the informer keeps listing until the kind appears.
"""
from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace

from kubeweft.cni.errors import TRY_AGAIN_LATER, CniError

from . import cluster_policy_model as cm
from . import cluster_policy_status as cs
from . import policy_model as pm
from . import render_cluster_policy as rc
from .api_get import get_json
from .cluster_policy_metrics import RuleCounters, register_metrics, unregister_metrics
from .informer import Informer, key_of
from .leader import Leader
from .nflog import DropLog
from .nftables import Nft, NftError
from .skip_log import SkipLog
from .sync_loop import SyncLoop

log = logging.getLogger("kubeweft.cnp")

SYNC_TIMEOUT = 60.0
CRD_TIMEOUT = 5.0        # how long start waits for the first list of the kind (absent CRD: 404s)
FETCH_TIMEOUT = 3.0
DEBOUNCE = 0.005
RESYNC = 1.0
STATUS_LEASE = ("kube-system", "kubeweft-cnp-status")
_PARSE = {"cnp": cm.parse_cluster_policy, "pod": cm.parse_pod, "node": cm.parse_node,
          "ns": pm.parse_namespace}
_PATHS = (("ns", "/api/v1/namespaces"), ("node", "/api/v1/nodes"), ("pod", "/api/v1/pods"),
          ("cnp", cm.PATH))


class ClusterPolicyController:
    def __init__(self, api, node_name: str, nft: Nft | None = None):
        self.api = api
        self.node_name = node_name
        self.nft = nft or Nft()
        self.lock = threading.RLock()
        self.objects: dict[str, dict] = {kind: {} for kind in _PARSE}     # kind -> key -> model
        self.cni: dict[str, tuple[tuple[str, str], tuple[str, ...]]] = {}   # container ID -> (pod, ips)
        self.gone: dict[tuple[str, str], set[str]] = {}                 # pod -> addresses DEL freed
        self.applied: tuple[list, dict] | None = None             # (structure, elements) in the kernel
        self.transactions = 0
        self.informers: list[Informer] = []
        self.loop = SyncLoop("cluster policy sync", self._sync_table_and_status, debounce=DEBOUNCE, period=RESYNC,
                             on_failure=self._forget_applied)
        self.raw_policies: dict[str, dict] = {}          # name -> the object as listed (its status, errors)
        self.leader: Leader | None = None
        self.status_writes = 0
        self.skipped = {kind: SkipLog(log, kind) for kind in _PARSE}
        self.counters = RuleCounters()
        self.drops = DropLog(rc.NFLOG_GROUP, self.describe_rule, parse_prefix=rc.parse_log_prefix,
                             thread_name="cluster policy nflog")
        self._collector = None

    # --- what the counters and the drop log name --------------------------------------------------
    def rule_refs(self) -> dict[str, rc.RuleRef]:
        with self.lock:
            return rc.rule_refs(self.objects["cnp"].values())

    def policy_names(self) -> set[str]:
        with self.lock:
            return {p.name for p in self.objects["cnp"].values()}

    def describe_rule(self, counter: str) -> str:
        ref = self.rule_refs().get(counter)
        if ref is None:
            return f"a ClusterNetworkPolicy rule no longer held ({counter})"
        return f"ClusterNetworkPolicy {ref.policy} ({ref.tier}) {ref.direction.lower()} rule {ref.rule}: {ref.action}"

    # --- the watch edge -----------------------------------------------------------------------
    def _parse(self, kind: str, obj: dict):
        return self.skipped[kind].parse(_PARSE[kind], key_of(obj), obj, pm.ModelError)

    def _on_event(self, kind: str, etype: str, obj: dict) -> None:
        key = key_of(obj)
        parsed = None if etype == "DELETED" else self._parse(kind, obj)
        with self.lock:
            if kind == "cnp":
                name = (obj.get("metadata") or {}).get("name", "")
                if etype == "DELETED":
                    self.raw_policies.pop(name, None)
                else:
                    self.raw_policies[name] = obj
            if parsed is None:
                self.objects[kind].pop(key, None)
                if kind == "pod":
                    self.gone.pop(key, None)
            else:
                self.objects[kind][key] = parsed
        self.loop.wake()

    def _on_sync(self, kind: str, objects: dict) -> None:
        parsed = {k: p for k, p in ((k, self._parse(kind, o)) for k, o in objects.items()) if p is not None}
        with self.lock:
            if kind == "cnp":
                self.raw_policies = {(o.get("metadata") or {}).get("name", ""): o for o in objects.values()}
            self.objects[kind] = parsed
        self.loop.wake()

    # --- the kernel -----------------------------------------------------------------------------
    def world(self) -> rc.World:
        """What the table is made from now (caller holds the lock). A pod the CNI wired has the
        addresses the CNI gave until the API shows them (the kubelet reports podIPs after ADD)."""
        pods = dict(self.objects["pod"])
        for key, ips in self.gone.items():
            # after DEL the API may still show the old address (terminating): it is free
            if key in pods:
                pods[key] = replace(pods[key], ips=tuple(a for a in pods[key].ips if a not in ips))
        local = set()
        for key, ips in self.cni.values():
            local.add(key)
            pod = pods.get(key) or cm.Pod(key[0], key[1], (), self.node_name)
            missing = tuple(a for a in ips if a not in pod.ips)
            if missing:
                pods[key] = replace(pod, ips=(*missing, *pod.ips), node=self.node_name, terminal=False)
        return rc.World(self.node_name, tuple(self.objects["cnp"].values()), tuple(pods.values()),
                        {n.name: n.labels for n in self.objects["ns"].values()},
                        tuple(self.objects["node"].values()), frozenset(local))

    def sync(self) -> None:
        """The table from what is held: only element changes while the structure (policies,
        named ports) is what was applied last, else the whole table in one transaction."""
        with self.lock:
            decls, members = rc.render_world(self.world())
            if self.applied is None or self.applied[0] != decls:
                # the counters of the table being replaced carry over (a restarted agent's too)
                lines = rc.render_table(decls, members, rc.parse_counts(self.nft.list(f"table {rc.T}")))
            else:
                lines = rc.plan_element_changes(self.applied[1], members)
            if lines:
                self.nft.run(lines)
                self.transactions += 1
            self.applied = (decls, members)

    def _sync_table_and_status(self) -> None:
        self.sync()
        if self.leader is not None and self.leader.is_leader:
            try:
                self.sync_status()
            except Exception:               # the kernel is done; the status waits for the next round
                log.exception("ClusterNetworkPolicy status")

    def sync_status(self) -> None:
        """Each policy's Accepted condition where it differs from what the API shows (a merge patch
        of status.conditions on the resourceVersion read: a newer write answers 409 and the next
        round plans from it)."""
        from kubernetes.client import CustomObjectsApi
        from kubernetes.client.exceptions import ApiException

        with self.lock:
            raws = list(self.raw_policies.items())
        now = datetime.datetime.now(datetime.UTC)
        for name, obj in raws:
            meta = obj.get("metadata") or {}
            try:
                parsed: cm.ClusterPolicy | str = cm.parse_cluster_policy(obj)
            except pm.ModelError as e:
                parsed = str(e)
            conditions = cs.plan_conditions((obj.get("status") or {}).get("conditions"),
                                            cs.plan_condition(parsed, meta.get("generation", 0)), now)
            if conditions is None:
                continue
            body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": {"conditions": conditions}}
            try:
                CustomObjectsApi(self.api).patch_cluster_custom_object_status(
                    cm.GROUP, cm.VERSION, cm.PLURAL, name, body, _content_type="application/merge-patch+json")
                self.status_writes += 1
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    def _forget_applied(self) -> None:
        with self.lock:
            self.applied = None

    # --- the CNI's hooks ------------------------------------------------------------------------
    def pod_added(self, namespace: str, name: str, ips: Sequence[str], container_id: str) -> None:
        """The pod's addresses (one per family, primary first) into every set it belongs in, in the kernel, before ADD returns. A
        pod the API does not know (yet) fails the ADD (the kubelet retries): its labels decide
        which policies select it."""
        if not namespace or not name:
            return                               # no pod: no subject, no peer
        key = (namespace, name)
        with self.lock:
            known = key in self.objects["pod"]
            ns_known = ("", namespace) in self.objects["ns"]        # keyed as the watch keys them
        obj = None if known else get_json(self.api, f"/api/v1/namespaces/{namespace}/pods/{name}", FETCH_TIMEOUT)
        if not known and obj is None:
            raise CniError(TRY_AGAIN_LATER, "Try again later", f"pod {namespace}/{name} is not in the API")
        ns_obj = None if ns_known else get_json(self.api, f"/api/v1/namespaces/{namespace}", FETCH_TIMEOUT)
        with self.lock:
            if obj is not None and key not in self.objects["pod"]:
                self.objects["pod"][key] = cm.parse_pod(obj)      # raises on a broken pod: ADD is retried
            if ns_obj is not None and ("", namespace) not in self.objects["ns"]:
                self.objects["ns"][("", namespace)] = pm.parse_namespace(ns_obj)
            self.cni[container_id] = (key, tuple(ips))
            self.gone.pop(key, None)
            try:
                self.sync()
            except NftError:
                log.exception("pod_added %s/%s: transaction failed", namespace, name)
                self.applied = None
                raise

    def pod_deleted(self, container_id: str) -> None:
        with self.lock:
            entry = self.cni.pop(container_id, None)
            if entry is None:
                return
            key, ips = entry
            self.gone.setdefault(key, set()).update(ips)
        self.loop.wake()

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = SYNC_TIMEOUT) -> ClusterPolicyController:
        for kind, path in _PATHS:
            self.informers.append(Informer(
                self.api, path, name=f"cluster policy {kind}",
                on_event=lambda t, o, k=kind: self._on_event(k, t, o),
                on_sync=lambda objs, k=kind: self._on_sync(k, objs)).start())
        for inf in self.informers[:-1]:
            if not inf.wait_synced(timeout):
                self.stop()
                raise RuntimeError(f"ClusterNetworkPolicy: {inf.name} did not list within {timeout:.0f}s")
        if not self.informers[-1].wait_synced(CRD_TIMEOUT):
            log.warning("ClusterNetworkPolicy: %s does not list (is the CRD installed?); enforcing none "
                        "until it does", cm.PATH)
        self.sync()
        if self.api is not None:
            self.leader = Leader(self.api, *STATUS_LEASE, self.node_name,
                                 on_change=lambda leading: self.loop.wake()).start()
        self.loop.start()
        self.drops.start()
        self._collector = register_metrics(self)
        log.info("ClusterNetworkPolicy: %d policies", len(self.objects["cnp"]))
        return self

    def stop(self) -> None:
        """Stop watching; the table stays (pods stay covered while the agent restarts)."""
        for inf in self.informers:
            inf.stop()
        if self.leader is not None:
            self.leader.stop()
        self.loop.stop(3)
        self.drops.stop()
        if self._collector is not None:
            unregister_metrics(self._collector)
            self._collector = None


def start(api, cfg) -> ClusterPolicyController:
    """The agent's entry point (proxy/agent.py: start_component)."""
    return ClusterPolicyController(api, cfg.node_name).start()
