"""The CNI plugin's work, inside the node agent: ADD, DEL, CHECK, STATUS and GC over IPAM and the
pod datapath. The shim forwards the runtime's call unchanged (environment and stdin); `handle`
parses it with cni.spec, acts, and answers with the result bytes or raises CniError.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from . import antispoof, bandwidth, datapath, ipam, nft, spec
from .errors import (
    CHECK_MISMATCH,
    DATAPATH_FAILURE,
    INTERNAL,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    PLUGIN_NOT_AVAILABLE,
    PLUGIN_NOT_AVAILABLE_RESOURCES,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
)
from .shim import AGENT_STATE

log = logging.getLogger("kubeweft.cni")
KEY_LOCKS = 64


class PodHook(Protocol):
    """What the CNI tells a component about pods on this node (see CniPlugin.pod_hooks)."""

    def pod_added(self, namespace: str, name: str, ips: Sequence[str], container_id: str) -> None: ...

    def pod_deleted(self, container_id: str) -> None: ...


class CniPlugin:
    """One node's CNI state: the pod ranges (one per IP family), the IPAM stores, the bridges
    made so far."""

    def __init__(self, pod_cidr, data_dir: Path, bridge: str = spec.DEFAULT_BRIDGE,
                 mtu: int | None = None, cluster_cidr: str | None = None) -> None:
        # the Node's podCIDRs: a list, or one string ("10.244.1.0/24,fd00:10:244:1::/64")
        self.pod_cidrs = ipam.parse_ranges(pod_cidr) if pod_cidr else []
        self.pod_cidr = ",".join(self.pod_cidrs) or None
        self.data_dir = Path(data_dir)
        self.bridge_name = bridge
        self.mtu = mtu or datapath.plan_pod_mtu(datapath.underlay_mtu(bridge))
        self.cluster_cidr = cluster_cidr
        nft.require_libnftables()       # masquerade and hostPorts: a missing module stops the agent now
        self._lock = threading.Lock()
        self._bridge_lock = threading.Lock()
        self._allocators: dict[Path, ipam.Pool] = {}
        self._bridges: dict[str, object] = {}
        self._inflight: set[tuple[str, str]] = set()   # ADDs under way: GC must not free them
        # ADD and DEL of one attachment run one after the other: a DEL that overtook its ADD
        # (the executable gave up on a slow ADD and the runtime sent DEL) removed the veth before
        # the ADD wrote its source checks, leaving elements of a veth that no longer existed.
        # Striped by key: bounded memory, and unrelated pods rarely wait on each other.
        self._key_locks = [threading.Lock() for _ in range(KEY_LOCKS)]
        # Components that must know a pod before its first packet (NetworkPolicy): called
        # after the address is reserved and BEFORE the interface exists; one that raises fails
        # the ADD with "try again later", so a pod never runs unprotected.
        self.pod_hooks: list[PodHook] = []

    # --- the agent's start -------------------------------------------------------------------
    def start(self) -> None:
        """Bridge, masquerade, and a store that matches the veths that exist (crash recovery)."""
        if self.pod_cidr is None:
            return
        alloc = self.allocator(None)
        self.bridge(self.bridge_name)
        antispoof.ensure_base()         # before any pod can send: veths are checked from creation
        if self.cluster_cidr:
            nft.ensure_masquerade(self.cluster_cidr)
        freed, _ = self.reconcile()
        if freed:
            log.info("reconcile: freed %s", freed)
        # a DEL made by the executable while no agent ran, or a crash, leaves elements behind
        try:
            stale = antispoof.forget_missing(datapath.list_links)
        except CniError as e:        # a clean-up: the agent serves without it, and GC tries again
            log.warning("reconcile: %s", e)
            stale = []
        if stale:
            log.info("reconcile: removed the source checks of missing veths %s", stale)
        self._write_state(alloc)

    def reconcile(self, alloc: ipam.Pool | None = None, bridge: str | None = None) -> tuple[list, list]:
        """Free every reservation whose host veth does not exist (a crash between reserve and
        wire, or between unwire and release). Host veths without a reservation are only
        reported: another store may hold them, and GC (with the runtime's list) removes them."""
        alloc = alloc or self.allocator(None)
        veths = datapath.list_host_veths(bridge or self.bridge_name)
        held = alloc.reservations()
        live = {k for k in held if datapath.host_veth_name(*k) in veths}
        freed = alloc.reconcile(live)
        unknown = sorted(veths - {datapath.host_veth_name(*k) for k in live})
        if unknown:
            log.warning("host veths without a reservation in %s (left for GC): %s", alloc.dir, unknown)
        return freed, unknown

    def _write_state(self, alloc: ipam.Pool) -> None:
        """What the shim's in-process DEL needs to find the store when the agent is down."""
        tmp = alloc.dir / f".{AGENT_STATE}.tmp"
        tmp.write_text(json.dumps({"podCIDR": str(alloc.subnets[0]), "gateway": str(alloc.gateways[0]),
                                   "podCIDRs": [str(n) for n in alloc.subnets],
                                   "bridge": self.bridge_name, "pid": os.getpid()}))
        os.replace(tmp, alloc.dir / AGENT_STATE)

    # --- shared state ------------------------------------------------------------------------
    def allocator(self, conf: spec.NetConf | None) -> ipam.Pool:
        if self.pod_cidr is None:
            raise CniError(TRY_AGAIN_LATER, "Try again later", "the node's podCIDR is not known yet")
        path = Path(conf.data_dir) if conf and conf.data_dir else self.data_dir
        with self._lock:
            alloc = self._allocators.get(path)
            if alloc is None:
                try:
                    alloc = ipam.Pool(path, self.pod_cidrs)
                except OSError as e:      # dataDir not creatable or not writable
                    raise CniError(IO_FAILURE, "I/O failure", f"IPAM store {path}: {e}") from e
                if path != self.data_dir:
                    # a store named by the conflist (dataDir), not the agent's own: reconcile it
                    # too before first use (start() did the agent's own)
                    freed, _ = self.reconcile(alloc, conf.bridge if conf else None)
                    if freed:
                        log.info("reconcile %s: freed %s", path, freed)
                    self._write_state(alloc)
                self._allocators[path] = alloc
            return alloc

    def bridge(self, name: str):
        info = self._bridges.get(name)
        if info is None:
            with self._bridge_lock:
                info = self._bridges.get(name)
                if info is None:
                    if self.pod_cidr is None:
                        raise CniError(TRY_AGAIN_LATER, "Try again later", "podCIDR not known yet")
                    gateways = [ipam.parse_subnet(c, None)[1] for c in self.pod_cidrs]
                    info = self._bridges[name] = datapath.ensure_bridge(name, gateways, self.mtu)
        return info

    # --- the entry point ---------------------------------------------------------------------
    def handle(self, environ: Mapping[str, str], config: bytes) -> bytes:
        inv = spec.parse_env(environ)
        conf = spec.parse_config(config, inv.command)
        try:
            if inv.command == "ADD":
                with self._key_lock(inv):
                    return spec.render_json(self.add(inv, conf))
            if inv.command == "DEL":
                with self._key_lock(inv):
                    self.delete(inv, conf)
            elif inv.command == "CHECK":
                self.check(inv, conf)
            elif inv.command == "STATUS":
                self.status(conf)
            elif inv.command == "GC":
                self.gc(conf)
            elif inv.command == "VERSION":
                return spec.render_json(spec.render_version_info(conf.cni_version))
            return b""
        except CniError:
            raise
        except Exception as e:
            log.exception("%s %s failed", inv.command, inv.container_id)
            raise CniError(INTERNAL, f"{inv.command} failed", repr(e)) from e

    def _key_lock(self, inv: spec.Invocation) -> threading.Lock:
        return self._key_locks[hash(_key(inv)) % KEY_LOCKS]

    # --- ADD ---------------------------------------------------------------------------------
    def add(self, inv: spec.Invocation, conf: spec.NetConf) -> dict:
        key = (inv.container_id, inv.ifname)
        requested, mac = spec.parse_requested(conf, inv)
        mappings = conf.port_mappings
        rates = conf.bandwidth
        mtu = conf.mtu or self.mtu
        alloc = self.allocator(conf)
        if mtu < datapath.IPV6_MIN_MTU and any(n.version == 6 for n in alloc.subnets):
            raise CniError(INVALID_NETWORK_CONFIG, "Invalid network config",
                           f"mtu {mtu} is below IPv6's minimum of {datapath.IPV6_MIN_MTU} (the node has an IPv6 range)")
        with self._lock:
            self._inflight.add(key)
        wiring = None
        hostports = False
        # A reservation that exists already belongs to an earlier ADD of this key: a failure
        # now must not free it (the runtime's DEL will).
        reserved_here = False
        try:
            addresses, reserved_here = alloc.claim(inv.container_id, inv.ifname, requested)
            pod_ips = [str(a.ip) for a in addresses]
            self._run_pod_hooks(inv, pod_ips)
            bridge = self.bridge(conf.bridge)
            wiring = datapath.wire_pod(inv.netns, inv.ifname, addresses, alloc.gateways, bridge.name,
                                       mtu, datapath.host_veth_name(*key), mac=mac)
            antispoof.allow_pod(wiring.host_veth, wiring.pod_mac, pod_ips)
            if mappings:
                hostports = True
                nft.set_hostports(inv.container_id, [_mapping_dict(m) for m in mappings], pod_ips)
            if rates:
                bandwidth.apply_bandwidth(inv.netns, wiring.pod_ifname, wiring.host_veth, rates)
        except BaseException as e:
            self._rollback(inv, alloc, wiring, hostports, reserved_here)
            if isinstance(e, CniError):
                raise
            if isinstance(e, Exception):
                log.exception("ADD %s failed", inv.container_id)
                raise CniError(DATAPATH_FAILURE, "ADD failed", repr(e)) from e
            raise
        finally:
            with self._lock:
                self._inflight.discard(key)
        interfaces = [
            {"name": bridge.name, "mac": bridge.mac},
            {"name": wiring.host_veth, "mac": wiring.host_mac},
            {"name": wiring.pod_ifname, "mac": wiring.pod_mac, "mtu": mtu,
             "sandbox": wiring.sandbox or inv.netns},
        ]
        ips = [{"address": str(a), "gateway": str(g.ip), "interface": 2}
               for a, g in zip(addresses, alloc.gateways, strict=True)]
        routes = [{"dst": "::/0" if g.version == 6 else "0.0.0.0/0", "gw": str(g.ip)} for g in alloc.gateways]
        log.info("ADD %s/%s %s -> %s on %s", inv.container_id, inv.ifname,
                 inv.k8s_pod.get("K8S_POD_NAME", ""), ",".join(map(str, addresses)), wiring.host_veth)
        return spec.render_result(conf.cni_version, interfaces, ips, routes, {}, conf.prev_result)

    def _run_pod_hooks(self, inv: spec.Invocation, ips: Sequence[str]) -> None:
        """The hooks learn every address of the pod, one per range, the primary first."""
        pod_ns = inv.k8s_pod.get("K8S_POD_NAMESPACE", "")
        pod_name = inv.k8s_pod.get("K8S_POD_NAME", "")
        for hook in self.pod_hooks:
            try:
                hook.pod_added(pod_ns, pod_name, tuple(ips), inv.container_id)
            except CniError:
                raise
            except Exception as e:
                log.exception("ADD %s: %s could not cover the pod", inv.container_id, type(hook).__name__)
                raise CniError(TRY_AGAIN_LATER, "Try again later",
                               f"{type(hook).__name__} could not cover pod {pod_ns}/{pod_name}: {e!r}") from e

    def _forget_pod(self, container_id: str) -> None:
        for hook in self.pod_hooks:
            try:
                hook.pod_deleted(container_id)
            except Exception:
                log.exception("DEL %s: %s failed to forget the pod", container_id, type(hook).__name__)

    def _rollback(self, inv, alloc, wiring, hostports: bool, reserved_here: bool) -> None:
        steps = [lambda: self._forget_pod(inv.container_id)] if reserved_here else []
        if hostports:
            steps.append(lambda: nft.clear_hostports(inv.container_id))
        if wiring is not None:
            steps.append(lambda: datapath.unwire_pod(inv.netns, inv.ifname, wiring.host_veth))
            steps.append(lambda: antispoof.forget_pod(wiring.host_veth))
        if reserved_here:
            steps.append(lambda: alloc.release(inv.container_id, inv.ifname))
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("rollback of ADD %s: a step failed", inv.container_id)

    # --- DEL ---------------------------------------------------------------------------------
    def delete(self, inv: spec.Invocation, conf: spec.NetConf) -> None:
        """Idempotent: an unknown container, a missing netns, a second DEL all succeed. The veth
        goes first, so that an address is never free while an interface still carries it."""
        host_veth = datapath.host_veth_name(inv.container_id, inv.ifname)
        netns = inv.netns if inv.netns and os.path.exists(inv.netns) else None
        if netns and self.pod_cidr is not None and not self.allocator(conf).lookup(*_key(inv)):
            # Not ours (e.g. the DEL after an ADD that failed because ifname existed): never
            # touch the sandbox's ifname, which belongs to another attachment.
            netns = None
        try:
            datapath.unwire_pod(netns, inv.ifname, host_veth)
        except CniError:
            raise
        except Exception as e:
            raise CniError(DATAPATH_FAILURE, "DEL could not remove the pod's veth", repr(e)) from e
        nft.clear_hostports(inv.container_id)
        antispoof.forget_pod(host_veth)
        self._forget_pod(inv.container_id)
        if self.pod_cidr is not None:
            try:
                freed = self.allocator(conf).release(inv.container_id, inv.ifname)
            except CniError as e:
                if e.code != IO_FAILURE:
                    raise
                # A read-only store: the veth is gone, so the next GC or agent start frees the
                # address; failing the DEL would only make the runtime retry it forever.
                log.warning("DEL %s/%s: address not freed: %s", inv.container_id, inv.ifname, e)
                return
            log.info("DEL %s/%s freed %s", inv.container_id, inv.ifname, [str(a) for a in freed or []])

    # --- CHECK -------------------------------------------------------------------------------
    def check(self, inv: spec.Invocation, conf: spec.NetConf) -> None:
        if conf.prev_result is None:
            raise CniError(INVALID_NETWORK_CONFIG, "Invalid network config", "CHECK needs prevResult")
        held = self.allocator(conf).lookup(inv.container_id, inv.ifname)
        if not held:
            raise CniError(UNKNOWN_CONTAINER, "Container unknown or does not exist",
                           f"no address reserved for {inv.container_id}/{inv.ifname}")
        if not os.path.exists(inv.netns):
            raise CniError(UNKNOWN_CONTAINER, "Container unknown or does not exist",
                           f"netns {inv.netns} does not exist")
        try:
            observed = _observed(datapath.inspect_pod(inv.netns, inv.ifname))
        except CniError:
            raise
        except Exception as e:
            raise CniError(UNKNOWN_CONTAINER, "Container unknown or does not exist",
                           f"cannot inspect {inv.ifname} in {inv.netns}: {e!r}") from e
        if observed is None:
            raise CniError(UNKNOWN_CONTAINER, "Container unknown or does not exist",
                           f"no interface {inv.ifname} in {inv.netns}")
        problems = spec.diff_check(conf.prev_result, inv.netns, inv.ifname, observed)
        listed = {ip["address"] for ip in conf.prev_result.get("ips") or []}
        problems += [f"IPAM holds {a}, which prevResult does not list" for a in held if str(a) not in listed]
        host_veth = datapath.host_veth_name(inv.container_id, inv.ifname)
        if host_veth not in datapath.list_host_veths(conf.bridge):
            problems.append(f"host veth {host_veth} is not on bridge {conf.bridge}")
        if problems:
            raise CniError(CHECK_MISMATCH, "CHECK failed", "; ".join(problems))

    # --- STATUS ------------------------------------------------------------------------------
    def status(self, conf: spec.NetConf) -> None:
        if self.pod_cidr is None:
            raise CniError(PLUGIN_NOT_AVAILABLE, "Plugin not available", "the node's podCIDR is not known yet")
        if self.allocator(conf).free_count() <= 0:
            raise CniError(PLUGIN_NOT_AVAILABLE_RESOURCES, "Plugin not available due to limited resources",
                           f"no addresses left in {self.pod_cidr}")

    # --- GC ----------------------------------------------------------------------------------
    def gc(self, conf: spec.NetConf) -> dict:
        """Free every reservation and remove every host veth not in the valid attachments."""
        valid = spec.parse_valid_attachments(conf)
        with self._lock:
            keep = valid | self._inflight
        freed = self.allocator(conf).gc(keep)
        wanted = {datapath.host_veth_name(*k) for k in keep}
        removed = sorted(datapath.list_host_veths(conf.bridge) - wanted)
        for veth in removed:
            datapath.unwire_pod(None, "", veth)
            antispoof.forget_pod(veth)
        stale = antispoof.forget_missing(datapath.list_links)     # veths gone before their DEL ran
        live_ids = {cid for cid, _ in keep}
        for (cid, _), _addr in freed:
            if cid not in live_ids:
                nft.clear_hostports(cid)
        log.info("GC: kept %d, freed %s, removed veths %s, source checks of missing veths %s",
                 len(keep), [str(a) for _, a in freed], removed, stale)
        return {"freed": [str(a) for _, a in freed], "removed": removed}


def _key(inv: spec.Invocation) -> tuple[str, str]:
    return inv.container_id, inv.ifname


def _mapping_dict(m: spec.PortMapping) -> dict:
    d = {"hostPort": m.host_port, "containerPort": m.container_port, "protocol": m.protocol}
    if m.host_ip:
        d["hostIP"] = m.host_ip
    return d


def _observed(obs) -> dict | None:
    """datapath.inspect_pod's answer as diff_check wants it (dict or object)."""
    if obs is None:
        return None
    get = obs.get if isinstance(obs, dict) else (lambda k, d=None: getattr(obs, k, d))
    routes = []
    for r in get("routes", None) or []:
        if isinstance(r, (tuple, list)):          # cni.datapath: (dst network, gateway or None)
            dst, gw = r[0], r[1]
        else:
            dst, gw = (r.get("dst"), r.get("gw")) if isinstance(r, dict) else (r.dst, r.gw)
        routes.append({"dst": str(dst) if dst else "", "gw": str(gw or "")})
    return {"mac": get("mac", ""), "addresses": [str(a) for a in get("addresses", None) or []],
            "routes": routes, "mtu": get("mtu", None)}
