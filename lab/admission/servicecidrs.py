"""ServiceCIDR (networking.k8s.io/v1) validation as the real server words it, and the Ready
condition the real ServiceCIDR controller sets (here at once on create: nothing else could make
a new range unusable in the lab). Pure."""
from __future__ import annotations

import datetime
import ipaddress

from ..errors import Cause
from .fields import CIDR_MSG, invalid, required


def validate_service_cidr(obj: dict, old: dict | None) -> list[Cause]:
    cidrs = (obj.get("spec") or {}).get("cidrs")
    if not cidrs:
        return [required("spec.cidrs")]
    causes: list[Cause] = []
    if len(cidrs) > 2:
        causes.append(invalid("spec.cidrs", cidrs, "may only hold up to 2 values"))
    families = []
    for i, cidr in enumerate(cidrs):
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except (ValueError, TypeError):
            causes.append(invalid(f"spec.cidrs[{i}]", cidr, CIDR_MSG))
            continue
        families.append(net.version)
    if len(families) == 2 and families[0] == families[1]:
        causes.append(invalid("spec.cidrs", cidrs, "may specify no more than one IP for each IP family, "
                                                   "i.e 192.168.0.0/24 and 2001:db8::/64"))
    if old is not None:
        was = (old.get("spec") or {}).get("cidrs") or []
        if cidrs[:len(was)] != was:
            causes.append(invalid("spec.cidrs", cidrs, "field is immutable"))
    return causes


def render_service_cidr_status(now: datetime.datetime | None = None) -> dict:
    when = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"conditions": [{"type": "Ready", "status": "True", "reason": "", "message": "",
                            "lastTransitionTime": when}]}
