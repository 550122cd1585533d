"""The agent's NetworkPolicy component: watch Pods, Namespaces and NetworkPolicies, keep the table
of proxy/render_policy.py equal to them, and cover a new pod before its CNI ADD returns.

    start(api, cfg) -> PolicyController       (agent; waits for the three informers' first list)
    .pod_added(ns, name, ip, container_id)    (CNI ADD, before the pod's interface exists)
    .pod_deleted(container_id)                (CNI DEL)
    .stop()

State kept in memory (DESIGN.md decision 3): the structure last applied (sets, counters,
chains) and, per pod, the (set, element) pairs it contributes, with a reference count per
pair (two pods may briefly claim one IP). A sync diffs and sends one transaction; a transaction
that fails (someone changed our table) is followed by a rebuild of the whole table from memory.

Speed (issue 6): the watch threads only queue events; the sync thread takes in everything queued
(a burst of 1,000 policy creates becomes a few transactions, not 1,000). A change of a few
policies evaluates only those policies, and only for the pods in their sets or matched by their
new selectors (pid_pods, a scan with one test per pod), re-renders only their decls and their
namespace's dispatch chain, and compares only those decls. A pod or namespace change
re-plans only its pods. Gauges: policies applied, the wall clock of the last transaction,
events pending (bench/netpol.py times by them).

Before the first packet: pod_added puts the pod's address into every set (local_pods, its
selections, peer sets) in one transaction, then deletes the address's conntrack entries (a
flow that saw replies from the address's previous pod would pass as established), all before
the interface exists. Addresses of this node's pod CIDR that no pod holds get nothing, so no
packet waits in a neighbour queue for the next pod. Established connections survive policy
changes (like Calico and Cilium); new ones follow the new policy.

Denied connections are logged by the kernel to nflog group render_policy.NFLOG_GROUP (rate
limited per policy and direction); a thread here reads that group over a netlink socket and
logs source, destination, port, direction and policy. Per-policy counters are named nft
counters, exported as kubeweft_networkpolicy_{drops,allowed}_total{namespace,policy,direction}.
"""
from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from dataclasses import replace

from kubeweft.lab import netns as lab_netns

from . import nfnetlink as nl
from . import policy_model as pm
from . import render_policy as rp
from .informer import Informer
from .nftables import Nft, NftError

log = logging.getLogger("kubeweft.policy")

SYNC_TIMEOUT = 60.0
FETCH_TIMEOUT = 3.0
# after the first event of a burst, wait this long for the rest: one transaction for all of it
# (events that arrive while a sync runs are coalesced into the next one anyway)
DEBOUNCE = 0.005
COUNTER_MAX_AGE = 2.0            # seconds a scrape reuses the last counter listing
PodKey = tuple[str, str]


class PolicyController:
    def __init__(self, api, node_name: str, pod_cidr: str, nft: Nft | None = None,
                 netns: str | None = None):
        self.api = api
        self.netns = netns              # None: the agent's own (the node's); else tests' scratch one
        self.node_name = node_name
        self.pod_net = ipaddress.IPv4Network(pod_cidr, strict=False)
        self.nft = nft or Nft()
        self.lock = threading.RLock()
        self.policies: dict[str, pm.Policy] = {}
        self.pods: dict[PodKey, pm.Pod] = {}
        self.namespaces: dict[str, pm.Namespace] = {}
        self.cni_pods: dict[str, tuple[PodKey, str]] = {}     # container ID -> (pod, ip)
        self.cni_ips: dict[PodKey, str] = {}                  # pods this node's CNI wired
        self.gone: dict[PodKey, str] = {}                     # IPs of sandboxes DEL removed
        self.names: dict[str, str] = {}                       # policy id -> namespace/name
        self.index = rp.PolicyIndex()
        self.candidates: dict[str, tuple] = {}                # namespace -> candidate peer sets
        self.decls: dict[str, rp.Decl] = {}                   # structure applied
        self.members: dict[PodKey, frozenset[rp.Member]] = {} # per pod, applied
        self.counts: Counter = Counter()                      # (set, element) -> pods claiming it
        self.rendered: dict[str, tuple[pm.Policy, dict[str, rp.Decl]]] = {}  # per policy id
        self._index_memo: dict = {}                           # rp.index_policies' cache
        self._by_ns: dict[str, list[PodKey]] | None = None
        self.pid_pods: dict[str, set[PodKey]] = {}           # policy id -> pods in its sets
        self.pending: list[tuple[str, str, object]] = []      # watch events not yet taken in
        self.pending_lock = threading.Lock()                  # never held for long: the watch
        self.dirty_pods: set[PodKey] = set()
        self.dirty_policies = True
        self.dirty_all = True
        self.changed: set[str] = set()                        # ids of policies changed since
        self._changed_candidates: dict[str, tuple] = {}        # per sync: namespace -> few
        self._changed_ids: frozenset[str] = frozenset()
        self._changed_ns_sets: tuple[rp.PeerSet, ...] = ()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.transactions = 0
        self.rebuilds = 0
        self.applied_policies = 0                             # in the table, as of last_applied
        self.last_applied = 0.0                               # wall clock of the last transaction
        self.last_event = 0.0                                 # wall clock of the last watch event
        self.informers: list[Informer] = []
        self._threads: list[threading.Thread] = []
        self._nflog: socket.socket | None = None
        self._collector = None
        self.denials_logged = 0
        self._reader: Nft | None = None                       # scrapes' own nft context
        self._counters: tuple[float, dict] = (-COUNTER_MAX_AGE, {})

    # --- the watch edge -----------------------------------------------------------------------
    def _parse(self, kind: str, obj: dict):
        try:
            return {"pod": pm.parse_pod, "ns": pm.parse_namespace, "pol": pm.parse_policy}[kind](obj)
        except pm.ModelError as e:
            meta = obj.get("metadata") or {}
            log.warning("skipping %s %s/%s: %s", kind, meta.get("namespace", ""), meta.get("name", ""), e)
            return None

    def _on_event(self, kind: str, etype: str, obj: dict) -> None:
        """The watch threads only queue: a sync in progress (the lock, an nft transaction) must
        not hold up the delivery of the events that follow, which the next sync takes in whole."""
        with self.pending_lock:
            self.pending.append((kind, etype, obj))
            self.last_event = time.time()
        self.wake.set()

    def _on_sync(self, kind: str, objects: dict) -> None:
        with self.pending_lock:
            self.pending.append((kind, "SYNC", objects))
        self.wake.set()

    def _drain_locked(self) -> None:
        """Take the queued watch events into the model, in order (caller holds the lock)."""
        with self.pending_lock:
            batch, self.pending = self.pending, []
        for kind, etype, obj in batch:
            if etype == "SYNC":
                self._take_sync(kind, obj)      # type: ignore[arg-type]
            else:
                self._take_event(kind, etype, obj)      # type: ignore[arg-type]

    def _take_event(self, kind: str, etype: str, obj: dict) -> None:
        key = (obj.get("metadata") or {}).get("namespace", ""), (obj.get("metadata") or {}).get("name", "")
        if kind == "pol":
            parsed = self._parse(kind, obj) if etype != "DELETED" else None
            if parsed is None:
                self.policies.pop(f"{key[0]}/{key[1]}", None)
            else:
                self.policies[parsed.key] = parsed
            self.changed.add(rp.policy_id(f"{key[0]}/{key[1]}"))
            self.dirty_policies = True
        elif kind == "ns":
            parsed = self._parse(kind, obj) if etype != "DELETED" else None
            if parsed is None:
                self.namespaces.pop(key[1], None)
            else:
                self.namespaces[parsed.name] = parsed
            self.candidates.pop(key[1], None)
            self.dirty_pods.update(k for k in self.pods if k[0] == key[1])
        else:
            parsed = self._parse(kind, obj) if etype != "DELETED" else None
            if parsed is None:
                if self.pods.pop(key, None) is not None:
                    self._by_ns = None
                self.gone.pop(key, None)
            else:
                if key not in self.pods:
                    self._by_ns = None
                self.pods[key] = self._with_cni_ip(parsed)
            self.dirty_pods.add(key)

    def _take_sync(self, kind: str, objects: dict) -> None:
        if kind == "pol":
            pols = (self._parse(kind, o) for o in objects.values())
            self.policies = {p.key: p for p in pols if p}
        elif kind == "ns":
            nss = (self._parse(kind, o) for o in objects.values())
            self.namespaces = {n.name: n for n in nss if n}
            self.candidates.clear()
        else:
            pods = (self._parse(kind, o) for o in objects.values())
            self.pods = {p.key: self._with_cni_ip(p) for p in pods if p}
            self._by_ns = None
        self.dirty_all = True
        self.dirty_policies = True

    def _with_cni_ip(self, pod: pm.Pod) -> pm.Pod:
        """The kubelet reports podIP only after ADD returns: until then, the IP the CNI gave.
        After DEL the API may still show the old podIP (terminating): that address is free."""
        if pod.ip and self.gone.get(pod.key) == pod.ip:
            return replace(pod, ip="")
        ip = self.cni_ips.get(pod.key)
        if ip and not pod.ip:
            return replace(pod, ip=ip, node=pod.node or self.node_name)
        return pod

    # --- planning -----------------------------------------------------------------------------
    def _is_local(self, pod: pm.Pod) -> bool:
        if pod.key in self.cni_ips:
            return True
        if pod.node:
            return pod.node == self.node_name
        return bool(pod.ip) and ipaddress.IPv4Address(pod.ip) in self.pod_net

    def _namespace(self, name: str) -> pm.Namespace:
        return self.namespaces.get(name) or pm.Namespace(name, frozenset({(pm.NAME_LABEL, name)}))

    def _plan_pod(self, key: PodKey, changed: frozenset[str] | None = None) -> frozenset[rp.Member]:
        """The pod's members; with `changed` (policy ids), only those policies are evaluated and
        the rest is taken from what the pod has now."""
        pod = self.pods.get(key)
        if pod is None:
            return frozenset()
        cands = self.candidates.get(pod.namespace)
        ns = self._namespace(pod.namespace)
        if cands is None:
            cands = self.candidates[pod.namespace] = rp.candidate_peer_sets(self.index, ns)
        if changed is not None:
            return rp.plan_pod_members_delta(self.index, pod, ns, self._is_local(pod),
                                             self.members.get(key, frozenset()), changed,
                                             self._few_candidates(pod.namespace))
        return rp.plan_pod_members(self.index, pod, ns, self._is_local(pod), cands)

    def _diff_members(self, keys, changed: frozenset[str] | None = None) -> tuple[list, list]:
        """Update per-pod members and counts for `keys`; the elements to delete and to add."""
        removed, added = [], []
        for key in keys:
            new = self._plan_pod(key, changed)
            old = self.members.get(key, frozenset())
            if new == old:
                continue
            old_pids = {s[:13] for s, _ in old if s[0] == "p"}
            new_pids = {s[:13] for s, _ in new if s[0] == "p"}
            for pid in old_pids - new_pids:
                pods = self.pid_pods.get(pid)
                if pods is not None:
                    pods.discard(key)
                    if not pods:
                        del self.pid_pods[pid]
            for pid in new_pids - old_pids:
                self.pid_pods.setdefault(pid, set()).add(key)
            for m in old - new:
                self.counts[m] -= 1
                if self.counts[m] <= 0:
                    del self.counts[m]
                    removed.append(m)
            for m in new - old:
                self.counts[m] += 1
                if self.counts[m] == 1:
                    added.append(m)
            if new:
                self.members[key] = new
            else:
                self.members.pop(key, None)
        return removed, added

    def _few_candidates(self, namespace: str) -> tuple[rp.PeerSet, ...]:
        """The changed policies' peer sets a pod of `namespace` might be in (per sync)."""
        few = self._changed_candidates.get(namespace)
        if few is None:
            changed = self._changed_ids
            few = self._changed_candidates[namespace] = tuple(
                ps for ps in self.index.local_peer_sets.get(namespace, ()) if ps.name[:13] in changed
            ) + rp.filter_candidates(self._changed_ns_sets, self._namespace(namespace))
        return few

    def _affected(self, changed: frozenset[str]) -> set[PodKey]:
        """Pods whose members the `changed` policies may change: those in their sets now, and
        those their new selectors match (one test per pod and changed selector)."""
        out: set[PodKey] = set()
        for pid in changed:
            out |= self.pid_pods.get(pid, set())
        sels: dict[str, list[pm.Selector]] = {}
        for pid, pol in self.index.policies:
            if pid in changed:
                sels.setdefault(pol.namespace, []).append(pol.pod_selector)
        for ns, keys in self._pods_by_namespace().items():
            few = self._few_candidates(ns)
            mine = sels.get(ns)
            if not few and not mine:
                continue                        # no changed selector can match this namespace
            ns_labels = self._namespace(ns).labels
            for key in keys:
                pod = self.pods[key]
                if key in out or not pod.ip or pod.host_network or pod.terminal:
                    continue
                if any(ps.matches(pod, ns_labels) for ps in few) or (
                        mine and self._is_local(pod) and any(sel.matches(pod.labels) for sel in mine)):
                    out.add(key)
        return out

    def _pods_by_namespace(self) -> dict[str, list[PodKey]]:
        """namespace -> its pods (made again after a pod comes or goes: _by_ns = None)."""
        if self._by_ns is None:
            by_ns: dict[str, list[PodKey]] = {}
            for key in self.pods:
                by_ns.setdefault(key[0], []).append(key)
            self._by_ns = by_ns
        return self._by_ns

    def _render_decls_locked(self, changed: frozenset[str] | None) -> tuple[dict[str, rp.Decl], set[str] | None]:
        """The whole structure, each policy's part rendered again only when it changed; and the
        keys that may differ from what is applied (None: any)."""
        decls: dict[str, rp.Decl] = {}
        for d in (rp.SetDecl(rp.LOCAL_PODS, rp.ADDR, "pods of this node, from their CNI ADD on"),
                  rp.SetDecl(rp.IN_ISOLATED, rp.ADDR, "local pods selected by a policy with Ingress"),
                  rp.SetDecl(rp.EG_ISOLATED, rp.ADDR, "local pods selected by a policy with Egress")):
            decls[rp.decl_key(d)] = d
        for proto, name in sorted(self.index.named_ports):
            d = rp.SetDecl(rp.named_port_set(proto, name), rp.ADDR_PORT,
                           f"pod ip . {proto} . port of every containerPort named {name}")
            decls[rp.decl_key(d)] = d
        keys: set[str] = set(decls)
        rendered: dict[str, tuple[pm.Policy, dict[str, rp.Decl]]] = {}
        for pid, pol in self.index.policies:
            have = self.rendered.get(pid)
            if have is None or have[0] is not pol:
                have = (pol, {rp.decl_key(d): d for d in rp.render_policy(pid, pol)})
                keys.update(have[1])
            rendered[pid] = have
            decls.update(have[1])
        touched = set()                         # namespaces whose policies changed
        for pid, (pol, old) in self.rendered.items():
            if pid not in rendered or rendered[pid] is not self.rendered[pid]:
                keys.update(old)
                touched.add(pol.namespace)
        touched.update(rendered[pid][0].namespace for pid in changed or () if pid in rendered)
        self.rendered = rendered
        for d in rp.render_dispatch(self.index, str(self.pod_net), self.decls,
                                    None if changed is None else touched):
            decls[rp.decl_key(d)] = d
            keys.add(rp.decl_key(d))
        # a namespace's dispatch chains that go with its last policy
        keys.update(f"chain {rp.namespace_chain(ns, d)}" for ns in touched for d in ("in", "eg"))
        return decls, None if changed is None else keys

    def _plan_locked(self) -> list[str]:
        """The commands of one sync (caller holds the lock); state is advanced optimistically."""
        self._drain_locked()
        new_decls = self.decls
        keys: set[str] | None = set()
        removed: list[rp.Member] = []
        added: list[rp.Member] = []
        if self.dirty_policies:
            old_named = self.index.named_ports
            self.index = rp.index_policies(self.policies.values(), self._index_memo)
            self.names = {pid: pol.key for pid, pol in self.index.policies}
            changed = frozenset(self.changed)
            # however many changed, testing only their selectors costs less than a full plan
            # (which tests every pod against every candidate set); a new named port, or a
            # re-list, plans every pod
            few = not self.dirty_all and self.index.named_ports == old_named
            new_decls, keys = self._render_decls_locked(changed if few else None)
            if few:
                # only some policies changed: evaluate just those, and only for the pods they
                # may affect; the per-namespace candidate caches lose and gain their peer sets
                self._changed_ids = changed
                self._changed_ns_sets = tuple(ps for ps in self.index.ns_peer_sets if ps.name[:13] in changed)
                self._changed_candidates = {}
                for ns in list(self.candidates):
                    self.candidates[ns] = tuple(ps for ps in self.candidates[ns] if ps.name[:13] not in changed) \
                        + self._few_candidates(ns)
                affected = self._affected(changed) - self.dirty_pods
                removed, added = self._diff_members(affected, changed)
            else:
                self.candidates.clear()
                self.dirty_all = True
        all_keys = self.dirty_all
        pods = set(self.pods) | set(self.members) if all_keys else self.dirty_pods
        self.dirty_pods, self.dirty_policies, self.dirty_all = set(), False, False
        self.changed = set()
        more_removed, more_added = self._diff_members(pods)
        # an element may leave with one pass and come back with the other: net them out
        gone, came = set(removed) | set(more_removed), set(added) | set(more_added)
        removed, added = list(gone - came), list(came - gone)
        # elements of sets that no longer exist leave with their set
        removed = [m for m in removed if f"set {m[0]}" in self.decls]
        lines = rp.plan_update(self.decls, new_decls, removed, added, keys)
        self.decls = new_decls
        return lines

    # --- I/O ------------------------------------------------------------------------------------
    def _apply(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self.nft.run(lines)
            self._applied()
        except NftError as e:
            log.error("policy transaction failed, rebuilding the table: %s", e)
            self.rebuild()

    def rebuild(self) -> None:
        """The whole table from memory in one transaction (start, and recovery)."""
        with self.lock:
            members = list(self.counts)
            self.nft.run(rp.render_table(self.decls, members))
            self.rebuilds += 1
            self._applied()

    def _applied(self) -> None:
        self.transactions += 1
        self.applied_policies = len(self.index.policies)
        self.last_applied = time.time()

    def pending_events(self) -> int:
        """Watch events not yet in the kernel (queued, or taken in by a sync still running)."""
        with self.pending_lock:
            queued = len(self.pending)
        return queued + (1 if self.wake.is_set() or self.dirty_pods or self.dirty_policies else 0)

    def sync(self) -> None:
        with self.lock:
            t0 = time.monotonic()
            lines = self._plan_locked()
            self._apply(lines)
            if lines:
                log.debug("policy sync: %d commands in %.1f ms", len(lines), (time.monotonic() - t0) * 1000)

    def _run(self) -> None:
        while not self.stopping.is_set():
            if self.wake.wait(1.0):
                time.sleep(DEBOUNCE)
            if self.stopping.is_set():
                return
            self.wake.clear()
            try:
                self.sync()
            except Exception:  # keep enforcing; the next event retries
                log.exception("policy sync failed")
                with self.lock:
                    self.dirty_all = True
                time.sleep(0.5)

    # --- the CNI's hooks ------------------------------------------------------------------------
    def _fetch(self, path: str) -> dict | None:
        """One object from the API as JSON; None when it does not exist."""
        method, url, headers, body, post = self.api.param_serialize(
            "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        resp = self.api.call_api(method, url, headers, body, post, _request_timeout=FETCH_TIMEOUT)
        raw = resp.response
        try:
            data = raw.read()
        finally:
            raw.release_conn()
        if resp.status == 404:
            return None
        if resp.status >= 400:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
        return json.loads(data)

    def pod_added(self, namespace: str, name: str, ip: str, container_id: str) -> None:
        """Make the pod's IP a member of every set it belongs in, in the kernel, now. A pod the
        API does not know (yet) fails the ADD (the kubelet retries): its labels decide its
        isolation. An attachment without K8S_POD_* arguments is no pod: no policy selects it."""
        if not namespace or not name:
            namespace, name = "", f"cni:{container_id}"
        key = (namespace, name)
        with self.lock:
            self._drain_locked()
            known = key in self.pods or not namespace
            ns_known = namespace in self.namespaces or not namespace
        obj = None if known else self._fetch(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if not known and obj is None:
            raise RuntimeError(f"pod {namespace}/{name} is not in the API (yet)")
        ns_obj = None if ns_known else self._fetch(f"/api/v1/namespaces/{namespace}")
        with self.lock:
            if obj is not None and key not in self.pods:
                pod = pm.parse_pod(obj)        # raises on a broken pod: ADD is retried
                self.pods[key] = pod
                self._by_ns = None
            if ns_obj is not None and namespace not in self.namespaces:
                self.namespaces[namespace] = pm.parse_namespace(ns_obj)
                self.candidates.pop(namespace, None)
            pod = self.pods.get(key) or pm.Pod(namespace, name, "", self.node_name)
            self.cni_pods[container_id] = (key, ip)
            self.cni_ips[key] = ip
            self.gone.pop(key, None)
            if key not in self.pods:
                self._by_ns = None
            self.pods[key] = replace(pod, ip=ip, node=self.node_name, terminal=False)
            self.dirty_pods.add(key)
            lines = self._plan_locked()
            try:
                self.nft.run(lines)
                self._applied()
            except NftError:
                log.exception("pod_added %s/%s: transaction failed; rebuilding", namespace, name)
                self.rebuild()                   # raises if even that fails: ADD fails, retried
        self.forget_flows(ip)

    def forget_flows(self, ip: str) -> None:
        """Delete conntrack entries of an address that a new pod now holds. An entry that saw a
        reply from the address's previous pod is "established": without this, the new pod
        would get that flow's packets past its policies (ct state established is accepted
        first). Entries to the pod (also DNATed: reply source) and from it."""
        procs = []
        for flag in ("--reply-src", "--orig-src"):          # both at once: ADD waits for them
            argv = ["conntrack", "-D", flag, ip]
            try:
                kw = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
                if self.netns is not None:
                    kw["preexec_fn"] = lab_netns.preexec(self.netns)
                procs.append((flag, subprocess.Popen(argv, **kw)))
            except OSError as e:
                log.warning("conntrack cleanup of %s: %s", ip, e)
        for flag, proc in procs:
            try:
                # exit 1 ("0 flow entries have been deleted") is the usual case of nothing to do
                if proc.wait(timeout=5) == 0:
                    log.info("conntrack: removed old flows of %s (%s)", ip, flag)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                log.warning("conntrack cleanup of %s (%s) timed out", ip, flag)

    def pod_deleted(self, container_id: str) -> None:
        with self.lock:
            entry = self.cni_pods.pop(container_id, None)
            if entry is None:
                return
            key, ip = entry
            if self.cni_ips.get(key) == ip:
                del self.cni_ips[key]
            self.gone[key] = ip
            pod = self.pods.get(key)
            if pod is not None and pod.ip == ip:
                # its sandbox is gone: the address may go to another pod, whatever the API says
                self.pods[key] = replace(pod, ip="")
            self.dirty_pods.add(key)
            self._apply(self._plan_locked())

    # --- observability --------------------------------------------------------------------------
    def policy_of(self, pid: str) -> str:
        return self.names.get(pid) or f"?/{pid}"

    def read_counters(self) -> dict[tuple[str, str, str, str], int]:
        """(namespace, policy, direction, "ok"|"drop") -> packets, from our named counters.
        Listing 2,000 counters takes a while: it goes through a context of its own (a scrape
        must not hold up the sync's transactions) and is reused for COUNTER_MAX_AGE."""
        now = time.monotonic()
        if now - self._counters[0] < COUNTER_MAX_AGE:
            return self._counters[1]
        if self._reader is None:
            self._reader = Nft(self.netns) if self.netns is not None else Nft()
        out = {}
        # "list table" reads only this table ("list counters" fills nft's whole cache: every
        # element of the service proxy's maps, ~4 s and ~240 MB at 30k Services)
        for item in self._reader.list(f"table {rp.T}"):
            c = item.get("counter")
            if not c:
                continue
            parts = c["name"].rsplit("_", 2)
            if len(parts) != 3:
                continue
            ns, _, name = self.policy_of(parts[0]).partition("/")
            out[(ns, name, "ingress" if parts[1] == "in" else "egress", parts[2])] = c.get("packets", 0)
        self._counters = (time.monotonic(), out)
        return out

    def _read_nflog(self) -> None:
        sock = self._nflog
        while not self.stopping.is_set() and sock is not None:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for prefix, payload in parse_nflog(data):
                which = rp.parse_log_prefix(prefix)
                if which is None:
                    continue
                direction, pid = which
                pkt = parse_ipv4(payload)
                self.denials_logged += 1
                log.warning("denied %s by %s: %s", "ingress" if direction == "in" else "egress",
                            self.policy_of(pid), pkt or "(not IPv4)")

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
        try:
            self._nflog = open_nflog(rp.NFLOG_GROUP)
        except OSError as e:
            log.warning("no nflog group %d (%s): denied connections are counted, not logged",
                        rp.NFLOG_GROUP, e)
        for target, name in ((self._run, "policy sync"), (self._read_nflog, "policy nflog")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._collector = register_metrics(self)
        log.info("NetworkPolicy: %d policies, %d pods, %d namespaces", len(self.policies),
                 len(self.pods), len(self.namespaces))
        return self

    def stop(self) -> None:
        """Stop watching; the table stays (pods stay protected while the agent restarts)."""
        self.stopping.set()
        self.wake.set()
        for inf in self.informers:
            inf.stop()
        if self._nflog is not None:
            self._nflog.close()
        for t in self._threads:
            t.join(3)
        if self._collector is not None:
            from prometheus_client import REGISTRY
            REGISTRY.unregister(self._collector)
            self._collector = None


def start(api, cfg) -> PolicyController:
    """The agent's entry point (proxy/agent.py: start_component)."""
    return PolicyController(api, cfg.node_name, cfg.pod_cidr).start()


# ---- metrics ---------------------------------------------------------------------------------------

def register_metrics(ctl: PolicyController):
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self):
            drops = CounterMetricFamily("kubeweft_networkpolicy_drops", "packets denied, by the policy "
                                        "that isolated the pod", labels=["namespace", "policy", "direction"])
            allowed = CounterMetricFamily("kubeweft_networkpolicy_allowed", "new connections' packets "
                                          "allowed by a policy's rules", labels=["namespace", "policy", "direction"])
            try:
                counters = ctl.read_counters()
            except Exception as e:  # noqa: BLE001 - a scrape must not take the agent down
                log.warning("reading policy counters: %s", e)
                counters = {}
            for (ns, name, direction, what), packets in sorted(counters.items()):
                (drops if what == "drop" else allowed).add_metric([ns, name, direction], packets)
            yield drops
            yield allowed
            yield GaugeMetricFamily("kubeweft_networkpolicy_policies_applied", "policies in the "
                                    "table as of the last transaction", value=ctl.applied_policies)
            yield GaugeMetricFamily("kubeweft_networkpolicy_last_applied_timestamp_seconds",
                                    "wall clock of the last policy transaction", value=ctl.last_applied)
            yield GaugeMetricFamily("kubeweft_networkpolicy_last_event_timestamp_seconds",
                                    "wall clock of the last watch event received", value=ctl.last_event)
            yield GaugeMetricFamily("kubeweft_networkpolicy_pending_events", "watch events not yet "
                                    "in the kernel", value=ctl.pending_events())

    collector = Collector()
    REGISTRY.register(collector)
    return collector


# ---- nflog over netlink (no library here speaks it; framing from proxy/nfnetlink.py) --------

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE = 1, 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD, NFULA_PREFIX = 9, 10


def open_nflog(group: int) -> socket.socket:
    """A netlink socket bound to nflog `group` in this thread's netns, copying 128 bytes."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.settimeout(2.0)
        for seq, attrs in enumerate((nl.attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND)),
                                     nl.attr(NFULA_CFG_MODE, struct.pack(">IBB", 128, NFULNL_COPY_PACKET, 0))),
                                    start=1):
            sock.send(nl.message((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, nl.NLM_F_REQUEST | nl.NLM_F_ACK,
                                 seq, socket.AF_UNSPEC, group, attrs))
            for mtype, _, _, payload in nl.iter_messages(sock.recv(4096)):
                if mtype == nl.NLMSG_ERROR:
                    err, _ = nl.decode_error(payload)
                    if err:
                        raise OSError(err, f"nflog config: {errno.errorcode.get(err, err)}")
        sock.settimeout(1.0)
        return sock
    except BaseException:
        sock.close()
        raise


def parse_nflog(data: bytes) -> list[tuple[str, bytes]]:
    """Netlink datagram -> [(prefix, packet bytes)] of its nflog packet messages. Pure."""
    out = []
    try:
        for mtype, _, _, payload in nl.iter_messages(data):
            if mtype != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                continue
            prefix, packet = "", b""
            for kind, value in nl.attrs(payload[4:]):          # after the nfgenmsg
                if kind == NFULA_PREFIX:
                    prefix = value.rstrip(b"\0").decode("ascii", "replace")
                elif kind == NFULA_PAYLOAD:
                    packet = value
            out.append((prefix, packet))
    except ValueError:              # a malformed message: keep what came before it
        pass
    return out


def parse_ipv4(pkt: bytes) -> str | None:
    """'tcp 10.244.1.2:40000 -> 10.244.2.3:80' from an IPv4 packet's first bytes. Pure."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    proto = pkt[9]
    src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
    name = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp"}.get(proto, f"proto {proto}")
    if proto in (6, 17, 132) and len(pkt) >= ihl + 4:
        sport, dport = struct.unpack_from(">HH", pkt, ihl)
        return f"{name} {src}:{sport} -> {dst}:{dport}"
    return f"{name} {src} -> {dst}"
