"""A container's environment as the kubelet builds it, and $(VAR) expansion. Pure.

Order as the kubelet's makeEnvironmentVariables: envFrom sources first, then env (each value
may refer to the variables defined before it, and to the Service variables, with $(VAR)),
then the Service variables that nothing above defined. The Service variables are the docker-link
style ones of every Service in the pod's namespace (enableServiceLinks) and always those of
default/kubernetes (KUBERNETES_SERVICE_HOST, ...).
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from . import downward
from .podspec import Container

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class EnvError(Exception):
    """Why a container cannot be created (the kubelet's CreateContainerConfigError)."""


@dataclass(frozen=True)
class ServiceView:
    namespace: str
    name: str
    cluster_ip: str
    ports: tuple[tuple[str, int, str], ...]       # (name, port, protocol)


def parse_service(obj: dict) -> ServiceView:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    ports = tuple((p.get("name") or "", int(p.get("port") or 0), (p.get("protocol") or "TCP").upper())
                  for p in spec.get("ports") or [] if isinstance(p, dict))
    return ServiceView(meta.get("namespace", ""), meta.get("name", ""), spec.get("clusterIP") or "", ports)


def render_service_env(services: list[ServiceView]) -> dict[str, str]:
    """FOO_SERVICE_HOST, FOO_SERVICE_PORT[_NAME], FOO_PORT[_80_TCP[_PROTO|_PORT|_ADDR]] for each
    Service with a ClusterIP (headless and ExternalName ones have none)."""
    env: dict[str, str] = {}
    for svc in sorted(services, key=lambda s: s.name):
        if not svc.cluster_ip or svc.cluster_ip == "None" or not svc.ports:
            continue
        prefix = svc.name.upper().replace("-", "_")
        first = svc.ports[0]
        env[f"{prefix}_SERVICE_HOST"] = svc.cluster_ip
        env[f"{prefix}_SERVICE_PORT"] = str(first[1])
        for name, port, _ in svc.ports:
            if name:
                env[f"{prefix}_SERVICE_PORT_{name.upper().replace('-', '_')}"] = str(port)
        env[f"{prefix}_PORT"] = f"{first[2].lower()}://{svc.cluster_ip}:{first[1]}"
        for _, port, proto in svc.ports:
            base = f"{prefix}_PORT_{port}_{proto}"
            env[base] = f"{proto.lower()}://{svc.cluster_ip}:{port}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(port)
            env[f"{base}_ADDR"] = svc.cluster_ip
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """$(VAR) -> its value when VAR is defined (left as written otherwise); $$ -> $."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end > 0:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def _source_data(kind: str, obj: dict | None) -> dict[str, str]:
    """The string values of a ConfigMap (data, binaryData) or a Secret (data, base64)."""
    if obj is None:
        return {}
    if kind == "secret":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    out = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    for k, v in (obj.get("binaryData") or {}).items():
        out[k] = base64.b64decode(v).decode(errors="replace")
    return out


def _kind_word(kind: str) -> str:
    return "configmap" if kind == "configmap" else "secret"


def render_env(container: Container, facts: downward.PodFacts, service_env: dict[str, str],
               sources: dict[tuple[str, str], dict | None]) -> dict[str, str]:
    """The container's env. `sources` maps (kind, name) to the ConfigMap or Secret object (None
    when it does not exist) for every one that envFrom and env refer to. Raises EnvError with
    the kubelet's message for a missing required source or key."""
    ns = facts.pod.namespace
    env: dict[str, str] = {}
    for ef in container.env_from:
        obj = sources.get((ef.kind, ef.name))
        if obj is None:
            if ef.optional:
                continue
            raise EnvError(f'{_kind_word(ef.kind)} "{ef.name}" not found')
        for key, value in _source_data(ef.kind, obj).items():
            name = ef.prefix + key
            if ENV_NAME.match(name):             # invalid names are skipped (an event in the real one)
                env[name] = value
    for var in container.env:
        if var.value is not None:
            env[var.name] = expand(var.value, {**service_env, **env})
        elif var.field is not None:
            try:
                env[var.name] = downward.reference_value(facts, container, var.field)
            except downward.FieldError as e:
                raise EnvError(str(e)) from None
        elif var.key is not None:
            ref = var.key
            obj = sources.get((ref.kind, ref.name))
            if obj is None:
                if ref.optional:
                    continue
                raise EnvError(f'{_kind_word(ref.kind)} "{ref.name}" not found')
            data = _source_data(ref.kind, obj)
            if ref.key not in data:
                if ref.optional:
                    continue
                what = "ConfigMap" if ref.kind == "configmap" else "Secret"
                raise EnvError(f"couldn't find key {ref.key} in {what} {ns}/{ref.name}")
            env[var.name] = data[ref.key]
    for name, value in service_env.items():
        env.setdefault(name, value)
    return env


def referenced_sources(container: Container) -> list[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the container's env reads."""
    out = [(ef.kind, ef.name) for ef in container.env_from]
    out += [(v.key.kind, v.key.name) for v in container.env if v.key is not None]
    return list(dict.fromkeys(out))


def expand_command(argv: tuple[str, ...], env: dict[str, str]) -> list[str]:
    return [expand(a, env) for a in argv]
