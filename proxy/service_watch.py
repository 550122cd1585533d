"""The watches of an agent's service proxiers: one informer per kind (Services, EndpointSlices,
this Node, ServiceCIDRs) for every IP family's proxier. Each object is parsed once into the
model at this edge and the same frozen value is handed to each family's proxier, which keeps
what concerns its family (kube-proxy's metaproxier fans each event out to its two family
proxiers the same way, and each proxier's change tracker ignores the other family's objects).

With an informer set per family, a dual-stack agent listed, decoded and kept every Service and
every EndpointSlice twice, and its API server served every list twice.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from . import metrics
from .api_get import open_get
from .informer import Informer, key_of
from .model import InvalidObject, invalid_scheduler, parse_endpoint_slice, parse_node, parse_service
from .scheduler import ANNOTATION as SCHEDULER_ANNOTATION
from .scheduler import SCHEDULERS
from .skip_log import SkipLog

if TYPE_CHECKING:
    from .service_proxy import ServiceProxy

log = logging.getLogger(__name__)

SVC_PATH = "/api/v1/services"
SLICE_PATH = "/apis/discovery.k8s.io/v1/endpointslices"
NODE_PATH = "/api/v1/nodes"
SERVICE_CIDR_PATH = "/apis/networking.k8s.io/v1/servicecidrs"
TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


class _NoCopy(dict):
    """A dict that keeps nothing."""

    def __setitem__(self, key, value) -> None:
        pass


class LeanInformer(Informer):
    """The informer without its copy of every object: the proxiers keep only parsed values, and
    30k Services with their EndpointSlices as raw JSON would cost ~200 MB. A watch event's
    object is parsed by on_event alone (the transform would parse it once more for nothing)."""

    keeps_objects = False

    @property
    def objects(self) -> dict:
        return _NoCopy()

    @objects.setter
    def objects(self, value) -> None:
        pass


def _trigger_time(obj: dict, default: float) -> float:
    ts = ((obj.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_ANNOTATION)
    if isinstance(ts, str):
        try:
            return datetime.fromisoformat(ts).timestamp()      # 3.11 reads the trailing Z
        except ValueError:
            pass
    return default


class ServiceWatch:
    def __init__(self, api, cfg, proxies: Sequence[ServiceProxy]):
        """cfg: the agent's node_name, scheduler (the default a bad annotation falls back to) and
        service_cidr (named in the log when no ServiceCIDRs are served). proxies: one per IP
        family, each handed every object through its take_* methods."""
        self.api = api
        self.node_name = cfg.node_name
        self.scheduler = cfg.scheduler
        self.service_cidr = cfg.service_cidr
        self.proxies = list(proxies)
        self.informers: list[Informer] = []
        self.cidr_informer: Informer | None = None     # ServiceCIDRs, when the API serves them
        self.stopping = threading.Event()
        self.skipped_services = SkipLog(log, "service")
        self.bad_schedulers = SkipLog(log, "the scheduler annotation of service")
        self.skipped_slices = SkipLog(log, "endpointslice")

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ServiceWatch:
        self.informers = [
            # lists decoded item by item into model values (transform): never 30k raw objects at once
            LeanInformer(self.api, SVC_PATH, on_event=self.on_service, on_sync=self.on_services,
                         name="services", transform=self.parse_service),
            LeanInformer(self.api, SLICE_PATH, on_event=self.on_slice, on_sync=self.on_slices,
                         name="endpointslices", transform=self.parse_slice),
            Informer(self.api, NODE_PATH, on_event=lambda _t, o: self.on_node(o),
                     on_sync=lambda objs: [self.on_node(o) for o in objs.values()],
                     params={"fieldSelector": f"metadata.name={self.node_name}"}, name="node"),
        ]
        for inf in self.informers:
            inf.start()
        threading.Thread(target=self.watch_service_cidrs, name="service-cidrs", daemon=True).start()
        return self

    def stop(self) -> None:
        """Ends every watch; a second call does nothing more."""
        self.stopping.set()
        for inf in [*self.informers, self.cidr_informer]:
            if inf is not None:
                inf.stop()

    def listed(self) -> bool:
        """The first lists are in: every proxier has the whole picture to sync from."""
        return bool(self.informers) and all(inf.synced.is_set() for inf in self.informers)

    # ---- Services -------------------------------------------------------------------------------
    def parse_service(self, obj: dict):
        bad = invalid_scheduler(obj)
        if bad is not None:      # one line per object and minute, however often it changes
            self.bad_schedulers.skipped(key_of(obj), f"{SCHEDULER_ANNOTATION} {bad!r} names no scheduler "
                                        f"({'|'.join(SCHEDULERS)}): the default {self.scheduler} applies")
        return self.skipped_services.parse(parse_service, key_of(obj), obj, InvalidObject)

    def on_service(self, etype: str, obj: dict) -> None:
        svc = None if etype == "DELETED" else self.parse_service(obj)
        changed = [p.take_service(key_of(obj), svc) for p in self.proxies]     # every proxier takes it
        if any(changed):
            metrics.SERVICE_CHANGES.inc()

    def on_services(self, objects: dict) -> None:
        """objects: key -> Service, or None for one we leave alone (parsed by the informer)."""
        for p in self.proxies:
            p.take_services(objects)

    # ---- EndpointSlices -------------------------------------------------------------------------
    def parse_slice(self, obj: dict):
        return self.skipped_slices.parse(parse_endpoint_slice, key_of(obj), obj, InvalidObject)

    def on_slice(self, etype: str, obj: dict) -> None:
        trigger = _trigger_time(obj, time.time())
        sl = None if etype == "DELETED" else self.parse_slice(obj)
        changed = [p.take_slice(key_of(obj), sl, trigger) for p in self.proxies]
        if any(changed):
            metrics.ENDPOINT_CHANGES.inc()

    def on_slices(self, objects: dict) -> None:
        """objects: key -> EndpointSlice, or None for one we cannot use (parsed by the informer)."""
        for p in self.proxies:
            p.take_slices(objects)

    # ---- this Node ------------------------------------------------------------------------------
    def on_node(self, obj: dict) -> None:
        try:
            node = parse_node(obj)
        except InvalidObject:
            return
        if node.name != self.node_name:
            return
        for p in self.proxies:
            p.take_node(node)

    # ---- ServiceCIDRs ---------------------------------------------------------------------------
    def watch_service_cidrs(self) -> None:
        """Watch the ServiceCIDR objects once the API server says it serves them: their ranges
        replace --service-cidr in the drop rule for unallocated service addresses. An API server
        without the kind (404), or a ServiceAccount not allowed to list it (403), leaves the flag
        in charge. Asked again every few seconds until the server gives one of those answers."""
        served = None
        while served is None and not self.stopping.is_set():
            served = self.service_cidrs_served()
            if served is None:
                self.stopping.wait(3.0)
        if not served or self.stopping.is_set():
            return
        inf = Informer(self.api, SERVICE_CIDR_PATH, name="servicecidrs",
                       on_event=lambda _t, _o: self.on_service_cidrs(inf.objects),
                       on_sync=self.on_service_cidrs)
        self.cidr_informer = inf.start()
        if self.stopping.is_set():
            inf.stop()

    def service_cidrs_served(self) -> bool | None:
        """True when this agent may list ServiceCIDRs, False when the API lacks the kind or
        forbids it, None when there is no telling yet (server away or failing)."""
        try:
            status, raw = open_get(self.api, SERVICE_CIDR_PATH, 5, [("limit", "1")])
            try:
                raw.read()
            finally:
                raw.release_conn()
        except Exception as e:  # noqa: BLE001 - the API server may be away: ask again
            log.debug("servicecidrs: %s", e)
            return None
        if status in (403, 404):
            log.info("servicecidrs: HTTP %d: the service range is --service-cidr %s", status, self.service_cidr)
            return False
        return True if status == 200 else None

    def on_service_cidrs(self, objects: dict) -> None:
        for p in self.proxies:
            p.take_service_cidrs(objects)
