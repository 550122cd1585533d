"""The address an Ingress's status.loadBalancer.ingress shows (what `kubectl get ingress` prints
as ADDRESS), chosen as ingress-nginx's status sync does (runningAddresses). Pure.

- --publish-status-address A,B: those addresses;
- --publish-service NS/NAME: that Service's load-balancer addresses and externalIPs
  (LoadBalancer), its externalIPs or else its ClusterIP (NodePort, ClusterIP), its
  externalName (ExternalName);
- else the address of the node the controller's pod runs on (ExternalIP, else InternalIP).
Addresses are sorted by IP then hostname, as ingress-nginx sorts them.
"""
from __future__ import annotations

import ipaddress

from .views import ServiceView

Address = tuple[str, str]       # (ip, hostname): one of the two is set


def _address(text: str) -> Address:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return "", text
    return text, ""


def plan_addresses(publish_status_address: str = "", publish_service: ServiceView | None = None,
                   node_address: str = "") -> tuple[Address, ...]:
    if publish_status_address:
        out = [_address(a.strip()) for a in publish_status_address.split(",") if a.strip()]
    elif publish_service is not None:
        out = _service_addresses(publish_service)
    elif node_address:
        out = [_address(node_address)]
    else:
        out = []
    return tuple(sorted(dict.fromkeys(out)))


def _service_addresses(svc: ServiceView) -> list[Address]:
    if svc.type == "ExternalName":
        return [("", svc.external_name)] if svc.external_name else []
    if svc.type == "LoadBalancer":
        return [a for a in svc.lb_addresses if a[0] or a[1]] + [_address(ip) for ip in svc.external_ips]
    if svc.external_ips:
        return [_address(ip) for ip in svc.external_ips]
    return [_address(svc.cluster_ip)] if svc.cluster_ip and svc.cluster_ip != "None" else []


def render_status_patch(addresses: tuple[Address, ...]) -> dict:
    """The merge patch of an Ingress's status for these addresses."""
    return {"status": {"loadBalancer": {"ingress": [{"ip": ip} if ip else {"hostname": host}
                                                    for ip, host in addresses]}}}
