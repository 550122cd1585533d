"""The service proxy: Services and EndpointSlices -> `table ip kubeweft` (kube-proxy's job).

    informers (raw JSON) -> model (frozen values) -> per-Service fragments (render_service)
        -> Aggregate (ref-counted desired state) -> diff of the touched elements only
        -> element changes in ONE netlink transaction (structure, when it changes, through
           libnftables around it) -> mirror of what the kernel holds -> conntrack cleanup, health

Only the Services whose objects changed are re-rendered, and only their elements are diffed, so
one EndpointSlice change costs the same at 30 Services and at 30,000. The ruleset is never
listed: at start the agent reads back its own table over netlink (the names of its chains and
sets, the elements of its sets and maps; never flushing them), so a restarted agent changes
nothing that is right, deletes what nobody wants any more, and connections keep flowing
through it. Elements skip nft's parser (proxy/element_codec.py): at 30k Services, ~180k elements cost
~2 s of libnftables CPU as text and ~0.4 s encoded here plus ~0.4 s in the kernel.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import functools
import gc
import json
import logging
import queue
import sys
import threading
import time
from datetime import datetime

from . import metrics
from .conntrack import clear_udp
from .diff_services import (
    ElementCommand,
    commit_touched,
    diff_full,
    diff_touched,
    empty_applied,
    fixed_chains,
    parse_elements,
    plan_udp_cleanup,
    recovered_objects,
    touched_udp,
)
from .element_codec import ElementType, element_type
from .frontends import describe_frontends, format_frontends
from .health import ProxyHealth, ServiceHealthServers, serve_proxy_health
from .informer import Informer
from .model import InvalidObject, parse_endpoint_slice, parse_node, parse_service
from .nftables import ElementLink, Nft, NftError
from .render_services import (
    FAMILY,
    MAPS,
    SETS,
    TABLE,
    Aggregate,
    Desired,
    NodeContext,
    T,
    declaration,
    family_chain,
    render_base,
    render_service,
)
from .sync_loop import SyncLoop

log = logging.getLogger(__name__)

SVC_PATH = "/api/v1/services"
SLICE_PATH = "/apis/discovery.k8s.io/v1/endpointslices"
NODE_PATH = "/api/v1/nodes"
TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
SYNC_WAIT = 120.0        # an error is logged each time the informers' first lists take this long
COALESCE = 0.002         # gather events arriving together into one transaction
RESYNC = 60.0            # seconds between two syncs when no event comes
LOAD_CHUNK = 16384       # elements per transaction when filling an empty table
TEXT_MAX = 2000          # a sync with structure and at most this many elements: one nft transaction
SEND_TIMEOUT = 120.0


class _NoCopy(dict):
    """A dict that keeps nothing."""

    def __setitem__(self, key, value) -> None:
        pass


class LeanInformer(Informer):
    """The informer without its copy of every object: the proxy keeps only parsed values, and
    30k Services with their EndpointSlices as raw JSON would cost ~200 MB."""

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


class ServiceProxy:
    def __init__(self, api, cfg):
        self.api = api
        self.cfg = cfg
        self.ctx = NodeContext(node_name=cfg.node_name, cluster_cidr=cfg.cluster_cidr or cfg.pod_cidr,
                               service_cidr=cfg.service_cidr, nodeport_cidrs=tuple(cfg.nodeport_addresses))
        self.nft = Nft()                       # the agent lives in the node's netns
        self.lock = threading.Lock()
        self.services: dict[tuple[str, str], object] = {}      # key -> Service | None (not ours)
        self.slices: dict[tuple[str, str], object] = {}        # slice key -> EndpointSlice
        self.slices_of: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.full = True
        self.triggers: list[float] = []
        self.agg = Aggregate()
        self.applied: Desired = empty_applied()
        self.recovered = False
        self.udp_pending: set = set()          # UDP flows planned for cleanup, not yet cleared
        self.syncs = 0
        self.health = ProxyHealth()
        self.service_health = ServiceHealthServers()
        self.health_server = None
        self.informers: list[Informer] = []
        self.loop = SyncLoop("service-proxy", self.sync, debounce=COALESCE, period=RESYNC,
                             on_failure=self._sync_failed, ready=self._listed, ready_warn=SYNC_WAIT)

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ServiceProxy:
        try:
            self.health_server = serve_proxy_health(self.cfg.healthz_bind_address, self.health)
        except OSError as e:
            log.error("healthz on %s: %s", self.cfg.healthz_bind_address, e)
        self.informers = [
            # lists decoded item by item into model values (transform): never 30k raw objects at once
            LeanInformer(self.api, SVC_PATH, on_event=self._on_service, on_sync=self._on_services,
                         name="services", transform=self._parse_service),
            LeanInformer(self.api, SLICE_PATH, on_event=self._on_slice, on_sync=self._on_slices,
                         name="endpointslices", transform=self._parse_slice),
            Informer(self.api, NODE_PATH, on_event=lambda _t, o: self._on_node(o),
                     on_sync=lambda objs: [self._on_node(o) for o in objs.values()],
                     params={"fieldSelector": f"metadata.name={self.cfg.node_name}"}, name="node"),
        ]
        for inf in self.informers:
            inf.start()
        self.loop.start()
        return self

    def stop(self) -> None:
        for inf in self.informers:
            inf.stop()
        self.loop.stop(10)
        self.service_health.close()
        if self.health_server:
            self.health_server.close()

    # ---- informer callbacks (informer threads) --------------------------------------------------
    def _mark(self, keys, trigger: float | None = None) -> None:
        self.dirty.update(keys)
        if trigger is not None:
            self.triggers.append(trigger)
        self.health.queued()
        metrics.LAST_QUEUED.set(time.time())
        self.loop.wake()

    def _parse_service(self, obj: dict):
        try:
            return parse_service(obj)
        except InvalidObject as e:
            meta = obj.get("metadata") or {} if isinstance(obj, dict) else {}
            log.warning("service %s/%s skipped: %s", meta.get("namespace"), meta.get("name"), e)
            return None

    def _on_service(self, etype: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        svc = None if etype == "DELETED" else self._parse_service(obj)
        with self.lock:
            if svc is None:
                self.services.pop(key, None)
            else:
                self.services[key] = svc
            metrics.SERVICE_CHANGES.inc()
            self._mark([key])

    def _on_services(self, objects: dict) -> None:
        """objects: key -> Service, or None for one we leave alone (parsed by the informer)."""
        parsed = {key: svc for key, svc in objects.items() if svc is not None}
        with self.lock:
            old = set(self.services)
            self.services = parsed
            self._mark(old | set(parsed))

    def _parse_slice(self, obj: dict):
        try:
            return parse_endpoint_slice(obj)
        except InvalidObject as e:
            meta = obj.get("metadata") or {} if isinstance(obj, dict) else {}
            log.warning("endpointslice %s/%s skipped: %s", meta.get("namespace"), meta.get("name"), e)
            return None

    def _put_slice(self, key, sl) -> set:
        """Index one slice (None: remove); the Service keys it affects. Holds self.lock."""
        touched = set()
        old = self.slices.pop(key, None)
        if old is not None:
            touched.add(old.service_key)
            self.slices_of.get(old.service_key, set()).discard(key)
        if sl is not None:
            self.slices[key] = sl
            self.slices_of.setdefault(sl.service_key, set()).add(key)
            touched.add(sl.service_key)
        return touched

    def _on_slice(self, etype: str, obj: dict) -> None:
        now = time.time()
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        sl = None if etype == "DELETED" else self._parse_slice(obj)
        with self.lock:
            touched = self._put_slice(key, sl)
            metrics.ENDPOINT_CHANGES.inc()
            self._mark(touched, _trigger_time(obj, now))

    def _on_slices(self, objects: dict) -> None:
        """objects: key -> EndpointSlice, or None for one we cannot use (parsed by the informer)."""
        with self.lock:
            touched = set()
            for key in list(self.slices):
                if key not in objects:
                    touched |= self._put_slice(key, None)
            for key, sl in objects.items():
                touched |= self._put_slice(key, sl)
            self._mark(touched)

    def _on_node(self, obj: dict) -> None:
        try:
            node = parse_node(obj)
        except InvalidObject:
            return
        if node.name != self.ctx.node_name or node.zone == self.ctx.zone:
            return
        with self.lock:
            self.ctx = NodeContext(self.ctx.node_name, node.zone, self.ctx.cluster_cidr,
                                   self.ctx.service_cidr, self.ctx.nodeport_cidrs)
            self.full = True
            self._mark(())

    # ---- the sync loop --------------------------------------------------------------------------
    def _listed(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers)

    def _sync_failed(self) -> None:
        """After a failed sync the kernel's table is unknown: the retry reads it back and syncs
        everything."""
        metrics.SYNC_FAILURES.inc()
        self.recovered = False
        with self.lock:
            self.full = True

    def recover(self) -> Desired:
        """What the kernel holds of our table (targeted reads over netlink, never the ruleset nor
        nft's cache): the names and comments of its chains and the names of its sets, so EVERY
        on-demand chain and dynamic set is known and the next full sync deletes those nobody
        wants (diff_services.recovered_objects); then the elements of the fixed sets and maps and
        of the backends map of every lb chain."""
        t0 = time.monotonic()
        listed_chains = self.nft.elements.chains(FAMILY, TABLE) or []
        listed_sets = self.nft.elements.sets(FAMILY, TABLE) or []
        chains, dynsets = recovered_objects(listed_chains, listed_sets, fixed_chains(render_base(self.ctx)))
        sets, maps = read_elements(self.nft, chains.values())
        log.info("read back %d elements, %d chains, %d dynamic sets of table %s in %.0f ms",
                 sum(map(len, sets.values())) + sum(map(len, maps.values())), len(chains), len(dynsets), T,
                 (time.monotonic() - t0) * 1000)
        return Desired(sets=sets, maps=maps, chains=chains, dynsets=dynsets)

    def sync(self) -> int:
        """One transaction for everything queued; returns the number of commands sent.
        No cyclic garbage collection meanwhile: a full sync makes ~100k objects (read back,
        work list, fragments) and with 30k Services alive every collection walks them all."""
        with _gc_paused():
            return self._sync()

    def _sync(self) -> int:
        t0 = time.monotonic()
        with self.lock:
            full = self.full or not self.recovered
            keys = set(self.services) | set(self.agg.fragments) if full else self.dirty
            self.dirty = set()
            self.full = False
            triggers, self.triggers = self.triggers, []
            ctx = self.ctx
            work = [(k, self.services.get(k), [self.slices[s] for s in self.slices_of.get(k, ())])
                    for k in keys]
        base: list[str] = []
        unknown = False
        if not self.recovered:
            self.applied = self.recover()
            base = render_base(ctx)
            unknown = True
        udp_gone: set = set()
        touched = None
        t_read = time.monotonic()
        put = self.agg.put
        if full:
            for key, svc, slices in work:
                put(key, render_service(svc, slices, ctx) if svc is not None else None, track=False)
        else:
            for key, svc, slices in work:
                t = put(key, render_service(svc, slices, ctx) if svc is not None else None)
                if touched is None:
                    touched = t
                else:
                    touched.merge(t)
        t_render = time.monotonic()
        if full:
            udp_gone = plan_udp_cleanup(self.applied, self.agg, touched_udp(self.applied))
            diff, mirror = diff_full(self.applied, self.agg, unknown_chains=unknown)
            cmds = base + diff
        else:
            if touched is None:
                return 0
            cmds = diff_touched(self.applied, self.agg, touched)
            udp_gone = plan_udp_cleanup(self.applied, self.agg, touched)
        t_diff = time.monotonic()
        # planned flows wait here until cleared: if the apply fails after a transaction landed,
        # the re-read kernel no longer shows the endpoints that went, and nothing plans them again
        self.udp_pending |= udp_gone
        if cmds:
            try:
                apply_commands(self.nft, cmds, empty=full and not self.applied.counts()["elements"])
            except NftError:
                log.error("nft transaction of %d commands failed", len(cmds))
                raise
        t_applied = time.monotonic()
        if full:
            self.applied = mirror
            _trim_heap()
        else:
            commit_touched(self.applied, self.agg, touched)
        sent = len(cmds)
        self.recovered = True
        self.syncs += 1
        now = time.time()
        elapsed = time.monotonic() - t0
        metrics.SYNC_DURATION.observe(elapsed)
        (metrics.SYNC_FULL_DURATION if full else metrics.SYNC_PARTIAL_DURATION).observe(elapsed)
        for trig in triggers:
            metrics.NETWORK_PROGRAMMING.observe(max(0.0, now - trig))
        metrics.LAST_SYNC.set(now)
        metrics.COMMANDS.observe(sent)
        counts = self.applied.counts()
        metrics.ELEMENTS.set(counts["elements"])
        metrics.CHAINS.set(counts["chains"])
        metrics.SERVICES.set(len(self.agg.fragments))
        self.health.updated()
        self.service_health.update(self.applied.health)
        if self.udp_pending:
            flows, self.udp_pending = self.udp_pending, set()
            clear_udp(flows)
        log.log(logging.INFO if full or sent > 50 else logging.DEBUG,
                "synced %s: %d services changed, %d commands in %.1f ms (read back %.0f, render %.0f, "
                "diff %.0f, apply %.0f ms)", "full" if full else "partial", len(work), sent, elapsed * 1000,
                (t_read - t0) * 1000, (t_render - t_read) * 1000, (t_diff - t_render) * 1000,
                (t_applied - t_diff) * 1000)
        return sent


@functools.lru_cache(maxsize=4096)
def _element_type(name: str) -> ElementType | None:
    decl = declaration(name)
    return element_type(decl) if decl is not None else None


def split_commands(cmds: list[str]) -> tuple[list[str], list[tuple[str, str, ElementType, list[str]]], list[str]]:
    """A diff's commands (structure, then elements, then structure that goes) as (nft text
    before, element changes for netlink, nft text after). Elements of sets the netlink codec
    cannot write (intervals: loadBalancerSourceRanges) stay text: added before the others,
    deleted after them, so a firewall key never lacks its allowed ranges."""
    pre: list[str] = []
    ops: list[tuple[str, str, ElementType, list[str]]] = []
    post: list[str] = []
    for c in cmds:
        if isinstance(c, ElementCommand):
            et = _element_type(c.name)
            if et is not None:
                ops.append((c.verb, c.name, et, c.items))
            else:
                (pre if c.verb == "add" else post).append(c)
        else:
            (post if ops else pre).append(c)
    return pre, ops, post


def apply_commands(nft: Nft, cmds: list[str], *, empty: bool = False) -> None:
    """ONE transaction whenever it is cheap: element changes alone over netlink
    (proxy/element_codec.py: nft parses ~10 us per element); with structure (a new lb chain and
    its map, a chain to delete) and at most TEXT_MAX elements, all of it through libnftables.
    Larger syncs with structure take up to three transactions, each leaving a working table:
    chains and maps exist before any element points at them and go only after nothing does;
    the element changes (a key moving to another chain included) land together.
    empty: the table holds no elements yet (the first sync): then they go in transactions of
    LOAD_CHUNK, sent on another thread while this one encodes the next (the kernel's share,
    ~2 us per element, runs without the GIL). Nothing was reachable before, and the diff lists
    backends maps before the verdict maps that point at them, so a Service is not reachable
    before its endpoints are in."""
    pre, ops, post = split_commands(cmds)
    if (pre or post) and sum(len(items) for *_, items in ops) <= TEXT_MAX:
        nft.run(cmds)
        return
    if pre:
        nft.run(pre)
    if ops:
        if empty and sum(len(items) for *_, items in ops) > LOAD_CHUNK:
            send_pipelined(nft.elements, chunk_ops(order_for_load(ops), LOAD_CHUNK))
        else:
            nft.elements.run(FAMILY, TABLE, ops)
    if post:
        nft.run(post)


# Sets whose elements make traffic to an address refused unless a verdict map already has its
# key (service-check: a ClusterIP without the port in service-ips is rejected): loaded last.
LOAD_LAST = ("cluster-ips",)


def order_for_load(ops: list[tuple[str, str, ElementType, list[str]]]) -> list[tuple]:
    """The order of an empty table's element transactions: the diff's (backends maps before the
    verdict maps that point at them), with LOAD_LAST after everything else, so that while the
    load runs a Service's address is refused only once it is complete (before, it is dropped
    by the service range rule, and a client's retry finds it)."""
    return sorted(ops, key=lambda op: op[1] in LOAD_LAST)


def chunk_ops(ops: list[tuple[str, str, ElementType, list[str]]], size: int) -> list[list[tuple]]:
    """ops cut into runs of at most `size` elements, in order."""
    chunks: list[list[tuple]] = [[]]
    room = size
    for verb, name, et, items in ops:
        i = 0
        while i < len(items):
            if room == 0:
                chunks.append([])
                room = size
            part = items[i:i + room]
            chunks[-1].append((verb, name, et, part))
            room -= len(part)
            i += len(part)
    return [c for c in chunks if c]


def send_pipelined(link: ElementLink, chunks: list[list[tuple]]) -> None:
    """Encode chunk i+1 here while a sender thread has the kernel apply chunk i; the first
    failure stops the rest and is raised here."""
    jobs: queue.Queue = queue.Queue(maxsize=1)
    failed: list[BaseException] = []

    def sender() -> None:
        while (batch := jobs.get()) is not None:
            if not failed:
                try:
                    link.send(batch)
                except BaseException as e:  # noqa: BLE001 - raised on the caller's thread
                    failed.append(e)
    t = threading.Thread(target=sender, name="service-proxy-load", daemon=True)
    t.start()
    try:
        for ops in chunks:
            if failed:
                break
            jobs.put(link.prepare(FAMILY, TABLE, ops), timeout=SEND_TIMEOUT)
    finally:
        try:
            jobs.put(None, timeout=SEND_TIMEOUT)
        except queue.Full:
            failed.append(NftError("netlink load: the sender took no job in time"))
        t.join(SEND_TIMEOUT)
    if t.is_alive():
        raise NftError(f"netlink load: a transaction unanswered after {SEND_TIMEOUT:.0f} s")
    if failed:
        raise failed[0]


def read_set(nft: Nft, name: str) -> frozenset[str]:
    """The elements of one of our sets ({} when it does not exist): over netlink when the codec
    reads its type (no nft cache fill), else through nft."""
    et = _element_type(name)
    if et is not None:
        got = nft.elements.dump(FAMILY, TABLE, name, et)
        return frozenset(k for k, _ in got or ())
    kind, elems = parse_elements(nft.list(f"set {T} {name}"))
    return elems if kind == "set" else frozenset()


def read_map(nft: Nft, name: str) -> dict[str, str]:
    et = _element_type(name)
    if et is not None:
        return {k: v for k, v in nft.elements.dump(FAMILY, TABLE, name, et) or () if v is not None}
    kind, elems = parse_elements(nft.list(f"map {T} {name}"))
    return elems if kind == "map" else {}


def read_elements(nft: Nft, chains) -> tuple[dict[str, frozenset[str]], dict[str, dict[str, str]]]:
    """(sets, maps) of the table in the kernel: the fixed sets and maps, and the backends map of
    each of `chains` that has one."""
    sets = {name: read_set(nft, name) for name in SETS}
    maps = {name: read_map(nft, name) for name in MAPS}
    for chain in chains:
        if chain.map:
            maps[chain.map] = read_map(nft, chain.map)
    return sets, maps


def services_command(argv: list[str]) -> int:
    """`kubeweft services`: what this network namespace's service table does with each
    frontend, read from the kernel (in the lab: `kubeweft lab node-exec NODE -- kubeweft
    services`)."""
    ap = argparse.ArgumentParser(prog="kubeweft services",
                                 description="what this network namespace's service table does with each "
                                             "Service frontend, read from the kernel")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    nft = Nft()
    listed = nft.elements.chains(FAMILY, TABLE)
    if listed is None:
        print(f"kubeweft services: no table {T} in this network namespace (is the agent running here?)",
              file=sys.stderr)
        return 1
    sets, maps = read_elements(nft, [c for c in (family_chain(name) for name, _ in listed) if c is not None])
    frontends = describe_frontends(sets, maps)
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in frontends], indent=2))
    else:
        print("\n".join(format_frontends(frontends)))
    return 0


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection while a sync builds objects: nothing it makes forms a cycle,
    and with 30k Services alive every collection walks them all (~15% of a full sync's CPU)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _trim_heap() -> None:
    """Give back to the system what a full sync's temporary objects took (freed, but kept by
    malloc otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def start(api, cfg) -> ServiceProxy:
    """The agent's entry point: returns at once; the first sync follows the informers' lists."""
    return ServiceProxy(api, cfg).start()
