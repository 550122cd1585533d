"""The EndpointSlice controller: discovery.k8s.io/v1 slices for every Service with a selector.

Behaves as kube-controller-manager's: a set of slices per address type the Service has (its
spec.ipFamilies: IPv4, IPv6 or both), each endpoint carrying the pod's address of that family
(status.podIPs, else status.podIP); one endpoint per matching pod with an IP (terminating pods
included, with their conditions), ports resolved per pod (named targetPorts looked up in that
pod's containers, so pods that resolve differently land in different slices), at most 100
endpoints per slice, slices updated in place with as few writes as possible, an empty placeholder
slice for a selector Service without endpoints, zone hints for topology-mode Auto, and zone
(and node, for PreferSameNode) hints for trafficDistribution. Services without a selector are left alone.

The plan (`plan_endpoint_slices`) is pure: frozen Service and Pod views plus the existing slices
in, the slices to create, update and delete out. The controller keeps label indexes from
namespace/label to Services and Pods, so a change to one Pod or Service reconciles only the
Services it touches, also with 30k Services.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field

from ..admission.ipfamilies import IPV4, IPV6
from ..resources import NODES, PODS, SERVICES, SLICES
from .loop import Reconciler

log = logging.getLogger("kubeweft.lab.controllers.endpointslices")


MANAGED_BY = "endpointslice-controller.k8s.io"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
LABEL_HEADLESS = "service.kubernetes.io/headless"
LABEL_ZONE = "topology.kubernetes.io/zone"
ANNOTATION_TOPOLOGY = "service.kubernetes.io/topology-mode"
RESERVED_LABELS = (LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS)
MAX_ENDPOINTS = 100
HINTS_AUTO, HINTS_ZONE, HINTS_NODE = "auto", "zone", "node"
HINTS_OF_DISTRIBUTION = {"PreferClose": HINTS_ZONE, "PreferSameZone": HINTS_ZONE, "PreferSameNode": HINTS_NODE}

Labels = tuple[tuple[str, str], ...]


# --- frozen views, made at the watch edge ----------------------------------------------------

@dataclass(frozen=True)
class ServicePortView:
    name: str
    protocol: str
    port: int
    target: int | str
    app_protocol: str | None = None


@dataclass(frozen=True)
class ServiceView:
    namespace: str
    name: str
    uid: str
    labels: Labels = ()
    selector: Labels = ()          # empty: no selector, the controller leaves the Service alone
    type: str = "ClusterIP"
    headless: bool = False
    ports: tuple[ServicePortView, ...] = ()
    publish_not_ready: bool = False
    hints: str = ""                # HINTS_AUTO (topology-mode Auto), HINTS_ZONE, HINTS_NODE or none
    address_types: tuple[str, ...] = (IPV4,)    # the slices' addressTypes, one set of slices each

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def managed(self) -> bool:
        return bool(self.selector) and self.type != "ExternalName"


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    uid: str = ""
    labels: Labels = ()
    ips: tuple[str, ...] = ()      # status.podIPs (else podIP), primary first
    node: str = ""
    ready: bool = False
    terminating: bool = False
    terminal: bool = False
    hostname: str = ""
    subdomain: str = ""
    ports: tuple[tuple[str, str, int], ...] = ()      # (name, protocol, containerPort) of all containers

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def address(self, address_type: str) -> str:
        """The pod's address of this family, or ""."""
        want = ":" if address_type == IPV6 else "."
        return next((ip for ip in self.ips if want in ip), "")


def plan_address_types(spec: dict) -> tuple[str, ...]:
    """The address types a Service's slices carry: its ipFamilies; without them the family of
    its clusterIP; a headless Service without either gets both."""
    fams = tuple(f for f in spec.get("ipFamilies") or [] if f in (IPV4, IPV6))
    if fams:
        return fams
    ip = spec.get("clusterIP") or ""
    if ip and ip != "None":
        return (IPV6,) if ":" in ip else (IPV4,)
    return (IPV4, IPV6)


def parse_service(obj: dict) -> ServiceView:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    ann = meta.get("annotations") or {}
    ports = tuple(ServicePortView(p.get("name", ""), p.get("protocol", "TCP"), p.get("port", 0),
                                  p.get("targetPort", p.get("port", 0)), p.get("appProtocol"))
                  for p in spec.get("ports") or [])
    # the topology-mode annotation wins over trafficDistribution, as in the real controller
    hints = (HINTS_AUTO if ann.get(ANNOTATION_TOPOLOGY, "").lower() == "auto"
             else HINTS_OF_DISTRIBUTION.get(spec.get("trafficDistribution") or "", ""))
    return ServiceView(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""),
                       tuple(sorted((meta.get("labels") or {}).items())),
                       tuple(sorted((spec.get("selector") or {}).items())),
                       spec.get("type", "ClusterIP"), spec.get("clusterIP") == "None", ports,
                       bool(spec.get("publishNotReadyAddresses")), hints, plan_address_types(spec))


def _pod_ips(status: dict) -> tuple[str, ...]:
    ips = [p.get("ip", "") for p in status.get("podIPs") or []] or [status.get("podIP", "")]
    return tuple(ip for ip in ips if ip)


def parse_pod(obj: dict) -> PodView:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    ports = tuple((p.get("name", ""), p.get("protocol", "TCP"), p.get("containerPort", 0))
                  for c in spec.get("containers") or [] for p in c.get("ports") or [])
    return PodView(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""),
                   tuple(sorted((meta.get("labels") or {}).items())), _pod_ips(status),
                   spec.get("nodeName", ""), ready, bool(meta.get("deletionTimestamp")),
                   status.get("phase") in ("Succeeded", "Failed"),
                   spec.get("hostname", ""), spec.get("subdomain", ""), ports)


def selector_matches(selector: Labels, labels: Labels) -> bool:
    if not selector:
        return False
    have = dict(labels)
    return all(have.get(k) == v for k, v in selector)


# --- the plan --------------------------------------------------------------------------------

@dataclass
class SlicePlan:
    create: list[dict] = field(default_factory=list)
    update: list[dict] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def resolve_port(sp: ServicePortView, pod: PodView) -> int | None:
    """podutil.FindPort: a number is used as is; a name is looked up in the pod's containers."""
    if isinstance(sp.target, int):
        return sp.target
    return next((num for name, proto, num in pod.ports if name == sp.target and proto == sp.protocol), None)


def plan_endpoint_ports(svc: ServiceView, pod: PodView) -> list[dict]:
    out = []
    for sp in svc.ports:
        num = resolve_port(sp, pod)
        if num is None:
            continue                 # the real controller leaves the pod out of this port
        port = {"name": sp.name, "port": num, "protocol": sp.protocol}
        if sp.app_protocol:
            port["appProtocol"] = sp.app_protocol
        out.append(port)
    return out


def plan_endpoint(svc: ServiceView, pod: PodView, zones: dict[str, str], address: str) -> dict:
    serving = pod.ready
    ready = svc.publish_not_ready or (serving and not pod.terminating)
    ep: dict = {"addresses": [address],
                "conditions": {"ready": ready, "serving": serving, "terminating": pod.terminating},
                "targetRef": {"kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid}}
    if pod.hostname and pod.subdomain == svc.name:
        ep["hostname"] = pod.hostname
    if pod.node:
        ep["nodeName"] = pod.node
        if zones.get(pod.node):
            ep["zone"] = zones[pod.node]
    return ep


def plan_endpoints(svc: ServiceView, pods: list[PodView], zones: dict[str, str], address_type: str = IPV4
                   ) -> dict[tuple, tuple[list[dict], list[dict]]]:
    """Endpoints of one address type grouped by their resolved ports: {ports key: (ports,
    endpoints sorted by pod)}. A pod without an address of that family is left out."""
    groups: dict[tuple, tuple[list[dict], list[dict]]] = {}
    for pod in sorted(pods, key=lambda p: p.name):
        address = pod.address(address_type)
        if not address or pod.terminal or pod.namespace != svc.namespace:
            continue
        ports = plan_endpoint_ports(svc, pod)
        key = ports_key(ports)
        groups.setdefault(key, (ports, []))[1].append(plan_endpoint(svc, pod, zones, address))
    everything = [ep for _, eps in groups.values() for ep in eps]
    if svc.hints == HINTS_AUTO:
        # topology-mode Auto: hints only when every endpoint has a zone, else none at all
        if everything and all(ep.get("zone") for ep in everything):
            for ep in everything:
                ep["hints"] = {"forZones": [{"name": ep["zone"]}]}
    elif svc.hints:
        for ep in everything:
            plan_distribution_hints(ep, svc.hints == HINTS_NODE)
    return groups


def plan_distribution_hints(ep: dict, for_node: bool) -> None:
    """trafficDistribution's hints (the real controller's trafficdist): every ready endpoint is
    hinted for its own zone, and with PreferSameNode for its own node as well; a not-ready one
    gets none."""
    if not ep["conditions"]["ready"]:
        return
    hints = {}
    if ep.get("zone"):
        hints["forZones"] = [{"name": ep["zone"]}]
    if for_node and ep.get("nodeName"):
        hints["forNodes"] = [{"name": ep["nodeName"]}]
    if hints:
        ep["hints"] = hints


def ports_key(ports: list[dict]) -> tuple:
    return tuple((p.get("name", ""), p.get("protocol", "TCP"), p.get("port"), p.get("appProtocol"))
                 for p in ports)


def _endpoint_id(ep: dict) -> tuple:
    ref = ep.get("targetRef") or {}
    return tuple(ep.get("addresses") or ()), ref.get("name", "")


def plan_slice_meta(svc: ServiceView) -> tuple[dict, list[dict]]:
    labels = {k: v for k, v in svc.labels if k not in RESERVED_LABELS}
    labels[LABEL_SERVICE_NAME] = svc.name
    labels[LABEL_MANAGED_BY] = MANAGED_BY
    if svc.headless:
        labels[LABEL_HEADLESS] = ""
    owners = [{"apiVersion": "v1", "kind": "Service", "name": svc.name, "uid": svc.uid,
               "controller": True, "blockOwnerDeletion": True}]
    return labels, owners


def _new_slice(svc: ServiceView, labels: dict, owners: list[dict], ports: list[dict],
               endpoints: list[dict], address_type: str) -> dict:
    out = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"generateName": f"{svc.name}-", "namespace": svc.namespace,
                        "labels": dict(labels), "ownerReferences": [dict(o) for o in owners]},
           "addressType": address_type, "endpoints": endpoints}
    if ports:
        out["ports"] = ports
    return out


def _changed_slice(old: dict, labels: dict, owners: list[dict], endpoints: list[dict]) -> dict | None:
    """The updated slice, or None when it already says exactly this."""
    meta = old.get("metadata") or {}
    if (old.get("endpoints") or []) == endpoints and meta.get("labels") == labels \
            and meta.get("ownerReferences") == owners:
        return None
    new = dict(old)
    new["metadata"] = dict(meta, labels=dict(labels), ownerReferences=[dict(o) for o in owners])
    new["endpoints"] = endpoints
    return new


def by_name(slices: list[dict], name: str, address_type: str) -> dict | None:
    """The slice called `name` if it has this address type (addressType is immutable: a slice is
    recycled only for one of its own type)."""
    return next((s for s in slices if s["metadata"]["name"] == name and s.get("addressType") == address_type),
                None)


def plan_endpoint_slices(svc: ServiceView, pods: list[PodView], zones: dict[str, str],
                         existing: list[dict], max_endpoints: int = MAX_ENDPOINTS) -> SlicePlan:
    """What to create, update and delete so that the Service's slices list exactly its endpoints,
    one set of slices per address type of the Service; slices of any other type are deleted."""
    plan = SlicePlan()
    for s in sorted(existing, key=lambda s: s["metadata"]["name"]):
        if s.get("addressType") not in svc.address_types:
            plan.delete.append(s["metadata"]["name"])
    for address_type in svc.address_types:
        part = plan_address_type_slices(svc, pods, zones, [s for s in existing if s.get("addressType") == address_type],
                                        address_type, max_endpoints)
        plan.create += part.create
        plan.update += part.update
        plan.delete += part.delete
    return plan


def plan_address_type_slices(svc: ServiceView, pods: list[PodView], zones: dict[str, str], existing: list[dict],
                             address_type: str, max_endpoints: int = MAX_ENDPOINTS) -> SlicePlan:
    """The slices of one address type. Endpoints stay in the slice that holds them; new ones fill
    slices with room (those changing anyway first), then new slices; emptied slices are deleted
    (or recycled for new ones); no endpoints at all leaves one empty placeholder slice."""
    plan = SlicePlan()
    labels, owners = plan_slice_meta(svc)
    groups = plan_endpoints(svc, pods, zones, address_type)
    by_ports: dict[tuple, list[dict]] = collections.defaultdict(list)
    for s in sorted(existing, key=lambda s: s["metadata"]["name"]):
        by_ports[ports_key(s.get("ports") or [])].append(s)
    for key, (ports, endpoints) in groups.items():
        want = {_endpoint_id(ep): ep for ep in endpoints}
        placed: set[tuple] = set()
        slots: list[tuple[dict, list[dict]]] = []
        for s in by_ports.pop(key, []):
            kept = []
            for ep in s.get("endpoints") or []:
                i = _endpoint_id(ep)
                if i in want and i not in placed:
                    kept.append(want[i])
                    placed.add(i)
            slots.append((s, kept))
        rest = [ep for i, ep in want.items() if i not in placed]
        # fill slices that are written anyway before touching unchanged ones (fewer writes)
        for s, kept in sorted(slots, key=lambda sk: sk[1] == (sk[0].get("endpoints") or [])):
            room = max_endpoints - len(kept)
            if rest and room > 0 and kept:
                kept.extend(rest[:room])
                del rest[:room]
        for s, kept in slots:
            if not kept:
                plan.delete.append(s["metadata"]["name"])
            else:
                new = _changed_slice(s, labels, owners, kept)
                if new is not None:
                    plan.update.append(new)
        for i in range(0, len(rest), max_endpoints):
            plan.create.append(_new_slice(svc, labels, owners, ports, rest[i:i + max_endpoints], address_type))
    for slices in by_ports.values():
        plan.delete.extend(s["metadata"]["name"] for s in slices)
    if not groups and not plan.create:
        # a selector Service with no endpoints publishes one empty slice, kept if already there
        keep = next((s for s in existing if s["metadata"]["name"] in plan.delete
                     and not s.get("endpoints") and not s.get("ports")),
                    None)
        if keep is None:
            plan.create.append(_new_slice(svc, labels, owners, [], [], address_type))
        else:
            plan.delete.remove(keep["metadata"]["name"])
            new = _changed_slice(keep, labels, owners, [])
            if new is not None:
                plan.update.append(new)
    # as the real reconciler's finalize(): a slice about to be deleted is recycled for one about to
    # be created (an update instead of a delete plus a create)
    recyclable = [n for n in plan.delete if by_name(existing, n, address_type)]
    while plan.create and recyclable:
        name = recyclable.pop()
        plan.delete.remove(name)
        fresh, old = plan.create.pop(), by_name(existing, name, address_type)
        new = dict(old, metadata=dict(old["metadata"], labels=fresh["metadata"]["labels"],
                                      ownerReferences=fresh["metadata"]["ownerReferences"]),
                   addressType=address_type, endpoints=fresh["endpoints"])
        new.pop("ports", None)
        if "ports" in fresh:
            new["ports"] = fresh["ports"]
        plan.update.append(new)
    return plan


# --- the controller --------------------------------------------------------------------------

class EndpointSliceController(Reconciler):
    name = "endpointslice-controller"

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        self.services: dict[tuple[str, str], ServiceView] = {}
        self.pods: dict[tuple[str, str], PodView] = {}
        self.zones: dict[str, str] = {}
        self.slices: dict[tuple[str, str], dict[str, dict]] = collections.defaultdict(dict)
        # (namespace, label key, label value) -> keys of Services selecting / Pods carrying it
        self.svc_index: dict[tuple[str, str, str], set[tuple[str, str]]] = collections.defaultdict(set)
        self.pod_index: dict[tuple[str, str, str], set[tuple[str, str]]] = collections.defaultdict(set)

    # --- caches ---
    def prime(self) -> None:
        for node in self.store.list(NODES)[0]:
            self._set_zone(node)
        for obj in self.store.list(PODS)[0]:
            self._set_pod(parse_pod(obj))
        for obj in self.store.list(SLICES)[0]:
            self._set_slice(obj, present=True)
        for obj in self.store.list(SERVICES)[0]:
            view = parse_service(obj)
            self._set_service(view.key, view)
            if view.managed:
                self.mark(view.key)
        for key in self.slices:
            if key not in self.services:
                self.mark(key)                   # slices left behind by a Service deleted earlier

    def _set_zone(self, node: dict) -> bool:
        meta = node.get("metadata") or {}
        zone = (meta.get("labels") or {}).get(LABEL_ZONE, "")
        if self.zones.get(meta.get("name", ""), "") == zone:
            return False
        if zone:
            self.zones[meta["name"]] = zone
        else:
            self.zones.pop(meta["name"], None)
        return True

    def _set_pod(self, view: PodView | None, key: tuple[str, str] | None = None) -> None:
        key = view.key if view is not None else key
        old = self.pods.pop(key, None)
        if old is not None:
            _unindex(self.pod_index, old.namespace, old.labels, key)
        if view is not None:
            self.pods[key] = view
            for k, v in view.labels:
                self.pod_index[(view.namespace, k, v)].add(key)

    def _set_service(self, key: tuple[str, str], view: ServiceView | None) -> None:
        old = self.services.pop(key, None)
        if old is not None:
            _unindex(self.svc_index, old.namespace, old.selector, key)
        if view is not None:
            self.services[key] = view
            if view.managed:
                for k, v in view.selector:
                    self.svc_index[(view.namespace, k, v)].add(key)

    def _set_slice(self, obj: dict, present: bool) -> tuple[str, str] | None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY or not labels.get(LABEL_SERVICE_NAME):
            return None
        key = (meta.get("namespace", ""), labels[LABEL_SERVICE_NAME])
        if present:
            self.slices[key][meta["name"]] = obj
        else:
            self.slices[key].pop(meta["name"], None)
            if not self.slices[key]:
                del self.slices[key]
        return key

    def services_for(self, pod: PodView) -> set[tuple[str, str]]:
        """Services whose selector matches this pod's labels, found through the label index."""
        out: set[tuple[str, str]] = set()
        for k, v in pod.labels:
            for key in self.svc_index.get((pod.namespace, k, v), ()):
                if key not in out and selector_matches(self.services[key].selector, pod.labels):
                    out.add(key)
        return out

    def pods_for(self, svc: ServiceView) -> list[PodView]:
        sets = [self.pod_index.get((svc.namespace, k, v), set()) for k, v in svc.selector]
        if not sets:
            return []
        smallest = min(sets, key=len)
        return [self.pods[k] for k in smallest if selector_matches(svc.selector, self.pods[k].labels)]

    # --- events ---
    def on_event(self, ev) -> None:
        res = ev.resource
        if res is PODS:
            meta = ev.obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            old = self.pods.get(key)
            new = None if ev.type == "DELETED" else parse_pod(ev.obj)
            if old == new:
                return                       # heartbeat-like writes that change nothing we publish
            touched = (self.services_for(old) if old else set()) | (self.services_for(new) if new else set())
            self._set_pod(new, key)
            for k in touched:
                self.mark(k)
        elif res is SERVICES:
            meta = ev.obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            new = None if ev.type == "DELETED" else parse_service(ev.obj)
            old = self.services.get(key)
            if old == new:
                return
            self._set_service(key, new)
            if new is None or new.managed or (old is not None and old.managed and new.uid != old.uid):
                self.mark(key)
        elif res is SLICES:
            # forget the previous state first: a relabelled slice may have moved between Services
            old_key = self._set_slice(ev.old, present=False) if ev.old is not None else None
            key = self._set_slice(ev.obj, present=True) if ev.type != "DELETED" else None
            if not self.syncing:
                for k in {old_key, key} - {None}:
                    self.mark(k)             # a slice changed by someone else: put it right
        elif res is NODES:
            gone = {"metadata": {"name": ev.obj["metadata"]["name"]}}
            if self._set_zone(ev.obj if ev.type != "DELETED" else gone):
                name = ev.obj["metadata"]["name"]
                for pod in [p for p in self.pods.values() if p.node == name]:
                    for k in self.services_for(pod):
                        self.mark(k)

    # --- sync ---
    def sync(self, key: tuple[str, str]) -> None:
        svc = self.services.get(key)
        existing = list(self.slices.get(key, {}).values())
        if svc is None:
            # the Service is gone: its slices go with it (the garbage collector's job, done here)
            for s in existing:
                self.delete(SLICES, s["metadata"]["namespace"], s["metadata"]["name"])
            return
        if not svc.managed:
            return
        plan = plan_endpoint_slices(svc, self.pods_for(svc), self.zones, existing)
        for name in plan.delete:
            self.delete(SLICES, svc.namespace, name)
        for obj in plan.update:
            self.store.update(SLICES, obj)
            self.writes += 1
        for obj in plan.create:
            self.store.create(SLICES, obj)
            self.writes += 1


def _unindex(index: dict, namespace: str, pairs, key: tuple[str, str]) -> None:
    """Take key out of the index's (namespace, label, value) entries; an entry left empty goes."""
    for k, v in pairs:
        idx = index.get((namespace, k, v))
        if idx is not None:
            idx.discard(key)
            if not idx:
                del index[(namespace, k, v)]
