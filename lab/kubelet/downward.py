"""The downward API: a pod's own fields and its containers' resources as strings, as the kubelet
gives them to env (fieldRef, resourceFieldRef) and to downwardAPI volume files. Pure.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from .podspec import Container, FieldRef, Pod

# what a node offers when a container sets no limit (the lab's nodes report this allocatable)
NODE_ALLOCATABLE = {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "20Gi"}

_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
           "n": Fraction(1, 10 ** 9), "u": Fraction(1, 10 ** 6), "m": Fraction(1, 1000), "": 1,
           "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class FieldError(ValueError):
    """A reference the downward API does not support."""


def parse_quantity(text: str) -> Fraction:
    """A resource.Quantity ("500m", "1.5Gi", "1e3") as an exact number."""
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise FieldError(f"quantities must match the regular expression '{_QUANTITY.pattern}'")
    number = Fraction(m.group(1))
    if m.group(2):
        return number * Fraction(10) ** int(m.group(2)[1:])
    return number * _SUFFIX[m.group(3) or ""]


@dataclass(frozen=True)
class PodFacts:
    """What the downward API reads beyond the spec: the addresses the kubelet knows."""
    pod: Pod
    pod_ip: str = ""
    host_ip: str = ""
    pod_ips: tuple[str, ...] = ()          # every address, primary family first (default: pod_ip)
    host_ips: tuple[str, ...] = ()


def _render_map(items: tuple[tuple[str, str], ...]) -> str:
    """Labels or annotations as the downward API writes them: key="value" lines, sorted."""
    return "\n".join(f'{k}="{_quote(v)}"' for k, v in sorted(items))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def field_value(facts: PodFacts, path: str) -> str:
    pod = facts.pod
    m = _SUBSCRIPT.match(path)
    if m:
        return dict(pod.labels if m.group(1) == "labels" else pod.annotations).get(m.group(2), "")
    simple = {
        "metadata.name": pod.name, "metadata.namespace": pod.namespace, "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name, "spec.serviceAccountName": pod.service_account,
        "status.hostIP": facts.host_ip, "status.hostIPs": ",".join(facts.host_ips or (facts.host_ip,)),
        "status.podIP": facts.pod_ip, "status.podIPs": ",".join(facts.pod_ips or (facts.pod_ip,)),
    }
    if path in simple:
        return simple[path]
    if path == "metadata.labels":
        return _render_map(pod.labels)
    if path == "metadata.annotations":
        return _render_map(pod.annotations)
    raise FieldError(f'unsupported fieldPath: "{path}"')


def resource_value(container: Container, ref: FieldRef) -> str:
    """limits.cpu, requests.memory, ...: the container's value (limits fall back to the node's
    allocatable) divided by the divisor, rounded up, as the kubelet's ExtractContainerResourceValue."""
    kind, _, resource = ref.resource.partition(".")
    if kind not in ("limits", "requests") or resource not in NODE_ALLOCATABLE:
        raise FieldError(f'unsupported container resource: "{ref.resource}"')
    values = dict(container.resources.limits if kind == "limits" else container.resources.requests)
    raw = values.get(resource)
    if raw is None and kind == "limits":
        raw = NODE_ALLOCATABLE[resource]
    elif raw is None:
        # requests default to the limit, else 0 (no request at all)
        raw = dict(container.resources.limits).get(resource, "0")
    value = parse_quantity(raw) / parse_quantity(ref.divisor or "1")
    return str(math.ceil(value))


def reference_value(facts: PodFacts, container: Container, ref: FieldRef) -> str:
    if ref.resource:
        target = facts.pod.container(ref.container) if ref.container else container
        if target is None:
            raise FieldError(f'container "{ref.container}" not found in the pod')
        return resource_value(target, ref)
    return field_value(facts, ref.field_path)
