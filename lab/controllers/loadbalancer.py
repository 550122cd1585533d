"""The load-balancer IP allocator, as k3s's klipper-lb or MetalLB would be in a real cluster.

Services of type LoadBalancer (without a loadBalancerClass: those belong to someone else) get
status.loadBalancer.ingress [{ip, ipMode: VIP}], one address per family of spec.ipFamilies (in
that order) from that family's subnet of cfg.lb_subnets, skipping the network address and the
first one (the subnet's router), as MetalLB does with a pool per family. spec.loadBalancerIP is
honoured (that address alone) when it is in a subnet and free; otherwise the Service stays
pending, as MetalLB leaves it. A Service that stops being a
LoadBalancer has its ingress cleared. Addresses in use are the ones in the store's statuses.
"""
from __future__ import annotations

import ipaddress
import logging

from ..resources import SERVICES
from .loop import Reconciler

log = logging.getLogger("kubeweft.lab.controllers.loadbalancer")



def is_ours(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def ingress_ips(svc: dict) -> list[str]:
    lb = (svc.get("status") or {}).get("loadBalancer") or {}
    return [i["ip"] for i in lb.get("ingress") or [] if i.get("ip")]


def plan_lb_ip(svc: dict, used: dict[str, tuple[str, str]], subnet: str) -> str | None:
    """The address this Service should have, or None (not ours, or nothing suitable is free)."""
    if not is_ours(svc):
        return None
    meta = svc["metadata"]
    me = (meta.get("namespace", ""), meta["name"])
    net = ipaddress.ip_network(subnet)
    want = (svc.get("spec") or {}).get("loadBalancerIP")
    if want:
        try:
            ok = ipaddress.ip_address(want) in net
        except ValueError:
            ok = False
        return want if ok and used.get(want, me) == me else None
    for ip in ingress_ips(svc):
        if used.get(ip, me) == me and ipaddress.ip_address(ip) in net:
            return ip                                    # keep what it has
    for addr in net.hosts():
        if int(addr) - int(net.network_address) < 2:
            continue                                     # skip .0 and .1 (the router)
        if str(addr) not in used:
            return str(addr)
    return None


def plan_lb_ips(svc: dict, used: dict[str, tuple[str, str]], subnets: tuple[str, ...]) -> list[str]:
    """The addresses this Service should have: one per family of its spec.ipFamilies that has a
    subnet, or only its loadBalancerIP; [] when it is not ours or nothing suitable is free."""
    spec = svc.get("spec") or {}
    if spec.get("loadBalancerIP"):
        return [ip for ip in (plan_lb_ip(svc, used, sub) for sub in subnets) if ip][:1]
    by_family = {("IPv6" if ipaddress.ip_network(sub).version == 6 else "IPv4"): sub for sub in subnets}
    families = spec.get("ipFamilies") or list(by_family)[:1]
    return [ip for ip in (plan_lb_ip(svc, used, by_family[f]) for f in families if f in by_family) if ip]


class LoadBalancerController(Reconciler):
    name = "loadbalancer-controller"

    def __init__(self, store, cfg):
        super().__init__(store, cfg)
        self.used: dict[str, tuple[str, str]] = {}

    def prime(self) -> None:
        for svc in self.store.list(SERVICES)[0]:
            self._account(svc, None)
            if is_ours(svc) or ingress_ips(svc):
                self.mark((svc["metadata"]["namespace"], svc["metadata"]["name"]))

    def _account(self, new: dict | None, old: dict | None) -> None:
        for svc, add in ((old, False), (new, True)):
            if svc is None:
                continue
            me = (svc["metadata"].get("namespace", ""), svc["metadata"]["name"])
            for ip in ingress_ips(svc):
                if add:
                    self.used[ip] = me
                elif self.used.get(ip) == me:
                    del self.used[ip]

    def on_event(self, ev) -> None:
        if ev.resource is not SERVICES:
            return
        self._account(None if ev.type == "DELETED" else ev.obj, ev.old)
        if ev.type == "DELETED":
            if ingress_ips(ev.obj):
                self._wake_pending()                     # an address came free
            return
        if is_ours(ev.obj) or ingress_ips(ev.obj) or (ev.old is not None and is_ours(ev.old)):
            self.mark((ev.obj["metadata"]["namespace"], ev.obj["metadata"]["name"]))

    def _wake_pending(self) -> None:
        for svc in self.store.list(SERVICES)[0]:
            if is_ours(svc) and not ingress_ips(svc):
                self.mark((svc["metadata"]["namespace"], svc["metadata"]["name"]))

    def sync(self, key: tuple[str, str]) -> None:
        svc = self.store.try_get(SERVICES, *key)
        if svc is None:
            return
        ips = plan_lb_ips(svc, self.used, self.cfg.lb_subnets)
        if not is_ours(svc):
            if not ingress_ips(svc) or (svc.get("spec") or {}).get("loadBalancerClass"):
                return
            lb: dict = {}                                # no longer a LoadBalancer: withdraw
        elif not ips:
            log.info("no load-balancer IP for %s/%s", *key)
            lb = {}
        else:
            lb = {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]}
        status = dict(svc.get("status") or {}, loadBalancer=lb)
        if status != svc.get("status"):
            self.store.update(SERVICES, {"metadata": {"namespace": key[0], "name": key[1]}, "status": status},
                              subresource="status")
            self.writes += 1
