"""Defaulting, validation and allocation on create and update: the API server's registry logic.

What a real kube-apiserver does between decoding a request and writing it to etcd, for the kinds
the lab serves:

    services     Service defaults, what an update keeps, validation with the real wording
    ipfamilies   a Service's ipFamilyPolicy, ipFamilies and clusterIPs on a single- or dual-stack
                 cluster: defaults, checks, adding and releasing the secondary family
    ingresses    Ingress and IngressClass validation, the default IngressClass
    allocations  ClusterIP and NodePort allocation, derived from the store's Services, ClusterIPs
                 (one per family of the Service) from the ServiceCIDRs with an IPAddress object each
    servicecidrs ServiceCIDR validation and its Ready condition
    crds         CustomResourceDefinition names and versions, and the Established condition
    pods         Pod defaults, QoS class, validation and the pod-update rule
    fields       field errors worded as the real server's, shared name and port checks
    configs      ConfigMap and Secret keys, sizes, immutability; Secret types and stringData
    rbac         Role, ClusterRole and binding validation
    serviceaccount  a Pod's ServiceAccount and its projected token volume
    workloads    apps/v1 Deployment, ReplicaSet, DaemonSet, ControllerRevision defaults and validation

Node (podCIDRs one per family, set once) and Namespace (phase Active) are small enough to live here. The pure
parts (`default_*`, `validate_*`, `plan_*`) take and return plain dicts and do no I/O.
"""
from __future__ import annotations

import ipaddress

from .. import errors
from ..errors import Cause
from .configs import admit_config_map, admit_secret
from .crds import render_crd_status, validate_crd
from .fields import CIDR_MSG, forbidden, invalid, raise_if
from .ingresses import admit_ingress, admit_ingress_class
from .pods import default_pod, plan_qos_class, validate_pod, validate_pod_update
from .rbac import admit_binding, admit_role
from .serviceaccount import admit_pod_service_account
from .servicecidrs import render_service_cidr_status, validate_service_cidr
from .services import admit_service
from .workloads import KINDS as WORKLOAD_KINDS
from .workloads import admit_workload

# --- entry points (called by the API server) -------------------------------------------------

def admit(store, cfg, resource, operation: str, obj: dict, old: dict | None,
          subresource: str | None = None) -> dict:
    """Return the object to store, or raise errors.APIError (422 Invalid and friends).
    operation is "CREATE" or "UPDATE"; `old` is the stored object on UPDATE; subresource is
    "status" for writes to .../status (their spec is ignored by the store, so not checked here)."""
    try:
        return _admit(store, cfg, resource, operation, obj, old, subresource)
    except (AttributeError, TypeError, KeyError, ValueError) as e:
        # a field of the wrong JSON type (ports: [80], selector: "x"): the real server fails to
        # decode it; say so with its 400 instead of crashing with a 500
        kind = resource.kind
        raise errors.bad_request(f'{kind} in version "{resource.version}" cannot be handled as a {kind}: '
                                 f"wrong type of field: {e}") from e


def _admit(store, cfg, resource, operation: str, obj: dict, old: dict | None,
           subresource: str | None) -> dict:
    kind = resource.kind
    if kind == "Service":
        if subresource == "status":
            return obj
        return admit_service(store, cfg, resource, operation, obj, old)
    if kind == "Pod":
        if subresource == "status":
            return obj
        default_pod(obj)
        if operation == "CREATE":
            admit_pod_service_account(store, obj)
        causes = validate_pod(obj)
        if operation == "UPDATE" and old is not None:
            causes += validate_pod_update(obj, old)
        else:
            obj["status"] = {"phase": "Pending", "qosClass": plan_qos_class(obj.get("spec") or {})}
        raise_if(causes, "", "Pod", obj)
        return obj
    if kind == "Namespace":
        default_namespace(obj, operation == "CREATE")
        return obj
    if kind in WORKLOAD_KINDS and resource.group == "apps":
        if subresource == "status":
            return obj
        raise_if(admit_workload(kind, operation, obj, old), "apps", kind, obj)
        return obj
    if kind == "Node" and subresource != "status":
        causes = validate_node_pod_cidrs(obj)
        if operation == "UPDATE" and old is not None:
            causes += validate_node_update(obj, old)
        raise_if(causes, "", "Node", obj)
    if kind == "ConfigMap":
        return admit_config_map(obj, old)
    if kind == "Secret":
        return admit_secret(obj, old)
    if kind in ("Role", "ClusterRole"):
        return admit_role(kind, obj)
    if kind in ("RoleBinding", "ClusterRoleBinding"):
        return admit_binding(kind, obj, old)
    if kind == "Lease":
        raise_if(validate_lease(obj), "coordination.k8s.io", "Lease", obj)
    if kind == "Ingress":
        return admit_ingress(store, operation, obj, subresource)
    if kind == "IngressClass":
        return admit_ingress_class(obj, old)
    if kind == "ServiceCIDR" and subresource != "status":
        raise_if(validate_service_cidr(obj, old), "networking.k8s.io", kind, obj)
        if operation == "CREATE":
            obj["status"] = render_service_cidr_status()
    if kind == "CustomResourceDefinition" and subresource != "status":
        raise_if(validate_crd(obj), "apiextensions.k8s.io", kind, obj)
        obj["status"] = render_crd_status(obj)
    return obj


def release(store, cfg, resource, obj: dict) -> None:
    """Called after an object was deleted. Nothing to do: allocations follow the store (its hook
    sees the DELETED event), so a deleted Service's clusterIP and nodePorts are free already."""



# --- Node -----------------------------------------------------------------------------------

def validate_node_pod_cidrs(node: dict) -> list[Cause]:
    """spec.podCIDRs: valid CIDRs, and two only as a dual-stack pair (one per family)."""
    cidrs = (node.get("spec") or {}).get("podCIDRs") or []
    causes, versions = [], []
    for i, cidr in enumerate(cidrs):
        try:
            versions.append(ipaddress.ip_network(cidr, strict=False).version)
        except (ValueError, TypeError):
            causes.append(invalid(f"spec.podCIDRs[{i}]", cidr, CIDR_MSG))
    if not causes and len(cidrs) > 1 and (len(cidrs) > 2 or len(set(versions)) != 2):
        causes.append(invalid("spec.podCIDRs", cidrs, "may specify no more than one CIDR for each IP family"))
    return causes


def validate_node_update(node: dict, old: dict) -> list[Cause]:
    """A podCIDR, once assigned, stays (the kubelet and the IPAM controller rely on it)."""
    was = (old.get("spec") or {}).get("podCIDRs") or []
    if was and ((node.get("spec") or {}).get("podCIDRs") or []) != was:
        return [forbidden("spec.podCIDRs", 'node updates may not change podCIDR except from "" to valid')]
    return []


# --- Lease ----------------------------------------------------------------------------------

def validate_lease(lease: dict) -> list[Cause]:
    spec = lease.get("spec") or {}
    causes = []
    if spec.get("leaseDurationSeconds") is not None and spec["leaseDurationSeconds"] <= 0:
        causes.append(invalid("spec.leaseDurationSeconds", spec["leaseDurationSeconds"], "must be greater than 0"))
    if spec.get("leaseTransitions") is not None and spec["leaseTransitions"] < 0:
        causes.append(invalid("spec.leaseTransitions", spec["leaseTransitions"], "must be greater than or equal to 0"))
    return causes


# --- Namespace ------------------------------------------------------------------------------

def default_namespace(ns: dict, creating: bool) -> dict:
    meta = ns.setdefault("metadata", {})
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    if creating:
        ns["status"] = {"phase": "Active"}
    return ns
