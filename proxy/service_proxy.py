"""The service proxy: Services and EndpointSlices -> `table ip kubeweft` and `table ip6
kubeweft` (kube-proxy's job), one ServiceProxy per IP family the node has (kube-proxy's
nftables mode: one proxier per family, each taking its family's addresses of every Service and
the EndpointSlices of its addressType), all fed by one ServiceWatch (proxy/service_watch.py).

    informers (raw JSON) -> model (frozen values) -> per-Service fragments (render_service)
        -> Aggregate (ref-counted desired state) -> typed commands for the touched elements only
           (diff_services) -> a Transaction applied through the nftables layer
           (nft_transaction: elements over netlink, structure through libnftables)
        -> mirror of what the kernel holds -> conntrack cleanup, health

Only the Services whose objects changed are re-rendered, and only their elements are diffed, so
one EndpointSlice change costs the same at 30 Services and at 30,000. The ruleset is never
listed: at start the agent reads back its own table over netlink (table_readback: the names of
its chains and sets, the elements of its sets and maps; never flushing them), so a restarted
agent changes nothing that is right, deletes what nobody wants any more, and connections keep
flowing through it. Elements skip nft's parser (proxy/element_codec.py): at 30k Services, ~180k
elements cost ~2 s of libnftables CPU as text and ~0.4 s encoded here plus ~0.4 s in the kernel.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import json
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import metrics
from .conntrack import clear_udp
from .diff_services import (
    commit_touched,
    diff_full,
    diff_touched,
    empty_applied,
    plan_udp_cleanup,
    touched_udp,
)
from .frontends import describe_frontends, format_frontends
from .health import ProxyHealth, ServiceHealthServers
from .ip_family import FAMILIES as IP_FAMILIES
from .ip_family import version_of
from .model import Node, has_family, plan_service_cidrs
from .nft_commands import Command
from .nft_transaction import Transaction, apply_transaction
from .nftables import Nft, NftError
from .render_services import (
    SERVICE_TABLES,
    Aggregate,
    Desired,
    NodeContext,
    family_chain,
    render_base,
    render_service,
)
from .service_watch import ServiceWatch
from .sync_loop import SyncLoop
from .table_readback import read_elements, read_table

log = logging.getLogger(__name__)

SYNC_WAIT = 120.0        # an error is logged each time the informers' first lists take this long
COALESCE = 0.002         # gather events arriving together into one transaction
RESYNC = 60.0            # seconds between two syncs when no event comes


def of_family(cidrs, version: int) -> list[str]:
    """The CIDRs (a comma-separated flag value or a sequence) of one IP family."""
    items = cidrs.split(",") if isinstance(cidrs, str) else list(cidrs or ())
    return [c.strip() for c in items if c.strip() and version_of(c.strip()) == version]


def node_context(cfg, version: int = 4) -> NodeContext:
    """This node's facts for the proxier of one IP family: that family's entries of the
    cluster, service and nodePort CIDRs the agent was given (kube-proxy's flags take one per
    family, comma-separated)."""
    fam = IP_FAMILIES[version]
    # without a cluster CIDR of the family, the node's podCIDR of it stands for the cluster
    # (kube-proxy's detect-local by node CIDR)
    cluster = of_family(cfg.cluster_cidr or "", version) or \
        of_family((cfg.pod_cidr, *getattr(cfg, "pod_cidrs", ())), version)
    if not cluster:
        raise ValueError(f"no {fam.label} range in --cluster-cidr {cfg.cluster_cidr!r} nor in the node's podCIDRs")
    # without a service range of the family, the ServiceCIDR objects' ranges alone say what an
    # unallocated address is (none until they are read)
    service = of_family(cfg.service_cidr, version)
    return NodeContext(node_name=cfg.node_name, cluster_cidr=cluster[0], service_cidr=service[0] if service else "",
                       nodeport_cidrs=tuple(of_family(cfg.nodeport_addresses, version)),
                       scheduler=cfg.scheduler, family=version)


class ServiceProxy:
    def __init__(self, api, cfg, nft=None, family: int = 4, sync_turn: threading.Lock | None = None):
        """nft: the nftables backend; by default Nft() here, in the node's netns where the agent
        lives (tests give the Fake, proxy/nft_fake.py). family: the IP family of this proxier's
        table (4: `ip kubeweft`, 6: `ip6 kubeweft`). sync_turn: a lock the proxiers of one agent
        share, so their syncs take turns (see start())."""
        self.sync_turn = sync_turn
        self.api = api
        self.cfg = cfg
        self.ctx = node_context(cfg, family)
        self.table = SERVICE_TABLES[family]
        self.ip_family = IP_FAMILIES[family].label
        self.nft = nft if nft is not None else Nft()
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
        self.health = ProxyHealth()            # served by the agent's /healthz and /livez
        self.service_health = ServiceHealthServers("::" if family == 6 else "0.0.0.0")
        self.watch: ServiceWatch | None = None         # the informers that feed this proxier
        self.rebase = False                            # the fixed chains need rendering again
        self.loop = SyncLoop("service-proxy" if family == 4 else "service-proxy-ipv6", self.sync, debounce=COALESCE, period=RESYNC,
                             on_failure=self._sync_failed, ready=self._listed, ready_warn=SYNC_WAIT)

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, watch: ServiceWatch) -> ServiceProxy:
        """Sync from what `watch` hands this proxier (its first sync once the watch has listed)."""
        self.watch = watch
        self.loop.start()
        return self

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        self.loop.stop(10)
        self.service_health.close()

    # ---- the watch's values (informer threads) --------------------------------------------------
    def _mark(self, keys, trigger: float | None = None) -> None:
        self.dirty.update(keys)
        if trigger is not None:
            self.triggers.append(trigger)
        self.health.queued()
        metrics.LAST_QUEUED.labels(self.ip_family).set(time.time())
        self.loop.wake()

    def _mine(self, svc):
        """The Service if this family's proxier programs it (it has a ClusterIP of the family)."""
        return svc if svc is not None and has_family(svc, self.ctx.family) else None

    def take_service(self, key, svc) -> bool:
        """One Service changed (svc None: deleted, or none to program); True when this family's
        view of it changed."""
        svc = self._mine(svc)
        with self.lock:
            if self.services.get(key) == svc:
                return False            # a change the proxy does not see (status, annotations)
            if svc is None:
                self.services.pop(key, None)
            else:
                self.services[key] = svc
            self._mark([key])
        return True

    def take_services(self, objects: dict) -> None:
        """objects: key -> Service, or None for one we leave alone (a list's whole set)."""
        parsed = {key: svc for key, svc in objects.items() if self._mine(svc) is not None}
        with self.lock:
            old = set(self.services)
            self.services = parsed
            self._mark(old | set(parsed))

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

    def take_slice(self, key, sl, trigger: float) -> bool:
        """One EndpointSlice changed (sl None: deleted, or unusable); a slice of the other
        addressType is none of this proxier's. True when this family's view changed."""
        if sl is not None and sl.family != self.ctx.family:
            sl = None
        with self.lock:
            if self.slices.get(key) == sl:
                return False
            self._mark(self._put_slice(key, sl), trigger)
        return True

    def take_slices(self, objects: dict) -> None:
        """objects: key -> EndpointSlice, or None for one we cannot use (a list's whole set)."""
        family = self.ctx.family
        with self.lock:
            touched = set()
            for key in list(self.slices):
                if key not in objects:
                    touched |= self._put_slice(key, None)
            for key, sl in objects.items():
                touched |= self._put_slice(key, sl if sl is not None and sl.family == family else None)
            self._mark(touched)

    def take_node(self, node: Node) -> None:
        """This node's Node: its eligibility for load-balancer traffic and its zone."""
        self.health.node_eligible = node.eligible
        if node.zone == self.ctx.zone:
            return
        with self.lock:
            self.ctx = dataclasses.replace(self.ctx, zone=node.zone)
            self.full = True
            self._mark(())

    def take_service_cidrs(self, objects: dict) -> None:
        """The ServiceCIDR objects (JSON): this family's ranges, for the drop rule."""
        cidrs = plan_service_cidrs(objects.values(), self.ctx.family)
        with self.lock:
            if cidrs == self.ctx.service_cidrs:
                return
            log.info("service ranges from the ServiceCIDRs: %s", ", ".join(cidrs) or
                     f"none (--service-cidr {self.cfg.service_cidr})")
            self.ctx = dataclasses.replace(self.ctx, service_cidrs=cidrs)
            self.rebase = True
            self._mark(())

    # ---- the sync loop --------------------------------------------------------------------------
    def _listed(self) -> bool:
        return self.watch is None or self.watch.listed()

    def _sync_failed(self) -> None:
        """After a failed sync the kernel's table is unknown: the retry reads it back and syncs
        everything."""
        metrics.SYNC_FAILURES.inc()
        self.recovered = False
        with self.lock:
            self.full = True

    def recover(self) -> Desired:
        """What the kernel holds of our table (table_readback.read_table: targeted reads over
        netlink, never the ruleset nor nft's cache), so EVERY on-demand chain and dynamic set is
        known and the next full sync deletes those nobody wants."""
        t0 = time.monotonic()
        got = read_table(self.nft, self.ctx)
        log.info("read back %d elements, %d chains, %d dynamic sets of table %s in %.0f ms",
                 got.counts()["elements"], len(got.chains), len(got.dynsets), self.table.ref,
                 (time.monotonic() - t0) * 1000)
        return got

    def sync(self) -> int:
        """One transaction for everything queued; returns the number of commands sent.
        No cyclic garbage collection meanwhile: a full sync makes ~100k objects (read back,
        work list, fragments) and with 30k Services alive every collection walks them all."""
        with self.sync_turn or contextlib.nullcontext(), _gc_paused():
            return self._sync()

    def _sync(self) -> int:
        t0 = time.monotonic()
        with self.lock:
            full = self.full or not self.recovered
            keys = self.services.keys() | self.agg.fragments.keys() if full else self.dirty
            self.dirty = set()
            self.full = False
            triggers, self.triggers = self.triggers, []
            ctx = self.ctx
            rebase, self.rebase = self.rebase, False
            # the slices looked up by map(), no nested comprehension (a Python frame per Service):
            # the work list of 100k Services in ~0.4 s of CPU where it took ~0.55 s
            get_service, get_slice, slices_of, none = self.services.get, self.slices.__getitem__, self.slices_of, ()
            work = [(k, get_service(k), tuple(map(get_slice, slices_of.get(k, none)))) for k in keys]
        base: list[Command] = []
        unknown = False
        reading = None
        if not self.recovered:
            # read back while this thread renders: the kernel's dump of a hash map walks it again
            # from its start for every ~32 kB it returns, so 300k elements cost ~4 s of kernel
            # CPU (50k: 0.1 s), spent in recv() without the GIL
            pool = ThreadPoolExecutor(1, thread_name_prefix="service-read-back")
            reading = pool.submit(self.recover)
            pool.shutdown(wait=False)        # the thread ends with the read back
            base = render_base(ctx)
            unknown = True
        elif rebase:
            base = render_base(ctx)          # the fixed chains again (flushed and refilled at once)
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
        waited = 0.0                     # for the read back, once the render was done
        if reading is not None:
            self.applied = reading.result()
            waited = time.monotonic() - t_render
        if full:
            udp_gone = plan_udp_cleanup(self.applied, self.agg, touched_udp(self.applied))
            diff, mirror = diff_full(self.applied, self.agg, unknown_chains=unknown)
            cmds = base + diff
        else:
            if touched is None and not base:
                return 0
            cmds = base
            if touched is not None:
                cmds = base + diff_touched(self.applied, self.agg, touched)
                udp_gone = plan_udp_cleanup(self.applied, self.agg, touched)
        t_diff = time.monotonic()
        # planned flows wait here until cleared: if the apply fails after a transaction landed,
        # the re-read kernel no longer shows the endpoints that went, and nothing plans them again
        self.udp_pending |= udp_gone
        if cmds:
            try:
                apply_transaction(self.nft, Transaction(self.table, cmds),
                                  empty=full and not self.applied.counts()["elements"])
            except NftError:
                log.error("nft transaction of %d commands failed", len(cmds))
                raise
        t_applied = time.monotonic()
        if full:
            self.applied = mirror
            _trim_heap()
        elif touched is not None:
            commit_touched(self.applied, self.agg, touched)
        sent = len(cmds)
        self.recovered = True
        self.syncs += 1
        now = time.time()
        elapsed = time.monotonic() - t0
        metrics.SYNC_DURATION.labels(self.ip_family).observe(elapsed)
        (metrics.SYNC_FULL_DURATION if full else metrics.SYNC_PARTIAL_DURATION).observe(elapsed)
        for trig in triggers:
            metrics.NETWORK_PROGRAMMING.observe(max(0.0, now - trig))
        metrics.LAST_SYNC.labels(self.ip_family).set(now)
        metrics.COMMANDS.observe(sent)
        counts = self.applied.counts()
        metrics.ELEMENTS.labels(self.ip_family).set(counts["elements"])
        metrics.CHAINS.labels(self.ip_family).set(counts["chains"])
        metrics.SERVICES.labels(self.ip_family).set(len(self.agg.fragments))
        self.health.updated()
        self.service_health.update(self.applied.health)
        if self.udp_pending:
            flows, self.udp_pending = self.udp_pending, set()
            clear_udp(flows)
        log.log(logging.INFO if full or sent > 50 else logging.DEBUG,
                "synced %s %s: %d services changed, %d commands in %.1f ms (read back %.0f, render %.0f, "
                "diff %.0f, apply %.0f ms)", self.ip_family, "full" if full else "partial", len(work), sent, elapsed * 1000,
                (t_read - t0 + waited) * 1000, (t_render - t_read) * 1000, (t_diff - t_render - waited) * 1000,
                (t_applied - t_diff) * 1000)
        return sent


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
    frontends = []
    found = []
    for table in SERVICE_TABLES.values():
        listed = nft.elements.chains(table.family, table.name)
        if listed is None:
            continue
        found.append(table.ref)
        sets, maps = read_elements(nft, [c for c in (family_chain(name, table.family) for name, _ in listed)
                                         if c is not None], table)
        frontends += describe_frontends(sets, maps)
    if not found:
        print("kubeweft services: no table ip kubeweft or ip6 kubeweft in this network namespace "
              "(is the agent running here?)", file=sys.stderr)
        return 1
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


class ServiceProxies:
    """The proxiers of the node's IP families, as one component: started and stopped together,
    healthy and synced when every one is."""

    def __init__(self, proxies: list[ServiceProxy]):
        self.proxies = proxies
        self.health = _AllHealthy([p.health for p in proxies])

    @property
    def syncs(self) -> int:
        """Syncs of the proxier that synced least: 0 until every family's table is in the kernel."""
        return min(p.syncs for p in self.proxies)

    def stop(self) -> None:
        for p in self.proxies:
            p.stop()


class _AllHealthy:
    """The ProxyHealth of several proxiers as one: healthy when each is (kube-proxy's healthz
    server tracks every family's proxier the same way)."""

    def __init__(self, parts: list[ProxyHealth]):
        self.parts = parts

    @property
    def node_eligible(self) -> bool:
        return all(p.node_eligible for p in self.parts)

    def status(self) -> tuple[bool, dict]:
        results = [p.status() for p in self.parts]
        return all(ok for ok, _ in results), results[0][1]

    def healthz(self) -> tuple[bool, dict]:
        results = [p.healthz() for p in self.parts]
        return all(ok for ok, _ in results), results[0][1]


def start(api, cfg, families: tuple[int, ...] = (4,)):
    """The agent's entry point: one proxier per IP family and the one watch that feeds them all,
    started at once; the first syncs follow the watch's lists. One family gives that family's ServiceProxy itself."""
    # The families' syncs take turns: two full syncs at once share the interpreter's lock and both
    # end late. 30k dual-stack Services (bench/services.py --ip-family both, load ~9): each
    # family's concurrent first sync took 7.2-7.3 s where IPv4 alone took 1.36 s.
    turn = threading.Lock()
    proxies = [ServiceProxy(api, cfg, family=v, sync_turn=turn) for v in families]
    # one informer per kind for every family (proxy/service_watch.py)
    watch = ServiceWatch(api, cfg, proxies)
    for p in proxies:
        p.start(watch)
    watch.start()
    return proxies[0] if len(proxies) == 1 else ServiceProxies(proxies)
