"""The lab kubelet: one per node, running inside the node's netns.

Threads: the main one lists and watches this node's Pods and hands each to its PodWorker;
`heartbeat` keeps the Node's Ready condition fresh and renews its Lease in kube-node-lease;
`nodes` watches all Nodes for this node's podCIDR (reference mode: write the conflist) and for
the other nodes' podCIDRs (reference mode: the lab's cloud route controller, one route per other
node in this netns); `server` answers the API server on the node's address, port 10250
(container logs, exec).
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from ..config import LabConfig
from . import (
    backoff,
    dns,
    env,
    imagefiles,
    layout,
    model,
    pluginroot,
    podspec,
    rootfs,
    sandbox,
    status,
    volumes,
)
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
BACKOFF_ENV = "KUBEWEFT_LAB_BACKOFF_BASE"   # seconds; CrashLoopBackOff's first delay (10 by default)
LAB_ID_ENV = "KUBEWEFT_LAB_ID"  # every container carries it: `lab down` ends them by it
TOKEN_REFRESH = 0.8             # a projected token is renewed after this part of its lifetime
LEASE_RETRY = 60.0              # when the API has no Lease kind: how often to try again


def _family(cidr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_network(cidr, strict=False).version == 6 else socket.AF_INET


def micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Kubelet:
    def __init__(self, cfg: LabConfig, node: str):
        self.cfg = cfg
        self.node = node
        self.node_ip = cfg.node_ip(model.node_index(node))      # the underlay's IPv4, in every mode
        self.node_ips = cfg.node_internal_ips(model.node_index(node))   # the Node's InternalIPs
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
        self.paths = layout.NodePaths(cfg.node_dir(node), cfg.cni_conf_dir(node), cfg.cni_bin_dir(node),
                                      cfg.cni_data_dir(node), layout.absent_passthrough())
        self.cluster_dns = cfg.cluster_dns_ip
        self.node_hosts = dns.HOSTS_DEFAULTS + f"{self.node_ips[0]}\t{node}\n"
        self.node_resolv = _read("/etc/resolv.conf")
        self.venv_bin = str(Path(sys.executable).parent)
        self.python = sys.executable
        self.lab_env = {LAB_ID_ENV: os.environ[LAB_ID_ENV]} if LAB_ID_ENV in os.environ else {}
        self.rootfs_top = rootfs.plan_top(_list_root(), *rootfs.split_keep(_checkout_dirs()))
        self.kubeweft_files = imagefiles.image_files(imagefiles.frozen_dir())
        self.backoff_base = float(os.environ.get(BACKOFF_ENV) or backoff.BASE)
        self.token = _read(str(cfg.pki_dir / "token")).strip()
        self._tokens: dict[tuple, tuple[str, float]] = {}     # (ns, sa, pod uid, audience, exp) -> (token, renew at)
        self._execs: dict[str, set[int]] = {}                 # pod uid -> PIDs of exec sessions
        self._execs_lock = threading.Lock()
        self._node_uid = ""
        self._lease_next = 0.0

    def _api_client(self) -> k8s.CoreV1Api:
        conf = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(self.cfg.node_kubeconfig), client_configuration=conf)
        conf.connection_pool_maxsize = 32         # many pod workers patch status at once
        self.api_client = k8s.ApiClient(conf)
        return k8s.CoreV1Api(self.api_client)

    # --- main -----------------------------------------------------------------------------------------
    def run(self) -> None:
        log.info("kubelet for %s (%s), lab %s, cni %s", self.node, self.node_ip, self.cfg.name, self.cfg.cni)
        for d in (self.cfg.cni_conf_dir(self.node), self.cfg.cni_bin_dir(self.node),
                  self.cfg.cni_data_dir(self.node), self.cfg.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        masked = pluginroot.find_masked(tuple(p for p in (str(imagefiles.CHECKOUT), sys.prefix)
                                              if not p.startswith("/usr")))
        self.network.write_plugin_root(rootfs.plan_top(_list_root(), set()), self.paths, masked)
        self._retry(self.register_node, "register node")
        from .server import KubeletServer
        KubeletServer(self).start()
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
        cond = status.next_condition(self._node_ready, "Ready", ready, now(),
                                    "KubeletReady" if ready else "KubeletNotReady",
                                    "kubelet is posting ready status" if ready else model.CNI_NOT_READY)
        self._node_ready = cond
        return cond

    def register_node(self) -> None:
        cond = self._ready_condition()
        body = model.render_node(self.node, self.node_ips, cond, now())
        try:
            created = self.api.create_node(body, _request_timeout=API_TIMEOUT)
            self._node_uid = created.metadata.uid or ""
            log.info("registered node %s", self.node)
        except ApiException as e:
            if e.status != 409:
                raise
            log.info("node %s exists: adopting it", self.node)
            adopted = self.api.patch_node(self.node, {"metadata": {"labels": model.render_node_labels(self.node)}},
                                          _request_timeout=API_TIMEOUT, _content_type=MERGE_PATCH)
            self._node_uid = adopted.metadata.uid or ""
        self._post_node_status(cond)
        self._renew_lease()

    def _post_node_status(self, cond: model.Condition) -> None:
        status = model.render_node_status(self.node, self.node_ips, cond, now())
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
            self._renew_lease()

    def _renew_lease(self) -> None:
        """Create or renew kube-node-lease/<node> (its renewTime is the node's heartbeat)."""
        if time.monotonic() < self._lease_next:
            return
        self._lease_next = time.monotonic() + model.LEASE_SECONDS / 4
        body = model.render_lease(self.node, self._node_uid, micro_time())
        leases = k8s.CoordinationV1Api(self.api_client)
        try:
            try:
                leases.patch_namespaced_lease(self.node, model.LEASE_NAMESPACE, {"spec": body["spec"]},
                                              _request_timeout=API_TIMEOUT, _content_type=MERGE_PATCH)
            except ApiException as e:
                if e.status != 404:
                    raise
                leases.create_namespaced_lease(model.LEASE_NAMESPACE, body, _request_timeout=API_TIMEOUT)
                log.info("created lease %s/%s", model.LEASE_NAMESPACE, self.node)
        except ApiException as e:
            if e.status == 404:            # no Lease kind (or namespace) served: try again later
                self._lease_next = time.monotonic() + LEASE_RETRY
                log.debug("lease: %s", _short(e))
            else:
                log.warning("lease: %s", _short(e))
        except Exception as e:  # noqa: BLE001
            log.warning("lease: %s", _short(e))

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
        if own and own.pod_cidrs:
            self.ensure_reference_cni(own.pod_cidrs)
        want = model.plan_pod_routes(self.node, nodes)
        change, remove = model.diff_routes(self._routes, want)
        if change or remove:
            self._apply_routes(change, remove)

    def ensure_reference_cni(self, pod_cidr: str | tuple[str, ...]) -> None:
        conf_dir, bin_dir = self.cfg.cni_conf_dir(self.node), self.cfg.cni_bin_dir(self.node)
        for plugin in sorted(REFERENCE_PLUGINS.iterdir()):
            link = bin_dir / plugin.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(plugin)
        conf = model.render_reference_conflist(pod_cidr, self.cfg.mtu, pluginroot.NODE_DATA)
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
            for family in (socket.AF_INET, socket.AF_INET6):
                for r in ipr.get_routes(family=family, proto=RTPROT_LAB_ROUTES):
                    if r["proto"] == RTPROT_LAB_ROUTES and r.get_attr("RTA_GATEWAY"):
                        dst = ipaddress.ip_network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}", strict=False)
                        out[str(dst)] = r.get_attr("RTA_GATEWAY")
        return out

    def _apply_routes(self, change: dict[str, str], remove: list[str]) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
        with IPRoute() as ipr:
            for dst, via in change.items():
                try:
                    ipr.route("replace", dst=dst, gateway=via, proto=RTPROT_LAB_ROUTES, family=_family(dst))
                    self._routes[dst] = via
                    log.info("route %s via %s", dst, via)
                except NetlinkError as e:
                    log.warning("route %s via %s: %s", dst, via, e)
            for dst in remove:
                try:
                    ipr.route("del", dst=dst, proto=RTPROT_LAB_ROUTES, family=_family(dst))
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
                    p = podspec.parse_pod(item)
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
            pod = podspec.parse_pod(obj)
            if kind == "DELETED":
                with self._workers_lock:
                    w = self.workers.get(pod.uid)
                if w is not None:
                    w.remove()
            else:
                self._handle(pod)
        self._list_watch(self.api.list_pod_for_all_namespaces,
                         {"field_selector": f"spec.nodeName={self.node}"}, on_list, on_event, "pods")

    def _adopt_local(self, pods: dict[str, podspec.Pod]) -> None:
        """After a restart: keep the sandboxes of pods that still exist, remove the others."""
        for uid, entry in list(self.local.items()):
            pod = pods.get(uid)
            if pod is not None:
                self._start_worker(PodWorker(self, pod, adopt=entry))
            else:
                log.info("pod %s/%s (%s) is gone: removing its sandbox", entry.get("namespace"),
                         entry.get("name"), uid)
                self._start_worker(PodWorker(self, podspec.pod_from_record(uid, entry, self.node),
                                             adopt=entry, removed=True))

    def _handle(self, pod: podspec.Pod) -> None:
        with self._workers_lock:
            w = self.workers.get(pod.uid)
            if w is not None:
                w.update(pod)
                return
            if pod.uid in self.finished or pod.phase in ("Succeeded", "Failed"):
                if pod.deleting and pod.uid not in self.finished:
                    # a finished pod with nothing left here: let its deletion complete
                    threading.Thread(target=self.delete_pod, args=(pod,), daemon=True).start()
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

    def patch_pod_status(self, pod: podspec.Pod, status: dict) -> bool:
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

    def delete_pod(self, pod: podspec.Pod) -> None:
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

    def find_worker(self, namespace: str, name: str) -> PodWorker | None:
        with self._workers_lock:
            return next((w for w in self.workers.values()
                         if w.pod.namespace == namespace and w.pod.name == name), None)

    # --- what containers are made from ---------------------------------------------------------------
    def _get_json(self, fn, *args) -> dict | None:
        """One object as a dict, None when it does not exist."""
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=API_TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def fetch_objects(self, namespace: str, refs: list[tuple[str, str]]) -> dict:
        """(kind, name) -> the ConfigMap or Secret (None when missing) for each of `refs`."""
        out = {}
        for kind, name in refs:
            fn = self.api.read_namespaced_config_map if kind == "configmap" else self.api.read_namespaced_secret
            out[(kind, name)] = self._get_json(fn, name, namespace)
        return out

    def service_env(self, pod: podspec.Pod) -> dict[str, str]:
        """The Service variables of `pod`'s containers: its namespace's Services (enableServiceLinks)
        and always default/kubernetes."""
        found = []
        if pod.service_links:
            resp = self.api.list_namespaced_service(pod.namespace, _preload_content=False,
                                                    _request_timeout=API_TIMEOUT)
            found = [env.parse_service(o) for o in json.loads(resp.data).get("items") or []]
        master = self._get_json(self.api.read_namespaced_service, "kubernetes", "default")
        services = {(s.namespace, s.name): s for s in found}
        if master is not None:
            services[("default", "kubernetes")] = env.parse_service(master)
        return env.render_service_env(list(services.values()))

    def _token(self, pod: podspec.Pod, audience: str, expiration: int) -> str:
        """A ServiceAccount token bound to `pod` (TokenRequest), reused until 80% of its life."""
        key = (pod.namespace, pod.service_account, pod.uid, audience, expiration)
        cached = self._tokens.get(key)
        if cached and time.monotonic() < cached[1]:
            return cached[0]
        spec: dict = {"expirationSeconds": expiration,
                      "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid}}
        if audience:
            spec["audiences"] = [audience]
        resp = self.api.create_namespaced_service_account_token(
            pod.service_account, pod.namespace, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                                 "spec": spec},
            _preload_content=False, _request_timeout=API_TIMEOUT)
        doc = json.loads(resp.data)
        granted = int((doc.get("spec") or {}).get("expirationSeconds") or expiration)
        token = doc["status"]["token"]
        self._tokens[key] = (token, time.monotonic() + TOKEN_REFRESH * granted)
        return token

    def fetch(self, pod: podspec.Pod, refs: list[tuple[str, str]], tokens: list[tuple[str, int]],
              previous: volumes.Fetched | None) -> volumes.Fetched:
        objects = self.fetch_objects(pod.namespace, refs)
        got = {}
        for audience, expiration in tokens:
            try:
                got[(audience, expiration)] = self._token(pod, audience, expiration)
            except ApiException as e:
                log.warning("%s: token for service account %s: %s", pod.key, pod.service_account, _short(e))
                if previous is not None and (audience, expiration) in previous.tokens:
                    got[(audience, expiration)] = previous.tokens[(audience, expiration)]
        return volumes.Fetched(objects, got)

    # --- exec sessions ---------------------------------------------------------------------------------
    def add_exec(self, uid: str, pid: int) -> None:
        with self._execs_lock:
            self._execs.setdefault(uid, set()).add(pid)

    def drop_exec(self, uid: str, pid: int) -> None:
        with self._execs_lock:
            self._execs.get(uid, set()).discard(pid)

    def end_execs(self, uid: str) -> None:
        """Kill the exec sessions of a pod whose containers stop (they die with them on a real node)."""
        with self._execs_lock:
            pids = self._execs.pop(uid, set())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # --- pods.json ----------------------------------------------------------------------------------
    def _load_local(self) -> dict[str, dict]:
        try:
            data = json.loads(self.pods_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def held(self, namespace: str, container: str) -> bool:
        """Is starting `container` of pods in `namespace` held on this node (layout.hold_path):
        the lab's way to keep a crashed container down for as long as a test needs."""
        return layout.hold_path(self.cfg.node_dir(self.node), namespace, container).exists()

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


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _list_root() -> list[tuple[str, str, str]]:
    out = []
    for name in os.listdir("/"):
        p = Path("/") / name
        if p.is_symlink():
            out.append((name, "symlink", os.readlink(p)))
        else:
            out.append((name, "dir" if p.is_dir() else "file", ""))
    return out


def _checkout_dirs() -> set[str]:
    """The directories of this checkout, its virtualenv and its Python (as named and resolved)."""
    paths = (Path(__file__).parents[2], Path(sys.executable).parent, Path(sys.prefix), Path(sys.base_prefix))
    return {str(q) for p in paths for q in (p, p.resolve()) if len(q.parts) > 1}


def _short(e: BaseException) -> str:
    if isinstance(e, ApiException):
        try:
            msg = json.loads(e.body or "{}").get("message") or e.reason
        except ValueError:
            msg = e.reason
        return f"API {e.status}: {msg}"[:300]
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
