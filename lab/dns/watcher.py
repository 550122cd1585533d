"""The API side of the DNS server: list+watch of Services and EndpointSlices (and Pods, when pod
records are verified) through the project's informer and the real kubernetes client, each event
turned into a frozen view on the informer's thread and applied to the `Cluster` on the event
loop's thread, so that answers never see an index half-updated."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from kubeweft.proxy.informer import Informer, key_of

from . import views
from .index import Cluster

log = logging.getLogger(__name__)

# (API path, view maker, Cluster method for one object, Cluster method after a list)
KINDS = {
    "services": ("/api/v1/services", views.service_from, "set_service", "replace_services"),
    "endpointslices": ("/apis/discovery.k8s.io/v1/endpointslices", views.slice_from, "set_slice",
                       "replace_slices"),
    "pods": ("/api/v1/pods", views.pod_from, "set_pod", "replace_pods"),
}


class Watcher:
    def __init__(self, api, cluster: Cluster, loop: asyncio.AbstractEventLoop, *, pods: bool):
        self.cluster = cluster
        self.loop = loop
        self.informers = [self._informer(api, kind) for kind in KINDS if kind != "pods" or pods]

    def _informer(self, api, kind: str) -> Informer:
        path, view, set_one, replace = KINDS[kind]
        set_one, replace = getattr(self.cluster, set_one), getattr(self.cluster, replace)

        def on_event(etype: str, obj: dict) -> None:
            self._apply(set_one, key_of(obj), None if etype == "DELETED" else view(obj))

        def on_sync(objects: dict) -> None:
            self._apply(replace, objects)

        return Informer(api, path, on_event=on_event, on_sync=on_sync, transform=view, name=kind)

    def _apply(self, fn: Callable, *args) -> None:
        def run() -> None:
            fn(*args)
            self.cluster.serial = int(time.time())      # CoreDNS's serial: the last change, in seconds
        self.loop.call_soon_threadsafe(run)

    def start(self) -> Watcher:
        for informer in self.informers:
            informer.start()
        return self

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    def wait_synced(self, timeout: float) -> bool:
        """Blocks until every informer listed once (its updates are queued on the loop before this
        returns, so a coroutine that awaited this in an executor runs after them)."""
        deadline = time.monotonic() + timeout
        return all(i.wait_synced(max(0.0, deadline - time.monotonic())) for i in self.informers)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)
