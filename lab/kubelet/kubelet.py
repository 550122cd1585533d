"""The lab kubelet: one per node, running inside the node's netns.

Threads: the main one lists and watches this node's Pods and hands each to its PodWorker;
`heartbeat` keeps the Node's Ready condition fresh; `nodes` watches all Nodes for this node's
podCIDR (reference mode: write the conflist) and for the other nodes' podCIDRs (reference mode:
the lab's cloud route controller, one route per other node in this netns).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from ..config import LabConfig
from . import model, sandbox
from .podworker import PodWorker, now

log = logging.getLogger("kubelet")
REFERENCE_PLUGINS = Path("/usr/lib/cni")
CONFLIST_NAME = "10-lab.conflist"
HEARTBEAT = 10.0
WATCH_SECONDS = 240
WATCH_IDLE_SECONDS = 75         # no event and no bookmark for this long: reconnect, resuming
API_TIMEOUT = 10
MERGE_PATCH = "application/merge-patch+json"
RTPROT_LAB_ROUTES = 0xAE        # the route controller's routes (kubeweft's overlay uses 0xAF)


class Kubelet:
    def __init__(self, cfg: LabConfig, node: str):
        self.cfg = cfg
        self.node = node
        self.node_ip = cfg.node_ip(model.node_index(node))
        self.network = sandbox.Network(cfg, node)
        self.pods_file = cfg.node_dir(node) / "pods.json"
        self.local: dict[str, dict] = self._load_local()
        self._local_lock = threading.Lock()
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()           # uids torn down: never started again
        self._workers_lock = threading.Lock()
        self.stop = threading.Event()
        self._node_ready: model.Condition | None = None
        self._heartbeat_wake = threading.Event()
        self._routes: dict[str, str] = {}
        self.api = self._api_client()

    def _api_client(self) -> k8s.CoreV1Api:
        conf = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(self.cfg.node_kubeconfig), client_configuration=conf)
        conf.connection_pool_maxsize = 32         # many pod workers patch status at once
        return k8s.CoreV1Api(k8s.ApiClient(conf))

    # --- main -----------------------------------------------------------------------------------------
    def run(self) -> None:
        log.info("kubelet for %s (%s), lab %s, cni %s", self.node, self.node_ip, self.cfg.name, self.cfg.cni)
        for d in (self.cfg.cni_conf_dir(self.node), self.cfg.cni_bin_dir(self.node),
                  self.cfg.cni_data_dir(self.node), self.cfg.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._retry(self.register_node, "register node")
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._nodes_loop, name="nodes", daemon=True).start()
        self._pods_loop()

    def _retry(self, fn, what: str) -> None:
        delay = 0.2
        while not self.stop.is_set():
            try:
                fn()
                return
            except Exception as e:  # noqa: BLE001 (the API server may not be up yet)
                log.warning("%s: %s", what, _short(e))
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)

    # --- the Node -------------------------------------------------------------------------------------
    def _ready_condition(self) -> model.Condition:
        ready = self.network.ready()
        cond = model.next_condition(self._node_ready, "Ready", ready, now(),
                                    "KubeletReady" if ready else "KubeletNotReady",
                                    "kubelet is posting ready status" if ready else model.CNI_NOT_READY)
        self._node_ready = cond
        return cond

    def register_node(self) -> None:
        cond = self._ready_condition()
        body = model.render_node(self.node, self.node_ip, cond, now())
        try:
            self.api.create_node(body, _request_timeout=API_TIMEOUT)
            log.info("registered node %s", self.node)
        except ApiException as e:
            if e.status != 409:
                raise
            log.info("node %s exists: adopting it", self.node)
            self.api.patch_node(self.node, {"metadata": {"labels": model.render_node_labels(self.node)}},
                                _request_timeout=API_TIMEOUT, _content_type=MERGE_PATCH)
        self._post_node_status(cond)

    def _post_node_status(self, cond: model.Condition) -> None:
        status = model.render_node_status(self.node, self.node_ip, cond, now())
        self.api.patch_node_status(self.node, {"status": status}, _request_timeout=API_TIMEOUT,
                                   _content_type=MERGE_PATCH)

    def _heartbeat_loop(self) -> None:
        last = time.monotonic()
        while not self.stop.is_set():
            self._heartbeat_wake.wait(1.0)
            self._heartbeat_wake.clear()
            before = self._node_ready.status if self._node_ready else None
            ready_now = self.network.ready()
            if ready_now == before and time.monotonic() - last < HEARTBEAT:
                continue
            try:
                self._post_node_status(self._ready_condition())
                last = time.monotonic()
                if ready_now != before:
                    log.info("node Ready=%s", ready_now)
            except Exception as e:  # noqa: BLE001
                log.warning("node status: %s", _short(e))

    # --- all Nodes: our podCIDR, the other nodes' routes ----------------------------------------------
    def _nodes_loop(self) -> None:
        nodes: dict[str, model.NodeAddr] = {}
        if self.cfg.cni == "reference":
            self._routes = self._read_routes()

        def changed() -> None:
            try:
                self._sync_nodes(list(nodes.values()))
            except Exception:
                log.exception("node sync failed")

        def on_list(items: list[dict]) -> None:
            nodes.clear()
            nodes.update({n.name: n for n in map(model.parse_node, items)})
            changed()

        def on_event(kind: str, obj: dict) -> None:
            n = model.parse_node(obj)
            if kind == "DELETED":
                nodes.pop(n.name, None)
            else:
                nodes[n.name] = n
            changed()
        self._list_watch(self.api.list_node, {}, on_list, on_event, "nodes")

    def _sync_nodes(self, nodes: list[model.NodeAddr]) -> None:
        if self.cfg.cni != "reference":
            return                      # kubeweft mode: install-cni writes the config, the agent routes
        own = next((n for n in nodes if n.name == self.node), None)
        if own and own.pod_cidr:
            self.ensure_reference_cni(own.pod_cidr)
        want = model.plan_pod_routes(self.node, nodes)
        change, remove = model.diff_routes(self._routes, want)
        if change or remove:
            self._apply_routes(change, remove)

    def ensure_reference_cni(self, pod_cidr: str) -> None:
        conf_dir, bin_dir = self.cfg.cni_conf_dir(self.node), self.cfg.cni_bin_dir(self.node)
        for plugin in sorted(REFERENCE_PLUGINS.iterdir()):
            link = bin_dir / plugin.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(plugin)
        conf = model.render_reference_conflist(pod_cidr, self.cfg.mtu, str(self.cfg.cni_data_dir(self.node)))
        text = json.dumps(conf, indent=2) + "\n"
        path = conf_dir / CONFLIST_NAME
        if path.exists() and path.read_text() == text:
            return
        tmp = conf_dir / ("." + CONFLIST_NAME + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        log.info("wrote %s for podCIDR %s", path, pod_cidr)
        self._heartbeat_wake.set()

    def _read_routes(self) -> dict[str, str]:
        from pyroute2 import IPRoute
        out = {}
        with IPRoute() as ipr:
            for r in ipr.get_routes(family=socket.AF_INET, proto=RTPROT_LAB_ROUTES):
                if r["proto"] == RTPROT_LAB_ROUTES and r.get_attr("RTA_GATEWAY"):
                    out[f"{r.get_attr('RTA_DST')}/{r['dst_len']}"] = r.get_attr("RTA_GATEWAY")
        return out

    def _apply_routes(self, change: dict[str, str], remove: list[str]) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
        with IPRoute() as ipr:
            for dst, via in change.items():
                try:
                    ipr.route("replace", dst=dst, gateway=via, proto=RTPROT_LAB_ROUTES)
                    self._routes[dst] = via
                    log.info("route %s via %s", dst, via)
                except NetlinkError as e:
                    log.warning("route %s via %s: %s", dst, via, e)
            for dst in remove:
                try:
                    ipr.route("del", dst=dst, proto=RTPROT_LAB_ROUTES)
                except NetlinkError as e:
                    if e.code != 3:     # ESRCH: already gone
                        log.warning("route del %s: %s", dst, e)
                self._routes.pop(dst, None)
                log.info("route %s removed", dst)

    # --- Pods -------------------------------------------------------------------------------------------
    def _pods_loop(self) -> None:
        first = [True]

        def on_list(items: list[dict]) -> None:
            pods = {}
            for item in items:
                try:
                    p = model.parse_pod(item)
                    pods[p.uid] = p
                except Exception:  # one malformed pod must not hide the others
                    log.exception("pod not understood: %s", (item.get("metadata") or {}).get("name"))
            if first[0]:
                first[0] = False
                self._adopt_local(pods)
            with self._workers_lock:
                gone = [w for uid, w in self.workers.items() if uid not in pods]
            for w in gone:
                w.remove()
            for p in pods.values():
                self._handle(p)

        def on_event(kind: str, obj: dict) -> None:
            pod = model.parse_pod(obj)
            if kind == "DELETED":
                with self._workers_lock:
                    w = self.workers.get(pod.uid)
                if w is not None:
                    w.remove()
            else:
                self._handle(pod)
        self._list_watch(self.api.list_pod_for_all_namespaces,
                         {"field_selector": f"spec.nodeName={self.node}"}, on_list, on_event, "pods")

    def _adopt_local(self, pods: dict[str, model.Pod]) -> None:
        """After a restart: keep the sandboxes of pods that still exist, remove the others."""
        for uid, entry in list(self.local.items()):
            pod = pods.get(uid)
            if pod is not None:
                self._start_worker(PodWorker(self, pod, adopt=entry))
            else:
                log.info("pod %s/%s (%s) is gone: removing its sandbox", entry.get("namespace"),
                         entry.get("name"), uid)
                self._start_worker(PodWorker(self, model.pod_from_record(uid, entry, self.node),
                                             adopt=entry, removed=True))

    def _handle(self, pod: model.Pod) -> None:
        with self._workers_lock:
            w = self.workers.get(pod.uid)
            if w is not None:
                w.update(pod)
                return
            if pod.uid in self.finished or pod.phase in ("Succeeded", "Failed"):
                return
        self._start_worker(PodWorker(self, pod))

    def _start_worker(self, w: PodWorker) -> None:
        with self._workers_lock:
            if w.uid in self.workers:
                return
            self.workers[w.uid] = w
        w.start()

    def worker_done(self, w: PodWorker) -> None:
        with self._workers_lock:
            if self.workers.get(w.uid) is w:
                del self.workers[w.uid]
            if w.torn_down:
                self.finished.add(w.uid)

    def patch_pod_status(self, pod: model.Pod, status: dict) -> bool:
        try:
            self.api.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status},
                                                 _request_timeout=API_TIMEOUT, _content_type=MERGE_PATCH)
            return True
        except ApiException as e:
            if e.status == 404:
                return True             # gone: the watch will say so
            log.warning("%s: status: %s", pod.key, _short(e))
        except Exception as e:  # noqa: BLE001 (API server down: retried)
            log.warning("%s: status: %s", pod.key, _short(e))
        return False

    def delete_pod(self, pod: model.Pod) -> None:
        body = k8s.V1DeleteOptions(grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=pod.uid))
        for attempt in range(10):
            try:
                self.api.delete_namespaced_pod(pod.name, pod.namespace, body=body, grace_period_seconds=0,
                                               _request_timeout=API_TIMEOUT)
                log.info("%s: deleted", pod.key)
                return
            except ApiException as e:
                if e.status in (404, 409):  # gone, or a new pod of that name (uid precondition)
                    return
                log.warning("%s: delete: %s", pod.key, _short(e))
            except Exception as e:  # noqa: BLE001
                log.warning("%s: delete: %s", pod.key, _short(e))
            self.stop.wait(min(0.5 * 2 ** attempt, 5.0))

    # --- pods.json ----------------------------------------------------------------------------------
    def _load_local(self) -> dict[str, dict]:
        try:
            data = json.loads(self.pods_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def record(self, uid: str, entry: dict) -> None:
        with self._local_lock:
            self.local[uid] = entry
            self._write_local()

    def forget(self, uid: str) -> None:
        with self._local_lock:
            if self.local.pop(uid, None) is not None:
                self._write_local()

    def _write_local(self) -> None:
        self.pods_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pods_file.with_name(".pods.json.tmp")
        tmp.write_text(json.dumps(self.local, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.pods_file)

    # --- list + watch -------------------------------------------------------------------------------
    def _list_watch(self, list_fn, kwargs: dict, on_list, on_event, what: str) -> None:
        """List, then watch from the list's resourceVersion; resume after a dropped connection,
        re-list on 410 Gone. Objects are plain dicts (no model classes at the edge)."""
        rv: str | None = None
        delay = 0.2
        while not self.stop.is_set():
            try:
                if rv is None:
                    resp = list_fn(**kwargs, _preload_content=False, _request_timeout=API_TIMEOUT)
                    doc = json.loads(resp.data)
                    rv = doc["metadata"]["resourceVersion"]
                    try:
                        on_list(doc.get("items") or [])
                    except Exception:  # as above: keep watching
                        log.exception("%s: list not fully handled", what)
                    log.debug("%s: listed %d at %s", what, len(doc.get("items") or []), rv)
                resp = list_fn(**kwargs, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                               timeout_seconds=WATCH_SECONDS, _preload_content=False,
                               _request_timeout=(API_TIMEOUT, WATCH_IDLE_SECONDS))
                try:
                    for line in iter_resp_lines(resp):
                        if not line:
                            continue
                        ev = json.loads(line)
                        kind, obj = ev.get("type"), ev.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                log.info("%s: watch expired (410): re-listing", what)
                                rv = None
                                break
                            raise RuntimeError(f"watch error: {obj.get('message')}")
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if kind != "BOOKMARK":
                            try:
                                on_event(kind, obj)
                            except Exception:  # one bad object must not stall the watch (it would replay)
                                log.exception("%s: %s event not handled", what, kind)
                finally:
                    resp.release_conn()
                delay = 0.2
            except ApiException as e:
                if e.status == 410:
                    log.info("%s: too old resource version: re-listing", what)
                    rv = None
                    continue
                log.warning("%s: %s", what, _short(e))
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except Exception as e:  # noqa: BLE001 (connection drops, API restarts: resume)
                log.warning("%s: watch: %s", what, _short(e))
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)


def _short(e: BaseException) -> str:
    if isinstance(e, ApiException):
        try:
            msg = json.loads(e.body or "{}").get("message") or e.reason
        except ValueError:
            msg = e.reason
        return f"API {e.status}: {msg}"[:300]
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
