"""The Ingress controller: informers on Ingresses, IngressClasses, Services, EndpointSlices and
Secrets (proxy.informer, objects turned into views at the edge), a sync loop that renders
nginx.conf from the Ingresses of its class, applies it through nginx -t and a reload when it
changed, and writes each served Ingress's status.loadBalancer.ingress.

Backends are the Services' EndpointSlices, not their ClusterIPs, as ingress-nginx does: nginx
balances per request over the pods with keepalive connections, the controller's node needs no
service proxy for it, and the backend sees nginx's connection directly (the client address
travels in X-Forwarded-For / X-Real-IP either way). The price is a reload per endpoint change,
which ingress-nginx avoids with Lua; Debian's nginx has none, and a reload takes milliseconds.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubeweft.proxy.informer import Informer

from ..files import write_atomic
from . import certs, render, status
from .classes import select_ingresses
from .nginx import Nginx
from .views import (
    IngressView,
    ingress_class_view,
    ingress_view,
    secret_view,
    service_view,
    slice_view,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

DEBOUNCE = 0.05                 # seconds: a burst of events (a Deployment's slices) is one reload
RESYNC = 30.0                   # seconds: status is checked again even without events


@dataclass(frozen=True)
class Options:
    state_dir: Path
    ingress_class: str = "nginx"
    controller_class: str = "k8s.io/ingress-nginx"
    watch_ingress_without_class: bool = False
    publish_service: str = ""           # NS/NAME
    publish_status_address: str = ""
    update_status: bool = True
    http_port: int = 80
    https_port: int = 443
    pod_name: str = ""                  # POD_NAME/POD_NAMESPACE, as ingress-nginx reads them: the
    pod_namespace: str = ""             # node address shown when nothing is published
    nginx_binary: str = "nginx"


INFORMERS = {                            # name -> (path, transform)
    "ingresses": ("/apis/networking.k8s.io/v1/ingresses", ingress_view),
    "ingressclasses": ("/apis/networking.k8s.io/v1/ingressclasses", ingress_class_view),
    "services": ("/api/v1/services", service_view),
    "endpointslices": ("/apis/discovery.k8s.io/v1/endpointslices", slice_view),
    "secrets": ("/api/v1/secrets", secret_view),
}


class IngressController:
    def __init__(self, api: ApiClient, opts: Options):
        self.api = api
        self.opts = opts
        self.nginx = Nginx(opts.state_dir, opts.nginx_binary)
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.informers = {name: Informer(api, path, transform=transform, name=name,
                                         on_event=self._on_event, on_sync=self._on_sync)
                          for name, (path, transform) in INFORMERS.items()}
        self.applied: tuple[str, dict[str, bytes]] | None = None
        self.node_address = ""
        self.syncs = 0
        self.failed = False             # nginx exited by itself

    def _on_event(self, _etype: str, _obj: dict) -> None:
        self.changed.set()

    def _on_sync(self, _objects: dict) -> None:
        self.changed.set()

    # --- the pure inputs, from the informers' caches ------------------------------------------
    def _objects(self, name: str) -> dict:
        return dict(self.informers[name].objects)

    def settings(self) -> render.Settings:
        user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else ""
        return render.Settings(str(self.nginx.state_dir), str(self.nginx.conf_dir), self.opts.http_port,
                               self.opts.https_port, worker_user=user)

    def served(self) -> list[IngressView]:
        classes = {ic.name: ic for ic in self._objects("ingressclasses").values()}
        return select_ingresses(self._objects("ingresses").values(), classes, self.opts.ingress_class,
                                self.opts.controller_class, self.opts.watch_ingress_without_class)

    def plan(self) -> tuple[list[IngressView], render.Plan]:
        served = self.served()
        plan = render.plan_config(served, self._objects("services"), self._objects("endpointslices").values(),
                                  self._objects("secrets"))
        return served, plan

    # --- the shell ----------------------------------------------------------------------------
    def sync(self) -> None:
        served, plan = self.plan()
        text, files = render.render_nginx_conf(plan, self.settings()), render.render_files(plan)
        if self.applied != (text, files):
            ok, _ = self.nginx.apply(text, files)
            if ok:
                self.applied = (text, files)
                log.info("nginx reloaded: %d Ingresses, %d servers, %d upstreams", len(served),
                         len(plan.servers), len(plan.upstreams))
        if self.opts.update_status:
            self.sync_status(served)
        self.syncs += 1

    def addresses(self) -> tuple[status.Address, ...]:
        publish = None
        if self.opts.publish_service:
            ns, _, name = self.opts.publish_service.partition("/")
            publish = self._objects("services").get((ns, name))
        return status.plan_addresses(self.opts.publish_status_address, publish, self.node_address)

    def sync_status(self, served: list[IngressView]) -> None:
        want = self.addresses()
        if not want:
            return
        body = status.render_status_patch(want)
        for ing in served:
            if ing.addresses == want:
                continue
            path = f"/apis/networking.k8s.io/v1/namespaces/{ing.namespace}/ingresses/{ing.name}/status"
            code, answer = self._call("PATCH", path, body)
            if code == 200:
                log.info("status of %s/%s: %s", ing.namespace, ing.name, [a or h for a, h in want])
            else:
                log.warning("status of %s/%s not written: HTTP %d %s", ing.namespace, ing.name, code, answer)

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """One request through the client's config, auth and pool, JSON both ways (the client's
        typed API would import its ~2 s of model classes for these few calls)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/merge-patch+json"
        req = self.api.param_serialize(method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
        resp = self.api.call_api(*req[:4], _request_timeout=10).response
        try:
            data = resp.data
        finally:
            resp.release_conn()
        try:
            return resp.status, json.loads(data or b"{}")
        except ValueError:
            return resp.status, {}

    def ensure_node_address(self) -> None:
        """The address of the node the controller's pod runs on (ExternalIP, else InternalIP)."""
        if not (self.opts.pod_name and self.opts.pod_namespace) or self.opts.publish_service \
                or self.opts.publish_status_address:
            return
        code, pod = self._call("GET", f"/api/v1/namespaces/{self.opts.pod_namespace}/pods/{self.opts.pod_name}")
        node_name = (pod.get("spec") or {}).get("nodeName") if code == 200 else None
        code, node = self._call("GET", f"/api/v1/nodes/{node_name}") if node_name else (code, {})
        if code != 200:
            log.warning("cannot read pod %s/%s or its node: HTTP %d", self.opts.pod_namespace, self.opts.pod_name, code)
            return
        addrs = {a.get("type"): a.get("address") for a in (node.get("status") or {}).get("addresses") or []}
        self.node_address = addrs.get("ExternalIP") or addrs.get("InternalIP") or ""

    def start(self, sync_timeout: float = 60.0) -> None:
        """Informers synced, the first configuration written, nginx started on it."""
        default_cert = self.nginx.conf_dir / render.DEFAULT_CERT
        if not default_cert.exists():
            write_atomic(default_cert, certs.make_default_certificate(), 0o600)
        log.debug("default certificate in place")
        for inf in self.informers.values():
            inf.start()
        deadline = time.monotonic() + sync_timeout
        for name, inf in self.informers.items():
            if not inf.wait_synced(max(0.1, deadline - time.monotonic())):
                raise TimeoutError(f"the {name} informer did not sync in {sync_timeout:g} s")
        log.debug("informers synced")
        self.ensure_node_address()
        served, plan = self.plan()
        text, files = render.render_nginx_conf(plan, self.settings()), render.render_files(plan)
        log.debug("first configuration rendered")
        ok, out = self.nginx.apply(text, files)     # nginx not running yet: nothing to reload
        if not ok:
            raise RuntimeError(f"the first configuration was refused by nginx -t: {out}")
        self.nginx.start()
        self.applied = (text, files)
        log.info("serving %d Ingresses of class %s", len(served), self.opts.ingress_class)
        self.changed.set()              # the first status write

    def run(self) -> None:
        """Sync on every change (debounced) and every RESYNC seconds, until stop()."""
        while not self.stopping.is_set():
            self.changed.wait(RESYNC)
            if self.stopping.is_set():
                break
            time.sleep(DEBOUNCE)
            self.changed.clear()
            if not self.nginx.running:
                log.error("nginx exited with %s; stopping", self.nginx.proc.returncode if self.nginx.proc else None)
                self.failed = True
                self.stopping.set()
                break
            try:
                self.sync()
            except Exception:           # one bad pass must not end the controller
                log.exception("sync failed; retrying on the next change")
                time.sleep(1.0)
                self.changed.set()

    def stop(self) -> None:
        self.stopping.set()
        self.changed.set()
        for inf in self.informers.values():
            inf.stop()
        self.nginx.stop()
