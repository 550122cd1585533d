"""Generic checks the API server makes before admission: object names, and unknown fields for
fieldValidation=Strict|Warn. Pure. Messages use the real server's wording, since kubectl prints
them verbatim. Kind-specific validation (Service ports, ...) lives in lab.admission."""
from __future__ import annotations

import re

from .. import errors
from ..admission import fields
from ..resources import Resource

# one wording for names, shared with admission (lab/admission/fields.py)
_LABEL_RE, _LABEL_MSG = fields.DNS1123_LABEL, fields.DNS1123_LABEL_MSG
_SUBDOMAIN_RE, _SUBDOMAIN_MSG = fields.DNS1123_SUBDOMAIN, fields.DNS1123_SUBDOMAIN_MSG
_DNS1035_RE, _DNS1035_MSG = fields.DNS1035, fields.DNS1035_MSG

# which rule a kind's names follow (the rest: RFC 1123 subdomain)
_NAME_RULES = {"Namespace": (_LABEL_RE, _LABEL_MSG, 63), "Service": (_DNS1035_RE, _DNS1035_MSG, 63)}


# RBAC objects' names are any path segment (ValidateRBACName): "system:coredns" is one
_RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


def _path_segment_problems(name: str) -> list[str]:
    """path.IsValidPathSegmentName's wording."""
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def check_name(resource: Resource, name: str) -> None:
    """Raise 422 Invalid when `name` is not a valid name for this kind."""
    if resource.kind in _RBAC_KINDS:
        problems = _path_segment_problems(name)
    else:
        regex, msg, limit = _NAME_RULES.get(resource.kind, (_SUBDOMAIN_RE, _SUBDOMAIN_MSG, 253))
        problems = [f"must be no more than {limit} characters"] if len(name) > limit else []
        if not regex.match(name):
            problems.append(msg)
    if problems:
        causes = [errors.Cause("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {p}')
                  for p in problems]
        raise errors.invalid(resource.group, resource.kind, name, causes)


_META = {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
         "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
         "annotations", "ownerReferences", "finalizers", "managedFields"}
_TOP = {"apiVersion", "kind", "metadata", "spec", "status"}
_TOP_BY_KIND = {
    "EndpointSlice": {"apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"},
    "Event": None,         # many fields; not checked
    "ConfigMap": {"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"},
    "Secret": {"apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"},
    "ServiceAccount": {"apiVersion", "kind", "metadata", "secrets", "imagePullSecrets",
                       "automountServiceAccountToken"},
    "Endpoints": {"apiVersion", "kind", "metadata", "subsets"},
    "Role": {"apiVersion", "kind", "metadata", "rules"},
    "ClusterRole": {"apiVersion", "kind", "metadata", "rules", "aggregationRule"},
    "RoleBinding": {"apiVersion", "kind", "metadata", "subjects", "roleRef"},
    "ClusterRoleBinding": {"apiVersion", "kind", "metadata", "subjects", "roleRef"},
}
_SPEC_BY_KIND = {
    "Pod": {"activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "containers",
            "dnsConfig", "dnsPolicy", "enableServiceLinks", "ephemeralContainers", "hostAliases",
            "hostIPC", "hostNetwork", "hostPID", "hostUsers", "hostname", "hostnameOverride",
            "imagePullSecrets", "initContainers", "nodeName", "nodeSelector", "os", "overhead",
            "preemptionPolicy", "priority", "priorityClassName", "readinessGates", "resourceClaims",
            "resources", "restartPolicy", "runtimeClassName", "schedulerName", "schedulingGates",
            "securityContext", "serviceAccount", "serviceAccountName", "setHostnameAsFQDN",
            "shareProcessNamespace", "subdomain", "terminationGracePeriodSeconds", "tolerations",
            "topologySpreadConstraints", "volumes"},
    "Service": {"allocateLoadBalancerNodePorts", "clusterIP", "clusterIPs", "externalIPs",
                "externalName", "externalTrafficPolicy", "healthCheckNodePort",
                "internalTrafficPolicy", "ipFamilies", "ipFamilyPolicy", "loadBalancerClass",
                "loadBalancerIP", "loadBalancerSourceRanges", "ports", "publishNotReadyAddresses",
                "selector", "sessionAffinity", "sessionAffinityConfig", "trafficDistribution", "type"},
    "NetworkPolicy": {"podSelector", "ingress", "egress", "policyTypes"},
    "ClusterNetworkPolicy": {"tier", "priority", "subject", "ingress", "egress"},
    "Ingress": {"defaultBackend", "ingressClassName", "rules", "tls"},
    "IngressClass": {"controller", "parameters"},
    "Node": {"podCIDR", "podCIDRs", "providerID", "unschedulable", "taints", "configSource",
             "externalID"},
    "Namespace": {"finalizers"},
    "Lease": {"acquireTime", "holderIdentity", "leaseDurationSeconds", "leaseTransitions", "preferredHolder",
              "renewTime", "strategy"},
}
_CONTAINER = {"args", "command", "env", "envFrom", "image", "imagePullPolicy", "lifecycle",
              "livenessProbe", "name", "ports", "readinessProbe", "resizePolicy", "resources",
              "restartPolicy", "restartPolicyRules", "securityContext", "startupProbe", "stdin",
              "stdinOnce", "terminationMessagePath", "terminationMessagePolicy", "tty",
              "volumeDevices", "volumeMounts", "workingDir"}
_CONTAINER_PORT = {"containerPort", "hostIP", "hostPort", "name", "protocol"}
_SERVICE_PORT = {"appProtocol", "name", "nodePort", "port", "protocol", "targetPort"}


def _unknown(d: object, known: set[str], prefix: str) -> list[str]:
    if not isinstance(d, dict):
        return []
    return [f"{prefix}{k}" for k in d if k not in known]


def _each(items: object, known: set[str], prefix: str) -> list[str]:
    if not isinstance(items, list):
        return []
    out = []
    for i, item in enumerate(items):
        out += _unknown(item, known, f"{prefix}[{i}].")
    return out


def find_unknown_fields(kind: str, obj: dict) -> list[str]:
    """Dotted paths of fields this kind does not have, in the places commonly mistyped."""
    top = _TOP_BY_KIND.get(kind, _TOP)
    if top is None:
        return []
    out = _unknown(obj, top, "")
    out += _unknown(obj.get("metadata"), _META, "metadata.")
    spec = obj.get("spec")
    if kind in _SPEC_BY_KIND:
        out += _unknown(spec, _SPEC_BY_KIND[kind], "spec.")
    if kind == "Pod" and isinstance(spec, dict):
        for field in ("containers", "initContainers"):
            out += _each(spec.get(field), _CONTAINER, f"spec.{field}")
            for i, c in enumerate(spec.get(field) or []):
                if isinstance(c, dict):
                    out += _each(c.get("ports"), _CONTAINER_PORT, f"spec.{field}[{i}].ports")
    if kind == "Service" and isinstance(spec, dict):
        out += _each(spec.get("ports"), _SERVICE_PORT, "spec.ports")
    return out


def drop_fields(obj: dict, paths: list[str]) -> None:
    """Remove the given unknown fields (as the real decoder drops them when not strict)."""
    for path in paths:
        cur: object = obj
        steps = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        for step in steps[:-1]:
            if step.startswith("["):
                cur = cur[int(step[1:-1])] if isinstance(cur, list) else None
            else:
                cur = cur.get(step) if isinstance(cur, dict) else None
        if isinstance(cur, dict):
            cur.pop(steps[-1], None)


def strict_error(kind: str, api_version: str, unknown: list[str], creating: bool = True) -> errors.APIError:
    """400 BadRequest worded as the real server's strict decoder."""
    detail = "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in unknown)
    if creating:
        return errors.bad_request(f'{kind} in version "{api_version.split("/")[-1]}" cannot be handled '
                                  f"as a {kind}: {detail}")
    return errors.bad_request(detail)
