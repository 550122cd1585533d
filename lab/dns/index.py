"""The cluster's Services, EndpointSlices and Pods in memory, indexed the way DNS questions ask.

One `Cluster` is updated per watch event (`set_service`, `set_slice`, `set_pod`, each with the
object's key and its view, None when it is gone) and wholesale after a (re-)list (`replace_*`).
Besides the objects it keeps what a question needs in O(1): the slices of each Service, how many
Services each namespace has (a namespace with one is a name that exists), the pod addresses of
each namespace, and the PTR targets of every Service and ready endpoint address. No I/O; it is
not thread-safe: one thread updates and reads it.
"""
from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .views import EndpointSlice, Pod, Port, Service

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Backend:
    """One ready address of a Service's endpoints, under the name DNS gives it."""
    label: str               # the endpoint's hostname, else its address with '-' for '.' and ':'
    address: str
    ports: tuple[Port, ...]  # the ports of the slice it came from


def endpoint_label(hostname: str, address: str) -> str:
    """The spec's "hostname" of an endpoint: its hostname field, else an identifier unique within
    the Service, for which CoreDNS (and so this) uses the address with its dots and colons dashed."""
    return hostname or address.replace(".", "-").replace(":", "-")


def _count(counter: collections.Counter, key, delta: int) -> None:
    """Add delta, dropping the key at zero (a Counter keeps zeros, which would pile up)."""
    n = counter[key] + delta
    if n > 0:
        counter[key] = n
    else:
        counter.pop(key, None)


def _lower(key: Key) -> Key:
    return key[0].lower(), key[1].lower()


class Cluster:
    def __init__(self) -> None:
        self.services: dict[Key, Service] = {}
        self._slices: dict[Key, dict[str, EndpointSlice]] = {}   # (ns, service) -> slice name -> slice
        self._slice_owner: dict[Key, Key] = {}                   # (ns, slice) -> (ns, service)
        self._namespaces: collections.Counter[str] = collections.Counter()
        self._pods: dict[Key, Pod] = {}
        self._pod_addresses: collections.Counter[Key] = collections.Counter()   # (ns, address)
        # address -> {contributing object: names relative to the zone}; and what each object gave
        self._reverse: dict[str, dict[tuple, tuple[str, ...]]] = {}
        self._given: dict[tuple, dict[str, tuple[str, ...]]] = {}
        self.serial = 1      # the zone's SOA serial: the caller sets it when the index changes

    # --- questions ---------------------------------------------------------------------------
    def has_namespace(self, namespace: str) -> bool:
        return self._namespaces[namespace] > 0

    def backends(self, namespace: str, service: str) -> Iterator[Backend]:
        """The ready addresses of a Service's endpoints, each (label, address) once."""
        seen = set()
        for slc in self._slices.get((namespace, service), {}).values():
            for ep in slc.endpoints:
                if not ep.ready:
                    continue
                for address in ep.addresses:
                    label = endpoint_label(ep.hostname, address)
                    if (label, address) not in seen:
                        seen.add((label, address))
                        yield Backend(label, address, slc.ports)

    def has_pod_address(self, namespace: str, address: str) -> bool:
        return self._pod_addresses[(namespace, address)] > 0

    def ptr_targets(self, address: str) -> list[str]:
        """Names (relative to the cluster zone) that own this address, sorted."""
        return sorted({n for names in self._reverse.get(address, {}).values() for n in names})

    # --- updates -----------------------------------------------------------------------------
    def set_service(self, key: Key, svc: Service | None) -> None:
        key = _lower(key)
        if self.services.pop(key, None) is not None:
            _count(self._namespaces, key[0], -1)
        if svc is not None:
            self.services[key] = svc
            _count(self._namespaces, key[0], 1)
        ns, name = key
        given = {ip: (f"{name}.{ns}.svc",) for ip in svc.cluster_ips} if svc else {}
        self._give(("service", *key), given)

    def set_slice(self, key: Key, slc: EndpointSlice | None) -> None:
        key = _lower(key)
        owner = self._slice_owner.pop(key, None)
        if owner is not None:
            slices = self._slices[owner]
            slices.pop(key[1], None)
            if not slices:
                del self._slices[owner]
        given: dict[str, tuple[str, ...]] = {}
        if slc is not None:
            owner = (key[0], slc.service)
            self._slice_owner[key] = owner
            self._slices.setdefault(owner, {})[key[1]] = slc
            for ep in slc.endpoints:
                if ep.ready:
                    for address in ep.addresses:
                        name = f"{endpoint_label(ep.hostname, address)}.{slc.service}.{key[0]}.svc"
                        given[address] = (*given.get(address, ()), name)
        self._give(("slice", *key), given)

    def set_pod(self, key: Key, pod: Pod | None) -> None:
        key = _lower(key)
        old = self._pods.pop(key, None)
        for ip in old.ips if old is not None else ():
            _count(self._pod_addresses, (key[0], ip), -1)
        if pod is not None:
            self._pods[key] = pod
            for ip in pod.ips:
                _count(self._pod_addresses, (key[0], ip), 1)

    def replace_services(self, objects: Mapping[Key, Service | None]) -> None:
        self._replace(self.services, self.set_service, objects)

    def replace_slices(self, objects: Mapping[Key, EndpointSlice | None]) -> None:
        self._replace(self._slice_owner, self.set_slice, objects)

    def replace_pods(self, objects: Mapping[Key, Pod | None]) -> None:
        self._replace(self._pods, self.set_pod, objects)

    @staticmethod
    def _replace(current, setter, objects: Mapping) -> None:
        keep = {_lower(k) for k in objects}
        for key in [k for k in current if k not in keep]:
            setter(key, None)
        for key, value in objects.items():
            setter(key, value)

    def _give(self, source: tuple, names: dict[str, tuple[str, ...]]) -> None:
        """Replace what `source` contributes to the reverse index."""
        for address in self._given.pop(source, {}):
            owners = self._reverse[address]
            del owners[source]
            if not owners:
                del self._reverse[address]
        if names:
            self._given[source] = names
            for address, targets in names.items():
                self._reverse.setdefault(address, {})[source] = targets
