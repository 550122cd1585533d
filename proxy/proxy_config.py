"""The service proxy's configuration as kube-proxy's: a KubeProxyConfiguration document (the
`config.conf` of the ConfigMap kube-system/kubeweft, as kubeadm's kube-system/kube-proxy holds
it) -> a frozen ProxyConfig. Pure: parse_proxy_config takes the text, the caller reads it.

The fields users know from kube-proxy keep their names, defaults and duration syntax (Go's:
"24h0m0s", "1h", "90s"). Decoding is strict, as kube-proxy's: a field that is not a
KubeProxyConfiguration field is an error, and so is a value of the wrong type or range. Fields
kube-proxy has and kubeweft has no use for (iptables, winkernel, clientConnection, ...) are
accepted and named in ProxyConfig.ignored, so the agent can say it leaves them alone.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .conntrack_settings import ConntrackConfig
from .duration import parse_go_duration
from .scheduler import DEFAULT as DEFAULT_SCHEDULER
from .scheduler import SCHEDULERS, parse_scheduler

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"
CONFIGMAP_NAMESPACE, CONFIGMAP_NAME, CONFIGMAP_KEY = "kube-system", "kubeweft", "config.conf"
MODES = ("nftables",)
NODEPORT_PRIMARY = "primary"          # kube-proxy's keyword: the node's primary addresses

# KubeProxyConfiguration fields kubeweft reads (the top level; ipvs and conntrack are read in part)
FIELDS = ("apiVersion", "kind", "mode", "ipvs", "nodePortAddresses", "conntrack", "metricsBindAddress",
          "healthzBindAddress")
CONNTRACK_FIELDS = ("maxPerCore", "min", "tcpEstablishedTimeout", "tcpCloseWaitTimeout", "udpTimeout",
                    "udpStreamTimeout", "tcpBeLiberal")
# KubeProxyConfiguration fields kubeweft accepts and does not use
IGNORED = ("featureGates", "clientConnection", "logging", "hostnameOverride", "bindAddress",
           "bindAddressHardFail", "enableProfiling", "showHiddenMetricsForVersion", "iptables", "nftables",
           "winkernel", "detectLocalMode", "detectLocal", "clusterCIDR", "oomScoreAdj", "configSyncPeriod",
           "portRange", "windowsRunAsService", "syncPeriod", "minSyncPeriod", "linux")


class ConfigError(ValueError):
    """A configuration the agent refuses (the message names the field and why)."""


@dataclass(frozen=True)
class ProxyConfig:
    mode: str = "nftables"
    scheduler: str = DEFAULT_SCHEDULER
    nodeport_addresses: tuple[str, ...] = ()      # CIDRs, or "primary"; empty: primary
    conntrack: ConntrackConfig = field(default_factory=ConntrackConfig)
    metrics_bind_address: str | None = None       # None: not set here (the agent's flag default)
    healthz_bind_address: str | None = None
    ignored: tuple[str, ...] = ()                 # kube-proxy fields present and not used




def parse_duration(value: object, what: str) -> float:
    """Seconds of a Go duration ("24h0m0s", "1h", "1.5m", "0", "0s"); not negative."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ConfigError(f"{what}: {value!r} is not a duration such as 1h0m0s")
    try:
        return parse_go_duration(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not a duration such as 1h0m0s") from None


def _count(value: object, what: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what}: {value!r} is not a count (an integer, 0 or more)")
    return value


def _bind_address(value: object, what: str) -> str | None:
    """host:port (host an IP address, or empty for every address), or "" to turn it off."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{what}: {value!r} is not host:port")
    if value == "":
        return ""
    host, sep, port = value.rpartition(":")
    try:
        if not sep or not 1 <= int(port) <= 65535:
            raise ValueError
        if host:
            ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not host:port (such as 0.0.0.0:10256)") from None
    return value


def _nodeport_addresses(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"nodePortAddresses: {value!r} is not a list")
    out = []
    for v in value:
        if v == NODEPORT_PRIMARY:
            out.append(v)
            continue
        try:
            out.append(str(ipaddress.ip_network(v, strict=False)))
        except (TypeError, ValueError):
            raise ConfigError(f"nodePortAddresses: {v!r} is neither a CIDR nor {NODEPORT_PRIMARY!r}") from None
    if NODEPORT_PRIMARY in out and len(out) > 1:
        raise ConfigError(f"nodePortAddresses: {NODEPORT_PRIMARY!r} cannot be mixed with CIDRs")
    return tuple(out)


def _mapping(value: object, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: not a mapping")
    return value


def _conntrack(raw: dict) -> ConntrackConfig:
    unknown = sorted(set(raw) - set(CONNTRACK_FIELDS))
    if unknown:
        raise ConfigError(f"conntrack: unknown field {unknown[0]!r} (known: {', '.join(CONNTRACK_FIELDS)})")
    d = ConntrackConfig()

    def duration(key: str, default: int) -> int:
        return default if raw.get(key) is None else round(parse_duration(raw[key], f"conntrack.{key}"))
    liberal = raw.get("tcpBeLiberal", False)
    if not isinstance(liberal, bool):
        raise ConfigError(f"conntrack.tcpBeLiberal: {liberal!r} is not true or false")
    return ConntrackConfig(
        max_per_core=_count(raw.get("maxPerCore"), "conntrack.maxPerCore", d.max_per_core),
        min=_count(raw.get("min"), "conntrack.min", d.min),
        tcp_established=duration("tcpEstablishedTimeout", d.tcp_established),
        tcp_close_wait=duration("tcpCloseWaitTimeout", d.tcp_close_wait),
        udp=duration("udpTimeout", d.udp),
        udp_stream=duration("udpStreamTimeout", d.udp_stream),
        tcp_be_liberal=liberal)


def parse_proxy_config(text: str) -> ProxyConfig:
    """The configuration a KubeProxyConfiguration document sets (an empty one: the defaults)."""
    import yaml  # here: the agent imports this module before its health server starts

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not YAML: {e}") from None
    raw = _mapping(raw, "the configuration")
    unknown = sorted(set(raw) - set(FIELDS) - set(IGNORED))
    if unknown:
        raise ConfigError(f"unknown field {unknown[0]!r}: not a {KIND} field")
    if raw.get("apiVersion", API_VERSION) != API_VERSION or raw.get("kind", KIND) != KIND:
        raise ConfigError(f"apiVersion/kind {raw.get('apiVersion')}/{raw.get('kind')}: "
                          f"expected {API_VERSION}/{KIND}")
    mode = raw.get("mode") or "nftables"
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not supported: kubeweft programs the Linux kernel's nftables "
                          f"only (set mode: nftables, or leave it empty)")
    ipvs = _mapping(raw.get("ipvs"), "ipvs")
    sched_value = ipvs.get("scheduler") or ""
    scheduler = parse_scheduler(sched_value)
    if scheduler is None:
        raise ConfigError(f"ipvs.scheduler {sched_value!r}: one of {', '.join(SCHEDULERS)} (or mh for maglev, "
                          f"empty for {DEFAULT_SCHEDULER})")
    return ProxyConfig(
        mode=mode, scheduler=scheduler, nodeport_addresses=_nodeport_addresses(raw.get("nodePortAddresses")),
        conntrack=_conntrack(_mapping(raw.get("conntrack"), "conntrack")),
        metrics_bind_address=_bind_address(raw.get("metricsBindAddress"), "metricsBindAddress"),
        healthz_bind_address=_bind_address(raw.get("healthzBindAddress"), "healthzBindAddress"),
        ignored=tuple(sorted(k for k in raw if k in IGNORED)))
