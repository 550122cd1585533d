"""A Pod as the kubelet reads it: frozen dataclasses made from the API's JSON at the watch edge.

Pure: no I/O. Only the fields the lab kubelet acts on are kept; everything else in the pod
(scheduling, security contexts the lab cannot honour) stays in the API object.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_GRACE = 30
RESTART_POLICIES = ("Always", "OnFailure", "Never")


def _int(v, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _items(d: dict | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (d or {}).items()))


@dataclass(frozen=True)
class Port:
    port: int
    protocol: str = "TCP"
    name: str = ""
    host_port: int = 0


@dataclass(frozen=True)
class Probe:
    kind: str                    # "http", "tcp" or "exec"
    port: int = 0
    path: str = "/"
    host: str = ""               # httpGet.host / tcpSocket.host: the pod IP when empty
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    period: float = 10.0
    initial_delay: float = 0.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    grace: int | None = None     # the probe's terminationGracePeriodSeconds (liveness, startup)


@dataclass(frozen=True)
class Handler:
    """A lifecycle hook (postStart, preStop): exec in the container, httpGet from the kubelet, or sleep."""
    kind: str                    # "exec", "http" or "sleep"
    command: tuple[str, ...] = ()
    port: int = 0
    path: str = "/"
    host: str = ""               # httpGet.host: the pod IP when empty
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    seconds: int = 0             # sleep.seconds


@dataclass(frozen=True)
class FieldRef:
    """A downward API reference: a pod field (metadata.name, ...) or a container's resource."""
    field_path: str = ""
    resource: str = ""           # limits.cpu, requests.memory, ...
    container: str = ""          # resourceFieldRef.containerName ("" is the container itself)
    divisor: str = "1"


@dataclass(frozen=True)
class KeyRef:
    """configMapKeyRef / secretKeyRef."""
    kind: str                    # "configmap" or "secret"
    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    field: FieldRef | None = None
    key: KeyRef | None = None


@dataclass(frozen=True)
class EnvFrom:
    kind: str                    # "configmap" or "secret"
    name: str
    prefix: str = ""
    optional: bool = False


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""
    propagation: str = "None"


@dataclass(frozen=True)
class Resources:
    limits: tuple[tuple[str, str], ...] = ()
    requests: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Container:
    name: str
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    ports: tuple[Port, ...] = ()
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFrom, ...] = ()
    mounts: tuple[VolumeMount, ...] = ()
    resources: Resources = Resources()
    liveness: Probe | None = None
    readiness: Probe | None = None
    startup: Probe | None = None
    tty: bool = False
    stdin: bool = False
    post_start: Handler | None = None
    pre_stop: Handler | None = None


@dataclass(frozen=True)
class KeyToPath:
    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class DownwardItem:
    path: str
    field: FieldRef
    mode: int | None = None


@dataclass(frozen=True)
class Projection:
    """One source of a projected volume, or the whole of a configMap/secret/downwardAPI volume."""
    kind: str                    # "configmap", "secret", "downward", "token"
    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    downward: tuple[DownwardItem, ...] = ()
    optional: bool = False
    audience: str = ""           # token
    expiration: int = 3600       # token
    path: str = ""               # token


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str                    # hostPath, emptyDir, configMap, secret, downwardAPI, projected, other
    path: str = ""               # hostPath.path
    host_type: str = ""          # hostPath.type
    medium: str = ""             # emptyDir.medium
    sources: tuple[Projection, ...] = ()
    default_mode: int = 0o644


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    since: str                   # lastTransitionTime
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class ContainerRecord:
    """What the API's containerStatuses say of a container (kept across kubelet restarts)."""
    name: str
    restart_count: int = 0
    ready: bool = False
    last: dict = field(default_factory=dict, compare=False)     # lastState.terminated
    state: dict = field(default_factory=dict, compare=False)    # state


@dataclass(frozen=True)
class Pod:
    uid: str
    namespace: str
    name: str
    node_name: str = ""
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    volumes: tuple[Volume, ...] = ()
    host_network: bool = False
    restart_policy: str = "Always"
    grace_seconds: int = DEFAULT_GRACE
    deleting: bool = False
    phase: str = "Pending"
    resource_version: str = ""
    start_time: str = ""
    conditions: tuple[Condition, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    service_account: str = "default"
    hostname: str = ""
    subdomain: str = ""
    dns_policy: str = "ClusterFirst"
    dns_nameservers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[tuple[str, str | None], ...] = ()
    host_aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()
    service_links: bool = True
    statuses: tuple[ContainerRecord, ...] = ()
    init_statuses: tuple[ContainerRecord, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def container_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.containers)

    @property
    def ports(self) -> tuple[Port, ...]:
        return tuple(p for c in self.containers for p in c.ports)

    def container(self, name: str) -> Container | None:
        return next((c for c in self.init_containers + self.containers if c.name == name), None)


# --- parsing ----------------------------------------------------------------------------------------
def parse_probe(raw: dict | None, ports: tuple[Port, ...]) -> Probe | None:
    """A probe (httpGet, tcpSocket or exec); named ports resolve against the container's ports.
    gRPC probes and unresolvable ports give None: the probe is not run."""
    if not raw:
        return None
    timing = {"period": max(1.0, float(raw.get("periodSeconds") or 10)),
              "initial_delay": float(raw.get("initialDelaySeconds") or 0),
              "timeout": max(0.2, float(raw.get("timeoutSeconds") or 1)),
              "failure_threshold": max(1, _int(raw.get("failureThreshold"), 3)),
              "success_threshold": max(1, _int(raw.get("successThreshold"), 1)),
              "grace": raw.get("terminationGracePeriodSeconds")}
    if "exec" in raw:
        command = tuple(str(a) for a in (raw["exec"] or {}).get("command") or ())
        return Probe("exec", command=command, **timing) if command else None
    if "httpGet" in raw:
        kind, target = "http", raw["httpGet"] or {}
    elif "tcpSocket" in raw:
        kind, target = "tcp", raw["tcpSocket"] or {}
    else:
        return None
    port = _port(target.get("port"), ports)
    if not port:
        return None
    return Probe(kind, port=port, path=target.get("path") or "/", host=target.get("host") or "",
                 scheme=(target.get("scheme") or "HTTP").upper(), headers=_headers(target), **timing)


def _port(raw, ports: tuple[Port, ...]) -> int:
    """A port number, or a named port of the container (0 when the name is unknown)."""
    if isinstance(raw, str) and not raw.isdigit():
        return next((p.port for p in ports if p.name == raw), 0)
    return _int(raw)


def _headers(target: dict) -> tuple[tuple[str, str], ...]:
    return tuple((h.get("name", ""), str(h.get("value", ""))) for h in target.get("httpHeaders") or []
                 if isinstance(h, dict) and h.get("name"))


def parse_handler(raw: dict | None, ports: tuple[Port, ...]) -> Handler | None:
    """A lifecycle hook; None when absent or when it names nothing the kubelet can run."""
    if not isinstance(raw, dict):
        return None
    if isinstance(raw.get("exec"), dict):
        command = tuple(str(a) for a in raw["exec"].get("command") or ())
        return Handler("exec", command=command) if command else None
    if isinstance(raw.get("httpGet"), dict):
        target = raw["httpGet"]
        port = _port(target.get("port"), ports)
        if not port:
            return None
        return Handler("http", port=port, path=target.get("path") or "/", host=target.get("host") or "",
                       scheme=(target.get("scheme") or "HTTP").upper(), headers=_headers(target))
    if isinstance(raw.get("sleep"), dict):
        return Handler("sleep", seconds=max(0, _int(raw["sleep"].get("seconds"))))
    return None


def parse_field_ref(raw: dict | None, resource: bool) -> FieldRef | None:
    if not isinstance(raw, dict):
        return None
    if resource:
        return FieldRef(resource=raw.get("resource") or "", container=raw.get("containerName") or "",
                        divisor=str(raw.get("divisor") or "1"))
    return FieldRef(field_path=raw.get("fieldPath") or "")


def _parse_env(raw: list | None) -> tuple[EnvVar, ...]:
    out = []
    for e in raw or []:
        if not isinstance(e, dict) or not e.get("name"):
            continue
        src = e.get("valueFrom")
        if not isinstance(src, dict):
            out.append(EnvVar(e["name"], str(e.get("value", ""))))
        elif "fieldRef" in src:
            out.append(EnvVar(e["name"], field=parse_field_ref(src["fieldRef"], False)))
        elif "resourceFieldRef" in src:
            out.append(EnvVar(e["name"], field=parse_field_ref(src["resourceFieldRef"], True)))
        else:
            for key, kind in (("configMapKeyRef", "configmap"), ("secretKeyRef", "secret")):
                if key in src and isinstance(src[key], dict):
                    r = src[key]
                    out.append(EnvVar(e["name"], key=KeyRef(kind, r.get("name") or "", r.get("key") or "",
                                                            bool(r.get("optional")))))
    return tuple(out)


def _parse_env_from(raw: list | None) -> tuple[EnvFrom, ...]:
    out = []
    for e in raw or []:
        if not isinstance(e, dict):
            continue
        for key, kind in (("configMapRef", "configmap"), ("secretRef", "secret")):
            if isinstance(e.get(key), dict):
                out.append(EnvFrom(kind, e[key].get("name") or "", e.get("prefix") or "",
                                   bool(e[key].get("optional"))))
    return tuple(out)


def parse_container(c: dict, index: int = 0) -> Container:
    ports = tuple(Port(_int(p["containerPort"]), (p.get("protocol") or "TCP").upper(), p.get("name") or "",
                       _int(p.get("hostPort")))
                  for p in c.get("ports") or [] if isinstance(p, dict) and _int(p.get("containerPort")))
    res = c.get("resources") or {}
    mounts = tuple(VolumeMount(m.get("name", ""), m.get("mountPath", ""), bool(m.get("readOnly")),
                               m.get("subPath") or "", m.get("mountPropagation") or "None")
                   for m in c.get("volumeMounts") or [] if isinstance(m, dict) and m.get("mountPath"))
    return Container(
        name=c.get("name") or f"c{index}", image=c.get("image") or "",
        command=tuple(str(a) for a in c.get("command") or ()), args=tuple(str(a) for a in c.get("args") or ()),
        working_dir=c.get("workingDir") or "", ports=ports, env=_parse_env(c.get("env")),
        env_from=_parse_env_from(c.get("envFrom")), mounts=mounts,
        resources=Resources(_items(res.get("limits")), _items(res.get("requests"))),
        liveness=parse_probe(c.get("livenessProbe"), ports), readiness=parse_probe(c.get("readinessProbe"), ports),
        startup=parse_probe(c.get("startupProbe"), ports), tty=bool(c.get("tty")), stdin=bool(c.get("stdin")),
        post_start=parse_handler((c.get("lifecycle") or {}).get("postStart"), ports),
        pre_stop=parse_handler((c.get("lifecycle") or {}).get("preStop"), ports))


def _key_to_paths(raw: list | None) -> tuple[KeyToPath, ...]:
    return tuple(KeyToPath(str(i.get("key", "")), str(i.get("path", "")), i.get("mode"))
                 for i in raw or [] if isinstance(i, dict) and i.get("key"))


def _downward_items(raw: list | None) -> tuple[DownwardItem, ...]:
    out = []
    for i in raw or []:
        if not isinstance(i, dict) or not i.get("path"):
            continue
        ref = parse_field_ref(i.get("fieldRef"), False) if "fieldRef" in i else \
            parse_field_ref(i.get("resourceFieldRef"), True)
        if ref is not None:
            out.append(DownwardItem(i["path"], ref, i.get("mode")))
    return tuple(out)


def _projection(kind: str, raw: dict) -> Projection:
    if kind == "configmap":
        return Projection("configmap", raw.get("name") or "", _key_to_paths(raw.get("items")),
                          optional=bool(raw.get("optional")))
    if kind == "secret":
        return Projection("secret", raw.get("secretName") or raw.get("name") or "",
                          _key_to_paths(raw.get("items")), optional=bool(raw.get("optional")))
    if kind == "downward":
        return Projection("downward", downward=_downward_items(raw.get("items")))
    return Projection("token", audience=raw.get("audience") or "",
                      expiration=max(600, _int(raw.get("expirationSeconds"), 3600)), path=raw.get("path") or "token")


_PROJECTED_KEYS = (("configMap", "configmap"), ("secret", "secret"), ("downwardAPI", "downward"),
                   ("serviceAccountToken", "token"))


def parse_volume(v: dict) -> Volume:
    name = v.get("name") or ""
    if isinstance(v.get("hostPath"), dict):
        return Volume(name, "hostPath", path=v["hostPath"].get("path") or "", host_type=v["hostPath"].get("type") or "")
    if "emptyDir" in v:
        return Volume(name, "emptyDir", medium=(v.get("emptyDir") or {}).get("medium") or "")
    for key, kind in (("configMap", "configmap"), ("secret", "secret"), ("downwardAPI", "downward")):
        if isinstance(v.get(key), dict):
            return Volume(name, key, sources=(_projection(kind, v[key]),),
                          default_mode=_int(v[key].get("defaultMode"), 0o644))
    if isinstance(v.get("projected"), dict):
        sources = []
        for s in v["projected"].get("sources") or []:
            for key, kind in _PROJECTED_KEYS:
                if isinstance(s, dict) and isinstance(s.get(key), dict):
                    sources.append(_projection(kind, s[key]))
        return Volume(name, "projected", sources=tuple(sources),
                      default_mode=_int(v["projected"].get("defaultMode"), 0o644))
    return Volume(name, "other")


def parse_conditions(raw: list | None) -> list[Condition]:
    out = []
    for c in raw or []:
        if isinstance(c, dict) and c.get("type"):
            out.append(Condition(c["type"], c.get("status") == "True", c.get("lastTransitionTime") or "",
                                 c.get("reason") or "", c.get("message") or ""))
    return out


def _records(raw: list | None) -> tuple[ContainerRecord, ...]:
    return tuple(ContainerRecord(s.get("name", ""), _int(s.get("restartCount")), bool(s.get("ready")),
                                 ((s.get("lastState") or {}).get("terminated") or {}), s.get("state") or {})
                 for s in raw or [] if isinstance(s, dict))


def parse_pod(obj: dict) -> Pod:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds")
    containers = tuple(parse_container(c, i) for i, c in enumerate(spec.get("containers") or []))
    dns = spec.get("dnsConfig") or {}
    policy = spec.get("restartPolicy") or "Always"
    return Pod(
        uid=meta.get("uid", ""), namespace=meta.get("namespace", "default"), name=meta.get("name", ""),
        node_name=spec.get("nodeName") or "", containers=containers or (Container("main"),),
        init_containers=tuple(parse_container(c, i) for i, c in enumerate(spec.get("initContainers") or [])),
        volumes=tuple(parse_volume(v) for v in spec.get("volumes") or [] if isinstance(v, dict)),
        host_network=bool(spec.get("hostNetwork")),
        restart_policy=policy if policy in RESTART_POLICIES else "Always",
        grace_seconds=max(0, _int(grace, DEFAULT_GRACE)),
        deleting=bool(meta.get("deletionTimestamp")), phase=status.get("phase") or "Pending",
        resource_version=meta.get("resourceVersion", ""), start_time=status.get("startTime") or "",
        conditions=tuple(parse_conditions(status.get("conditions"))),
        labels=_items(meta.get("labels")), annotations=_items(meta.get("annotations")),
        service_account=spec.get("serviceAccountName") or spec.get("serviceAccount") or "default",
        hostname=spec.get("hostname") or "", subdomain=spec.get("subdomain") or "",
        dns_policy=spec.get("dnsPolicy") or "ClusterFirst",
        dns_nameservers=tuple(str(s) for s in dns.get("nameservers") or ()),
        dns_searches=tuple(str(s) for s in dns.get("searches") or ()),
        dns_options=tuple((str(o.get("name", "")), None if o.get("value") is None else str(o["value"]))
                          for o in dns.get("options") or () if isinstance(o, dict) and o.get("name")),
        host_aliases=tuple((str(a.get("ip", "")), tuple(str(h) for h in a.get("hostnames") or ()))
                           for a in spec.get("hostAliases") or () if isinstance(a, dict) and a.get("ip")),
        service_links=spec.get("enableServiceLinks") is not False,
        statuses=_records(status.get("containerStatuses")),
        init_statuses=_records(status.get("initContainerStatuses")))


def pod_from_record(uid: str, entry: dict, node: str) -> Pod:
    """A stand-in Pod for a pods.json entry whose API object is gone: enough to tear it down."""
    names = tuple(entry.get("containers") or {}) or ("main",)
    return Pod(uid=uid, namespace=entry.get("namespace", ""), name=entry.get("name", ""), node_name=node,
               containers=tuple(Container(n) for n in names), host_network=bool(entry.get("hostNetwork")),
               grace_seconds=2, phase="Running")
