"""The NetworkPolicy planner: what `table inet kubeweft-policy` must hold, and the nft commands
that take the kernel from what it holds to that. Pure: Pods, Namespaces and NetworkPolicies come
in as policy_model values, commands go out as text; no I/O, no clock, no threads (the
controller, proxy/policy_controller.py, holds a lock around every call).

State (docs/architecture.md, the policy controller): the structure last planned (sets, counters,
chains) and, per pod, the (set, element) pairs it contributes, with a reference count per pair
(two pods may briefly claim one IP). A plan diffs against that state and advances it at once;
when the kernel refuses a plan, the controller sends `table()`: the whole table from this state.

Cost: a change of policies evaluates only those policies, and only for the pods in their sets
(pid_pods) or matched by their new selectors (each tested on the pods of the namespaces it
covers that carry its matchLabels: proxy/pod_label_index.py), re-renders
only their decls and their namespace's dispatch chain, and compares only those decls. A pod or
namespace change re-plans only its pods.

A pod the CNI wired but the API does not show with an address yet gets the addresses the CNI
gave (the kubelet reports podIPs only after ADD returns); after DEL, they are free whatever the
API still shows. Addresses of this node's pod CIDRs that no pod holds are in no set. A pod's
addresses of a family the node has no pod range of are left out (the table has no sets for it).
"""
from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from . import element_codec as codec
from . import policy_model as pm
from . import render_policy as rp
from .pod_label_index import PodLabelIndex

PodKey = tuple[str, str]
ElementOp = tuple[str, str, codec.ElementType, list[str]]     # verb, set, its type, elements
Plan = tuple[list[str], list[ElementOp], list[str]]           # nft before, netlink, nft after
# a plan with structure and at most this many elements stays one nft transaction: nft parses an
# element in ~10 us, so 2,000 cost about what a second transaction's cache fill does (the
# service proxy's threshold, proxy/nft_transaction.py)
TEXT_MAX = 2000


def element_ops(decls, removed, added) -> list[ElementOp] | None:
    """The element changes as netlink operations (deletes first, one per set and verb); None
    when a set's type is one the codec does not write."""
    ops: list[ElementOp] = []
    for verb, members in (("delete", removed), ("add", added)):
        by_set: dict[str, list[str]] = {}
        for name, element in members:
            by_set.setdefault(name, []).append(element)
        for name, elements in sorted(by_set.items()):
            decl = decls.get(f"set {name}")
            etype = _codec_type(decl.type) if decl is not None else None
            if etype is None:
                return None
            ops.append((verb, name, etype, elements))
    return ops


@functools.lru_cache(maxsize=64)
def _codec_type(set_type: str) -> codec.ElementType | None:
    return codec.element_type(f"type {set_type}")


class PolicyPlanner:
    def __init__(self, node_name: str, pod_cidr: str | Iterable[str]):
        """pod_cidr: this node's pod ranges, one per IP family ("a,b" or a list)."""
        self.node_name = node_name
        cidrs = pod_cidr.split(",") if isinstance(pod_cidr, str) else list(pod_cidr)
        self.pod_nets = [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]
        self.pod_cidrs = tuple(str(n) for n in self.pod_nets)
        self.families = rp.families_of(self.pod_cidrs)
        self.policies: dict[str, pm.Policy] = {}
        self.pods: dict[PodKey, pm.Pod] = {}
        self.namespaces: dict[str, pm.Namespace] = {}
        self.cni_pods: dict[str, tuple[PodKey, tuple[str, ...]]] = {}  # container ID -> (pod, ips)
        self.cni_ips: dict[PodKey, tuple[str, ...]] = {}      # pods this node's CNI wired
        self.gone: dict[PodKey, tuple[str, ...]] = {}         # IPs of sandboxes DEL removed
        self.names: dict[str, str] = {}                       # policy id -> namespace/name
        self.index = rp.PolicyIndex()
        self.candidates: dict[str, tuple] = {}                # namespace -> candidate peer sets
        self.decls: dict[str, rp.Decl] = {}                   # structure planned
        self.members: dict[PodKey, frozenset[rp.Member]] = {} # per pod, planned
        self.counts: Counter = Counter()                      # (set, element) -> pods claiming it
        self.rendered: dict[str, tuple[pm.Policy, dict[str, rp.Decl]]] = {}  # per policy id
        self._index_memo: dict = {}                           # rp.index_policies' cache
        self.labels = PodLabelIndex()                         # self.pods by namespace and label
        self.pid_pods: dict[str, set[PodKey]] = {}            # policy id -> pods in its sets
        self.dirty_pods: set[PodKey] = set()
        self.dirty_policies = True
        self.dirty_all = True
        self.changed: set[str] = set()                        # ids of policies changed since

    # --- what the watches say -----------------------------------------------------------------
    def put_policy(self, key: str, policy: pm.Policy | None) -> None:
        """Policy `key` (namespace/name) is now `policy`; None: it is gone (or unusable)."""
        if policy is None:
            self.policies.pop(key, None)
        else:
            self.policies[policy.key] = policy
        self.changed.add(rp.policy_id(key))
        self.dirty_policies = True

    def put_namespace(self, name: str, namespace: pm.Namespace | None) -> None:
        if namespace is None:
            self.namespaces.pop(name, None)
        else:
            self.namespaces[namespace.name] = namespace
        self.candidates.pop(name, None)
        self.dirty_pods.update(k for k in self.pods if k[0] == name)

    def put_pod(self, key: PodKey, pod: pm.Pod | None) -> None:
        if pod is None:
            self._drop(key)
            self.gone.pop(key, None)
        else:
            self._store(key, self._with_cni_ip(pod))
        self.dirty_pods.add(key)

    def _store(self, key: PodKey, pod: pm.Pod) -> None:
        old = self.pods.get(key)
        self.pods[key] = pod
        self.labels.put(key, None if old is None else old.labels, pod.labels)

    def _drop(self, key: PodKey) -> None:
        old = self.pods.pop(key, None)
        if old is not None:
            self.labels.put(key, old.labels, None)

    def set_policies(self, policies: Iterable[pm.Policy]) -> None:
        """A full list: these and no others."""
        self.policies = {p.key: p for p in policies}
        self._relisted()

    def set_namespaces(self, namespaces: Iterable[pm.Namespace]) -> None:
        self.namespaces = {n.name: n for n in namespaces}
        self.candidates.clear()
        self._relisted()

    def set_pods(self, pods: Iterable[pm.Pod]) -> None:
        self.pods = {}
        self.labels = PodLabelIndex()
        for p in pods:
            self._store(p.key, self._with_cni_ip(p))
        self._relisted()

    def _relisted(self) -> None:
        self.dirty_all = True
        self.dirty_policies = True

    def knows(self, key: PodKey) -> tuple[bool, bool]:
        """(the pod, its namespace) are known; an attachment without a namespace is no pod and
        needs neither."""
        return key in self.pods or not key[0], key[0] in self.namespaces or not key[0]

    # --- what the CNI says ----------------------------------------------------------------------
    def add_cni_pod(self, key: PodKey, ips: Iterable[str], container_id: str, pod: pm.Pod | None = None,
                    namespace: pm.Namespace | None = None) -> None:
        """The CNI gave `ips` (one per family) to pod `key` (its sandbox `container_id`). pod,
        namespace: as read from the API when the watches had not delivered them yet."""
        ips = self._policed(str(ipaddress.ip_address(ip)) for ip in ips)
        if pod is not None and key not in self.pods:
            self._store(key, pod)
        if namespace is not None and key[0] not in self.namespaces:
            self.namespaces[key[0]] = namespace
            self.candidates.pop(key[0], None)
        known = self.pods.get(key) or pm.Pod(key[0], key[1], (), self.node_name)
        self.cni_pods[container_id] = (key, ips)
        self.cni_ips[key] = ips
        self.gone.pop(key, None)
        self._store(key, replace(known, ips=ips, node=self.node_name, terminal=False))
        self.dirty_pods.add(key)

    def remove_cni_pod(self, container_id: str) -> bool:
        """The CNI removed sandbox `container_id`; False when it gave it no address."""
        entry = self.cni_pods.pop(container_id, None)
        if entry is None:
            return False
        key, ips = entry
        if self.cni_ips.get(key) == ips:
            del self.cni_ips[key]
        self.gone[key] = ips
        pod = self.pods.get(key)
        if pod is not None and set(pod.ips) & set(ips):
            # its sandbox is gone: the addresses may go to another pod, whatever the API says
            self._store(key, replace(pod, ips=tuple(ip for ip in pod.ips if ip not in ips)))
        self.dirty_pods.add(key)
        return True

    # --- what the controller asks ---------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        """Something changed that no plan has taken in."""
        return bool(self.dirty_pods) or self.dirty_policies or self.dirty_all

    def replan_all(self) -> None:
        """The next plan evaluates every pod (after a sync failed half-way)."""
        self.dirty_all = True

    def policy_of(self, pid: str) -> str:
        """namespace/name of a policy id (as in counter names and log prefixes)."""
        return self.names.get(pid) or f"?/{pid}"

    def table(self) -> list[str]:
        """The whole table as planned, replacing whatever the kernel holds, in one transaction."""
        return rp.render_table(self.decls, list(self.counts))

    def _policed(self, ips: Iterable[str]) -> tuple[str, ...]:
        """The addresses of the families this node's table has sets for."""
        return tuple(ip for ip in ips if rp.version_of(ip) in self.families)

    def _with_cni_ip(self, pod: pm.Pod) -> pm.Pod:
        """The kubelet reports podIPs only after ADD returns: until then, the IPs the CNI gave.
        After DEL the API may still show the old podIPs (terminating): those addresses are free."""
        ips = self._policed(pod.ips)
        gone = self.gone.get(pod.key)
        if gone and set(ips) & set(gone):
            return replace(pod, ips=tuple(ip for ip in ips if ip not in gone))
        cni = self.cni_ips.get(pod.key)
        if cni and not ips:
            return replace(pod, ips=cni, node=pod.node or self.node_name)
        return pod if ips == pod.ips else replace(pod, ips=ips)

    # --- planning --------------------------------------------------------------------------------
    def _is_local(self, pod: pm.Pod) -> bool:
        if pod.key in self.cni_ips:
            return True
        if pod.node:
            return pod.node == self.node_name
        return any(ipaddress.ip_address(ip) in net for ip in pod.ips for net in self.pod_nets)

    def _namespace(self, name: str) -> pm.Namespace:
        return self.namespaces.get(name) or pm.Namespace(name, frozenset({(pm.NAME_LABEL, name)}))

    def _plan_pod(self, key: PodKey) -> frozenset[rp.Member]:
        """The pod's members, every policy evaluated."""
        pod = self.pods.get(key)
        if pod is None:
            return frozenset()
        cands = self.candidates.get(pod.namespace)
        ns = self._namespace(pod.namespace)
        if cands is None:
            cands = self.candidates[pod.namespace] = rp.candidate_peer_sets(self.index, ns)
        return rp.plan_pod_members(self.index, pod, ns, self._is_local(pod), cands)

    def _diff_members(self, keys) -> tuple[list, list]:
        """Update per-pod members and counts for `keys`; the elements to delete and to add."""
        removed: list[rp.Member] = []
        added: list[rp.Member] = []
        for key in keys:
            new = self._plan_pod(key)
            old = self.members.get(key, frozenset())
            if new != old:
                self._commit(key, new, old - new, new - old, removed, added)
        return removed, added

    def _diff_changed(self, keys, changed: frozenset[str], matched: dict[PodKey, set[str]]) -> tuple[list, list]:
        """_diff_members after only the policies `changed` changed, for pods whose own state did
        not change since their last plan: each pod's members in those policies' sets are
        `matched` (by pod), and nothing else of it is evaluated."""
        removed: list[rp.Member] = []
        added: list[rp.Member] = []
        for key in keys:
            pod = self.pods.get(key)
            old = self.members.get(key, frozenset())
            if pod is None:
                gone, came = old, frozenset()
            else:
                gone, came = rp.plan_pod_members_change(self.index, pod, old, changed, matched.get(key, ()))
            if gone or came:
                self._commit(key, (old - gone) | came, gone, came, removed, added)
        return removed, added

    def _commit(self, key: PodKey, new: frozenset[rp.Member], gone, came, removed: list, added: list) -> None:
        """Pod `key`'s members are now `new` (`gone` left, `came` joined): its reference counts
        and policy index follow; the elements whose count fell to 0 go to `removed`, those
        that rose from 0 to `added`."""
        new_pids = {s[:13] for s, _ in new if s[0] == "p"}
        for pid in {s[:13] for s, _ in gone if s[0] == "p"} - new_pids:
            pods = self.pid_pods.get(pid)
            if pods is not None:
                pods.discard(key)
                if not pods:
                    del self.pid_pods[pid]
        for pid in {s[:13] for s, _ in came if s[0] == "p"}:
            self.pid_pods.setdefault(pid, set()).add(key)
        for m in gone:
            self.counts[m] -= 1
            if self.counts[m] <= 0:
                del self.counts[m]
                removed.append(m)
        for m in came:
            self.counts[m] += 1
            if self.counts[m] == 1:
                added.append(m)
        if new:
            self.members[key] = new
        else:
            self.members.pop(key, None)

    def _changed_matches(self, changed: frozenset[str]) -> dict[PodKey, set[str]]:
        """The sets of the `changed` policies (selections and peer sets) each pod is in now:
        each selector tested only on the pods that carry its matchLabels (PodLabelIndex)."""
        hits: dict[PodKey, set[str]] = {}

        def take(keys, name: str, selector: pm.Selector | None, local: bool = False) -> None:
            for key in keys:
                pod = self.pods[key]
                if not pod.ips or pod.host_network or pod.terminal:
                    continue
                if (selector is None or selector.matches(pod.labels)) and (not local or self._is_local(pod)):
                    hits.setdefault(key, set()).add(name)

        for pid, pol in self.index.policies:
            if pid in changed:
                take(self.labels.candidates(pol.namespace, pol.pod_selector), f"{pid}_sel",
                     pol.pod_selector, local=True)
        peer_sets = [ps for sets in self.index.local_peer_sets.values() for ps in sets if ps.name[:13] in changed]
        peer_sets += [ps for ps in self.index.ns_peer_sets if ps.name[:13] in changed]
        ns_labels = {ns: self._namespace(ns).labels for ns in self.labels.namespaces()}
        for ps in peer_sets:
            for p in ps.peers:
                if p.namespace_selector is None:
                    namespaces = [ps.namespace]
                else:
                    namespaces = [ns for ns, labels in ns_labels.items() if p.namespace_selector.matches(labels)]
                for ns in namespaces:
                    take(self.labels.candidates(ns, p.pod_selector), ps.name, p.pod_selector)
        return hits

    def _render_decls(self, changed: frozenset[str] | None) -> tuple[dict[str, rp.Decl], set[str] | None]:
        """The whole structure, each policy's part rendered again only when it changed; and the
        keys that may differ from what is applied (None: any)."""
        decls: dict[str, rp.Decl] = {}
        for d in rp.render_fixed_sets(self.index, self.families):
            decls[rp.decl_key(d)] = d
        keys: set[str] = set(decls)
        rendered: dict[str, tuple[pm.Policy, dict[str, rp.Decl]]] = {}
        for pid, pol in self.index.policies:
            have = self.rendered.get(pid)
            if have is None or have[0] is not pol:
                have = (pol, {rp.decl_key(d): d for d in rp.render_policy(pid, pol, self.families)})
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
        for d in rp.render_dispatch(self.index, self.pod_cidrs, self.decls,
                                    None if changed is None else touched):
            decls[rp.decl_key(d)] = d
            keys.add(rp.decl_key(d))
        # a namespace's dispatch chains that go with its last policy
        keys.update(f"chain {rp.namespace_chain(ns, d)}" for ns in touched for d in ("in", "eg"))
        return decls, None if changed is None else keys

    def plan(self) -> list[str]:
        """The commands that take the table from the last plan to the present state; the state
        advances to it at once (the controller rebuilds from it when the kernel refuses them)."""
        old, new, removed, added, keys = self._advance()
        return rp.plan_update(old, new, removed, added, keys)

    def plan_split(self) -> Plan:
        """What plan() says, cut for the kernel: (nft commands first, element changes for
        netlink next, nft commands last). Elements go over netlink because libnftables fills
        its cache of the table's sets, chains and counters before it parses a command: with
        1,000 policies over 5,000 pods a label change (29 element lines) cost 40-120 ms in nft,
        under 1 ms over netlink. A plan with structure and at most TEXT_MAX elements stays one
        nft transaction (atomic, and its elements cost nft ~10 us each, against a second cache
        fill for the structure that goes). A larger one sends first the sets and chains that
        are new or refilled (a new policy's sets are empty, so it selects nothing yet), then the
        elements in one transaction, then what goes (no longer referenced). Sets the codec
        cannot write keep the one text transaction."""
        old, new, removed, added, keys = self._advance()
        pre, post, gone_sets = rp.plan_structure(old, new, keys)
        removed = [m for m in removed if m[0] not in gone_sets]
        ops = element_ops(new, removed, added)
        if ops is None or (pre or post) and len(removed) + len(added) <= TEXT_MAX:
            return rp.plan_update(old, new, removed, added, keys), [], []
        return pre, ops, post

    def _advance(self) -> tuple[dict, dict, list[rp.Member], list[rp.Member], set[str] | None]:
        """(decls before, decls now, elements removed, elements added, the decl keys that may
        differ); the planner's state is advanced to now."""
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
            new_decls, keys = self._render_decls(changed if few else None)
            if few:
                # only some policies changed: evaluate just those, and only for the pods they
                # may affect; the per-namespace candidate caches lose and gain their peer sets
                ns_sets = tuple(ps for ps in self.index.ns_peer_sets if ps.name[:13] in changed)
                for ns in list(self.candidates):
                    self.candidates[ns] = tuple(ps for ps in self.candidates[ns] if ps.name[:13] not in changed) \
                        + tuple(ps for ps in self.index.local_peer_sets.get(ns, ()) if ps.name[:13] in changed) \
                        + rp.filter_candidates(ns_sets, self._namespace(ns))
                matched = self._changed_matches(changed)
                affected = set(matched).union(*(self.pid_pods.get(pid, ()) for pid in changed))
                removed, added = self._diff_changed(affected - self.dirty_pods, changed, matched)
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
        old_decls, self.decls = self.decls, new_decls
        return old_decls, new_decls, removed, added, keys

