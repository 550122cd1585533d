"""A Service's IP families: spec.ipFamilyPolicy, spec.ipFamilies and spec.clusterIPs, defaulted and
checked as the real API server does on a single-stack or dual-stack cluster (the registry's
initIPFamilyFields before allocation, the clusterIPs rules of validation, and the rules an update
follows to add or release the secondary family). Pure: plain dicts in, causes out.

`configured` is the cluster's families, primary first: ("IPv4",), ("IPv6",) or ("IPv4", "IPv6"),
as the API server's --service-cluster-ip-range gives them.
"""
from __future__ import annotations

import ipaddress

from ..errors import Cause
from .fields import duplicate, invalid, is_ip, unsupported

IPV4, IPV6 = "IPv4", "IPv6"
FAMILIES = (IPV4, IPV6)
SINGLE, PREFER, REQUIRE = "SingleStack", "PreferDualStack", "RequireDualStack"
POLICIES = (PREFER, REQUIRE, SINGLE)            # in the order the real server lists them
ADDRESS_TYPES = {4: IPV4, 6: IPV6}              # an IP version's family name, also an EndpointSlice addressType
VALID_IP_MSG = "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)"


def family_of(ip: str) -> str:
    return ADDRESS_TYPES[ipaddress.ip_address(ip).version]


def configured_families(versions: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(ADDRESS_TYPES[v] for v in versions)


def other_family(family: str) -> str:
    return IPV6 if family == IPV4 else IPV4


def is_headless(spec: dict) -> bool:
    return (spec.get("clusterIPs") or []) == ["None"]


def validate_cluster_ip_fields(spec: dict) -> list[Cause]:
    """clusterIP, clusterIPs, ipFamilies and ipFamilyPolicy on their own and against each other."""
    out: list[Cause] = []
    ips = spec.get("clusterIPs") or []
    if spec.get("clusterIP"):
        if not ips:
            out.append(Cause("spec.clusterIPs", "FieldValueRequired", "Required value"))
        elif ips[0] != spec["clusterIP"]:
            out.append(invalid("spec.clusterIPs", ips, "first value must match `clusterIP`"))
    elif ips:
        out.append(invalid("spec.clusterIPs", ips, "must be empty when `clusterIP` is not specified"))
    seen: set[str] = set()
    for i, fam in enumerate(spec.get("ipFamilies") or []):
        if fam not in FAMILIES:
            out.append(unsupported(f"spec.ipFamilies[{i}]", fam, FAMILIES))
        if fam in seen:
            out.append(duplicate(f"spec.ipFamilies[{i}]", f'"{fam}"'))
        seen.add(fam)
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in POLICIES:
        out.append(unsupported("spec.ipFamilyPolicy", policy, POLICIES))
    bad_ip = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if len(ips) > 1:
                bad_ip = True
                out.append(invalid("spec.clusterIPs", ips, "'None' must be the first and only value"))
            continue
        if not is_ip(ip):
            bad_ip = True
            out.append(invalid(f"spec.clusterIPs[{i}]", ip, VALID_IP_MSG))
    if len(ips) > 2:
        out.append(invalid("spec.clusterIPs", ips, "may only hold up to 2 values"))
    if bad_ip:
        return out            # the checks below would only restate a bad address
    if len(ips) > 1 and len({family_of(ip) for ip in ips}) != len(ips):
        out.append(invalid("spec.clusterIPs", ips, "may specify no more than one IP for each IP family"))
    fams = spec.get("ipFamilies") or []
    if not is_headless(spec):
        for i, (ip, fam) in enumerate(zip(ips, fams)):
            if fam in FAMILIES and family_of(ip) != fam:
                out.append(invalid(f"spec.clusterIPs[{i}]", ip,
                                   f"expected an {fam} value as indicated by `ipFamilies[{i}]`"))
    return out


def _prefer_dual_stack_unchanged(spec: dict, ospec: dict) -> bool:
    """A PreferDualStack Service updated without touching its families keeps them as they are,
    also when the cluster's families changed since it was made."""
    allocating = ("ClusterIP", "NodePort", "LoadBalancer")
    return (spec.get("type") == ospec.get("type") and spec.get("type") in allocating
            and spec.get("ipFamilyPolicy") == PREFER and ospec.get("ipFamilyPolicy") == PREFER
            and (spec.get("clusterIPs") or []) == (ospec.get("clusterIPs") or [])
            and (spec.get("ipFamilies") or []) == (ospec.get("ipFamilies") or []))


def plan_ip_families(svc: dict, old: dict | None, configured: tuple[str, ...]) -> list[Cause]:
    """Fill in ipFamilyPolicy and ipFamilies (in place) as the registry does before allocating,
    or say why the request cannot be served on a cluster with these families. ExternalName
    Services have no families."""
    spec = svc.setdefault("spec", {})
    if spec.get("type", "ClusterIP") == "ExternalName":
        return []
    ospec = (old or {}).get("spec") or {}
    if old is not None and _prefer_dual_stack_unchanged(spec, ospec):
        return []
    if spec.get("ipFamilyPolicy") is None:
        if ospec.get("ipFamilyPolicy"):
            spec["ipFamilyPolicy"] = ospec["ipFamilyPolicy"]
        elif spec.get("clusterIP") == "None" and not spec.get("selector"):
            spec["ipFamilyPolicy"] = REQUIRE       # headless without a selector: every family
        else:
            spec["ipFamilyPolicy"] = SINGLE
    causes = validate_cluster_ip_fields(spec)
    if causes:
        return causes
    policy = spec["ipFamilyPolicy"]
    ips = list(spec.get("clusterIPs") or [])
    fams = list(spec.get("ipFamilies") or [])
    if old is not None:
        if policy == SINGLE:
            # asking for SingleStack with the old addresses and families releases the secondary
            if ips == (ospec.get("clusterIPs") or []) and len(ips) > 1:
                spec["clusterIPs"] = ips = ips[:1]
            if fams == (ospec.get("ipFamilies") or []) and len(fams) > 1:
                spec["ipFamilies"] = fams = fams[:1]
        else:
            if len(ips) < len(ospec.get("clusterIPs") or []):
                causes.append(invalid("spec.ipFamilyPolicy", policy,
                                      "must be 'SingleStack' to release the secondary cluster IP"))
            if len(fams) < len(ospec.get("ipFamilies") or []):
                causes.append(invalid("spec.ipFamilyPolicy", policy,
                                      "must be 'SingleStack' to release the secondary IP family"))
    if policy == SINGLE:
        if len(ips) == 2:
            causes.append(invalid("spec.ipFamilyPolicy", policy,
                                  "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs "
                                  "are specified"))
        if len(fams) == 2:
            causes.append(invalid("spec.ipFamilyPolicy", policy,
                                  "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families "
                                  "are specified"))
    for i, ip in enumerate(ips):
        if ip == "None":
            break
        if i >= len(fams):
            fam = family_of(ip)
            if fam not in configured:
                causes.append(invalid(f"spec.clusterIPs[{i}]", ips, f"{fam} is not configured on this cluster"))
            else:
                fams.append(fam)
    if causes:
        return causes
    if spec.get("clusterIP") == "None" and not spec.get("selector"):
        # headless without a selector: allowed every family, also on a single-stack cluster
        fams = fams or [configured[0]]
        if len(fams) < 2 and policy != SINGLE:
            fams.append(other_family(fams[0]))
        spec["ipFamilies"] = fams
        return []
    if policy == REQUIRE and len(configured) < 2:
        causes.append(invalid("spec.ipFamilyPolicy", policy, "this cluster is not configured for dual-stack services"))
    for i, fam in enumerate(fams):
        if fam not in configured:
            causes.append(invalid(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster"))
    if causes:
        return causes
    fams = fams or [configured[0]]
    if policy != SINGLE and len(fams) == 1 and len(configured) == 2:
        fams.append(other_family(fams[0]))
    spec["ipFamilies"] = fams
    return []


def _check_list_update(name: str, new: list, old: list, policy: str | None, shown: list,
                       noun: str, index_each: bool) -> list[Cause]:
    """clusterIPs or ipFamilies on update: the same length keeps every value, a shorter list
    keeps the primary and needs SingleStack, a longer one keeps the primary. `shown` is the value
    the real server prints for a changed primary."""
    out: list[Cause] = []
    if len(new) == len(old):
        out += [invalid(f"spec.{name}[{i if index_each else 0}]", new, "may not change once set")
                for i, value in enumerate(old) if value != new[i]]
    elif len(old) > len(new):
        if new and new[0] != old[0]:
            out.append(invalid(f"spec.{name}[0]", shown, "may not change once set"))
        if len(new) == 1 and policy != SINGLE:
            out.append(invalid("spec.ipFamilyPolicy", policy,
                               f"must be set to 'SingleStack' when releasing the secondary {noun}"))
    elif old and new[0] != old[0]:
        out.append(invalid(f"spec.{name}[0]", shown, "may not change once set"))
    return out


def validate_family_update(svc: dict, old: dict) -> list[Cause]:
    """What an update may do to clusterIPs and ipFamilies: add the secondary, release it with
    SingleStack, never change the primary (ExternalName and headless Services aside)."""
    spec, ospec = svc.get("spec") or {}, old.get("spec") or {}
    if "ExternalName" in (spec.get("type"), ospec.get("type")):
        return []
    out: list[Cause] = []
    new_h, old_h = is_headless(spec), is_headless(ospec)
    ips, oips = spec.get("clusterIPs") or [], ospec.get("clusterIPs") or []
    policy = spec.get("ipFamilyPolicy")
    if not (new_h and old_h):
        if oips and not ips:
            out.append(invalid("spec.clusterIPs[0]", ips, "primary clusterIP can not be unset"))
        out += _check_list_update("clusterIPs", ips, oips, policy, ips, "clusterIP", True)
    if new_h or old_h:
        return out
    # the real server shows clusterIPs as the value of a changed primary family
    return out + _check_list_update("ipFamilies", spec.get("ipFamilies") or [], ospec.get("ipFamilies") or [],
                                    policy, ips, "ipFamily", False)
