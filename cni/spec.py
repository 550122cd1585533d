"""The CNI protocol, pure: the environment, the network configuration, results and their versions.

Everything here is parse_/render_/convert_ work on plain values: no I/O, and only the standard
library, because the shim imports it on every invocation (docs/architecture.md, decision 1). Results are
built in the 1.1.0 shape and converted down to the version the configuration asks for.
"""
from __future__ import annotations

import json
import re
from collections import namedtuple
from collections.abc import Mapping

from .errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    UNSUPPORTED_FIELD,
    CniError,
)
from .protocols import NFT_PROTOCOLS

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# Which CNI_* variables each command needs (as libcni's skel requires them).
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": (),
    "GC": (),
    "VERSION": (),
}
# The oldest configuration version that may carry each command.
_MIN_VERSION = {"CHECK": (0, 4, 0), "STATUS": (1, 1, 0), "GC": (1, 1, 0)}

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFNAME_BAD = re.compile(r"[/:\s]")

DEFAULT_SOCKET = "/run/kubeweft/agent.sock"
DEFAULT_BRIDGE = "kw0"


# --- versions ----------------------------------------------------------------------------------

def parse_version(version: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except (AttributeError, ValueError):
        raise CniError(INCOMPATIBLE_VERSION, "Incompatible CNI version",
                       f"invalid cniVersion {version!r}") from None
    if len(parts) != 3:
        raise CniError(INCOMPATIBLE_VERSION, "Incompatible CNI version", f"invalid cniVersion {version!r}")
    return parts  # type: ignore[return-value]


def is_supported(version: str) -> bool:
    return version in SUPPORTED_VERSIONS


def render_version_info(config_version: str | None = None) -> dict:
    """VERSION's answer; cniVersion echoes the configuration's when it sent one we know."""
    ver = config_version if config_version in SUPPORTED_VERSIONS else LATEST
    return {"cniVersion": ver, "supportedVersions": list(SUPPORTED_VERSIONS)}


def peek_version(config: bytes | str | None) -> str | None:
    """The cniVersion of a configuration, or None when there is none or it does not parse."""
    try:
        doc = json.loads(config) if config else None
    except ValueError:
        return None
    v = doc.get("cniVersion") if isinstance(doc, dict) else None
    return v if isinstance(v, str) else None


# --- the environment ---------------------------------------------------------------------------

# namedtuples, not dataclasses: `import dataclasses` pulls in inspect and ast, ~15-30 ms of
# every shim run.
class Invocation(namedtuple("Invocation", "command container_id netns ifname args raw_args path",
                            defaults=("", "", "", {}, "", ()))):
    """One call of the plugin as the runtime made it (the CNI_* variables; args is CNI_ARGS parsed)."""
    __slots__ = ()

    @property
    def k8s_pod(self) -> dict:
        """K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID if given."""
        return {k: v for k, v in self.args.items() if k.startswith("K8S_POD_")}


def parse_args(raw: str) -> dict:
    """CNI_ARGS "A=1;B=2" -> {"A": "1", "B": "2"}. Unknown keys are kept and ignored by callers
    (the IgnoreUnknown convention holds always); a pair without '=' is an error."""
    out: dict[str, str] = {}
    for pair in raw.split(";") if raw else ():
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                           f"CNI_ARGS: invalid pair {pair!r}")
        out[key] = value
    return out


def validate_ifname(name: str) -> None:
    """Linux's rules for an interface name, as the spec restates them."""
    why = ("is empty" if not name else
           "is too long (max 15 characters)" if len(name) > 15 else
           "may not be . or .." if name in (".", "..") else
           "contains / or : or whitespace" if _IFNAME_BAD.search(name) else "")
    if why:
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       f"CNI_IFNAME {name!r} {why}")


def parse_env(environ: Mapping[str, str]) -> Invocation:
    """Read CNI_* variables; code 4 for a missing or invalid one. Empty counts as missing."""
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       "required env variables [CNI_COMMAND] missing")
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       f"unknown CNI_COMMAND: {command}")
    missing = [k for k in _REQUIRED_ENV[command] if not environ.get(k)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       f"required env variables [{','.join(missing)}] missing")
    cid = environ.get("CNI_CONTAINERID", "")
    if cid and not _ID_RE.match(cid):
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       f"invalid characters in CNI_CONTAINERID {cid!r}")
    ifname = environ.get("CNI_IFNAME", "")
    if command in ("ADD", "CHECK", "DEL"):
        validate_ifname(ifname)
    raw_args = environ.get("CNI_ARGS", "")
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    return Invocation(command=command, container_id=cid, netns=environ.get("CNI_NETNS", ""),
                      ifname=ifname, args=parse_args(raw_args), raw_args=raw_args, path=path)


def render_env(inv: Invocation) -> dict:
    """The inverse of parse_env (the agent rebuilds the environment from a gRPC request)."""
    env = {"CNI_COMMAND": inv.command, "CNI_CONTAINERID": inv.container_id, "CNI_NETNS": inv.netns,
           "CNI_IFNAME": inv.ifname, "CNI_ARGS": inv.raw_args, "CNI_PATH": ":".join(inv.path)}
    return {k: v for k, v in env.items() if v}


# --- the network configuration -----------------------------------------------------------------

class PortMapping(namedtuple("PortMapping", "host_port container_port protocol host_ip",
                             defaults=("tcp", ""))):
    __slots__ = ()


class NetConf(namedtuple("NetConf", "cni_version name type raw socket data_dir bridge mtu prev_result "
                                    "runtime_config log_file",
                         defaults=(DEFAULT_SOCKET, "", DEFAULT_BRIDGE, None, None, {}, ""))):
    """A plugin's network configuration, as the runtime sent it on stdin (prev_result normalised
    to the 1.1.0 shape)."""
    __slots__ = ()

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.cni_version)

    # capabilities (runtimeConfig), validated on access
    @property
    def port_mappings(self) -> list[PortMapping]:
        return parse_port_mappings(self.runtime_config.get("portMappings"))

    @property
    def mac(self) -> str | None:
        return parse_mac(self.runtime_config.get("mac"))

    @property
    def ips(self) -> list[str]:
        return parse_ips(self.runtime_config.get("ips"))

    @property
    def bandwidth(self) -> dict | None:
        return parse_bandwidth(self.runtime_config.get("bandwidth"))


def _invalid(details: str) -> CniError:
    return CniError(INVALID_NETWORK_CONFIG, "Invalid network config", details)


def parse_config(data: bytes | str, command: str = "ADD") -> NetConf:
    """stdin -> NetConf: 6 if it is not JSON, 1 for a version we do not speak (or one too old for
    the command), 7 for a missing or malformed field."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CniError(DECODING_FAILURE, "Failed to decode content", f"network config: {e}") from None
    if not isinstance(doc, dict):
        raise CniError(DECODING_FAILURE, "Failed to decode content", "network config is not a JSON object")
    version = doc.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(INCOMPATIBLE_VERSION, "Incompatible CNI version",
                       f"config has no cniVersion; plugin supports {list(SUPPORTED_VERSIONS)}")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, "Incompatible CNI version",
                       f'incompatible CNI versions; config is "{version}", plugin supports '
                       f"{list(SUPPORTED_VERSIONS)}")
    need = _MIN_VERSION.get(command)
    if need and parse_version(version) < need:
        raise CniError(INCOMPATIBLE_VERSION, "Incompatible CNI version",
                       f"config version {version} does not allow {command}")
    for key in ("name", "type"):
        if not isinstance(doc.get(key), str) or not doc.get(key):
            raise _invalid(f"missing or empty field {key!r}")
    if not _ID_RE.match(doc["name"]):
        raise _invalid(f"invalid network name {doc['name']!r}")
    rc = doc.get("runtimeConfig") or {}
    if not isinstance(rc, dict):
        raise _invalid("runtimeConfig must be an object")
    ipam_conf = doc.get("ipam")
    if ipam_conf and command in ("ADD", "CHECK"):      # DEL and GC still clean up
        # kubeweft's agent owns IPAM (crash-safe, reconciled against the veths): a delegated
        # IPAM plugin would hand out addresses the agent does not know about
        kind = ipam_conf.get("type") if isinstance(ipam_conf, dict) else ipam_conf
        raise CniError(UNSUPPORTED_FIELD, "Unsupported field in network configuration",
                       f"ipam: {json.dumps(kind)}: kubeweft allocates addresses itself; remove the ipam section")
    mtu = doc.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535):
        raise _invalid(f"mtu must be an integer in 68..65535, got {mtu!r}")
    strings = {}
    for key in ("socket", "dataDir", "bridge", "logFile"):
        v = doc.get(key)
        if v is not None and not isinstance(v, str):
            raise _invalid(f"field {key!r} must be a string")
        strings[key] = v or ""
    bridge = strings["bridge"] or DEFAULT_BRIDGE
    if len(bridge) > 15 or _IFNAME_BAD.search(bridge):
        raise _invalid(f"invalid bridge name {bridge!r}")
    prev = doc.get("prevResult")
    prev_result = parse_result(prev) if prev is not None else None
    return NetConf(cni_version=version, name=doc["name"], type=doc["type"], raw=doc,
                   socket=strings["socket"] or DEFAULT_SOCKET, data_dir=strings["dataDir"],
                   bridge=bridge, mtu=mtu, prev_result=prev_result, runtime_config=rc,
                   log_file=strings["logFile"])


def parse_valid_attachments(conf: NetConf) -> set[tuple[str, str]]:
    """GC's list of attachments to keep: cni.dev/valid-attachments (1.1.0), or the draft's
    cni.dev/attachments. Null means none; absent is an error, so that a runtime bug never
    frees every address."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in conf.raw:
            items = conf.raw[key] or []
            break
    else:
        raise _invalid("GC needs cni.dev/valid-attachments")
    if not isinstance(items, list):
        raise _invalid("cni.dev/valid-attachments must be a list")
    out = set()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) \
                or not isinstance(item.get("ifname"), str):
            raise _invalid(f"bad attachment {item!r}: needs containerID and ifname")
        out.add((item["containerID"], item["ifname"]))
    return out


# --- capabilities (runtimeConfig) --------------------------------------------------------------

def parse_port_mappings(value) -> list[PortMapping]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("runtimeConfig.portMappings must be a list")
    out = []
    for m in value:
        if not isinstance(m, dict):
            raise _invalid(f"bad port mapping {m!r}")
        hp, cp = m.get("hostPort"), m.get("containerPort")
        proto = str(m.get("protocol") or "tcp").lower()
        if not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in (hp, cp)):
            raise _invalid(f"port mapping {m!r}: hostPort and containerPort must be in 1..65535")
        if proto not in NFT_PROTOCOLS:
            raise _invalid(f"port mapping {m!r}: unknown protocol {proto!r}")
        out.append(PortMapping(hp, cp, proto, str(m.get("hostIP") or "")))
    return out


def parse_mac(value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise _invalid(f"runtimeConfig.mac {value!r} is not a MAC address")
    if int(value[:2], 16) & 1:
        raise _invalid(f"runtimeConfig.mac {value!r} is a multicast address")
    return value.lower()


def parse_ips(value) -> list[str]:
    """runtimeConfig.ips: addresses ("10.0.0.5" or "10.0.0.5/24"), returned without the prefix."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid("runtimeConfig.ips must be a list of strings")
    out = []
    for v in value:
        addr = v.split("/")[0]
        parts = addr.split(".")
        if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
            raise _invalid(f"runtimeConfig.ips: {v!r} is not an IPv4 address (kubeweft is IPv4-only)")
        out.append(addr)
    return out


def parse_bandwidth(value) -> dict | None:
    """runtimeConfig.bandwidth: {ingressRate, ingressBurst, egressRate, egressBurst} (bits/s, bits)."""
    if value in (None, {}):
        return None
    keys = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
    if not isinstance(value, dict) or not all(
            isinstance(value.get(k, 0), int) and value.get(k, 0) >= 0 for k in keys):
        raise _invalid(f"runtimeConfig.bandwidth {value!r}: rates and bursts are non-negative integers")
    return {k: value[k] for k in keys if k in value}


# --- results -----------------------------------------------------------------------------------

_IFACE_KEYS = {"1.1.0": ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")}
_ROUTE_KEYS = {"1.1.0": ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")}


def parse_result(doc) -> dict:
    """A result of any supported version (a prevResult) -> the 1.1.0 shape (no ips[].version)."""
    if not isinstance(doc, dict):
        raise CniError(DECODING_FAILURE, "Failed to decode content", "prevResult is not a JSON object")
    out: dict = {"cniVersion": LATEST}
    for key in ("interfaces", "ips", "routes"):
        items = doc.get(key) or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise CniError(DECODING_FAILURE, "Failed to decode content", f"prevResult.{key} must be a list")
        out[key] = [dict(i) for i in items]
    for ip in out["ips"]:
        ip.pop("version", None)
        if not isinstance(ip.get("address"), str):
            raise CniError(DECODING_FAILURE, "Failed to decode content", "prevResult.ips[].address missing")
    dns = doc.get("dns")
    out["dns"] = dict(dns) if isinstance(dns, dict) else {}
    return out


def convert_result(result: dict, version: str) -> dict:
    """A 1.1.0-shaped result -> the schema of `version`: 1.0.0 drops 1.1.0's interface and route
    fields; 0.3.x/0.4.0 also add ips[].version."""
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, "Incompatible CNI version", f"cannot render a {version} result")
    iface_keys = _IFACE_KEYS.get(version, ("name", "mac", "sandbox"))
    route_keys = _ROUTE_KEYS.get(version, ("dst", "gw"))
    legacy = not version.startswith("1.")
    out: dict = {"cniVersion": version}
    if result.get("interfaces"):
        out["interfaces"] = [{k: i[k] for k in iface_keys if i.get(k) not in (None, "")}
                             for i in result["interfaces"]]
    ips = []
    for ip in result.get("ips") or []:
        d = {k: ip[k] for k in ("address", "gateway", "interface") if ip.get(k) is not None}
        if legacy:
            d = {"version": "6" if ":" in ip["address"] else "4", **d}
        ips.append(d)
    if ips:
        out["ips"] = ips
    routes = [{k: r[k] for k in route_keys if r.get(k) not in (None, "")} for r in result.get("routes") or []]
    if routes:
        out["routes"] = routes
    out["dns"] = {k: v for k, v in (result.get("dns") or {}).items()
                  if k in ("nameservers", "domain", "search", "options")}
    return out


def render_result(version: str, interfaces: list[dict], ips: list[dict], routes: list[dict],
                  dns: dict | None = None, prev: dict | None = None) -> dict:
    """Build the ADD result in `version`, appending to a prevResult (interface indexes shifted)."""
    base = prev or {"interfaces": [], "ips": [], "routes": [], "dns": {}}
    shift = len(base.get("interfaces") or [])
    merged = {
        "interfaces": list(base.get("interfaces") or []) + interfaces,
        "ips": list(base.get("ips") or []) + [
            {**ip, "interface": ip["interface"] + shift} if "interface" in ip else ip for ip in ips],
        "routes": list(base.get("routes") or []) + routes,
        "dns": {**(base.get("dns") or {}), **(dns or {})},
    }
    return convert_result(merged, version)


def render_json(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def diff_check(prev: dict, netns: str, ifname: str, observed: dict) -> list[str]:
    """CHECK's comparison: what prevResult says about our pod interface that the live state does
    not show. `observed` is {"mac", "addresses": ["10.0.0.5/24"], "routes": [{"dst", "gw"}]}.
    Routes only need to be present: a later chained plugin may add its own."""
    problems = []
    ifaces = prev.get("interfaces") or []
    idx = next((i for i, itf in enumerate(ifaces)
                if itf.get("name") == ifname and itf.get("sandbox") in (None, "", netns)), None)
    if idx is None:
        return [f"prevResult has no interface {ifname!r} in sandbox {netns!r}"]
    want_mac = (ifaces[idx].get("mac") or "").lower()
    if want_mac and want_mac != (observed.get("mac") or "").lower():
        problems.append(f"{ifname}: mac is {observed.get('mac')}, expected {want_mac}")
    have = set(observed.get("addresses") or [])
    for ip in prev.get("ips") or []:
        if ip.get("interface") == idx and ip["address"] not in have:
            problems.append(f"{ifname}: address {ip['address']} missing (has {sorted(have)})")
    live_routes = {(_canon_dst(r.get("dst")), r.get("gw") or "") for r in observed.get("routes") or []}
    for r in prev.get("routes") or []:
        dst, gw = _canon_dst(r.get("dst")), r.get("gw") or ""
        if not any(d == dst and (not gw or g == gw) for d, g in live_routes):
            problems.append(f"route {r.get('dst')} via {r.get('gw') or '-'} missing")
    return problems


def _canon_dst(dst) -> str:
    return "0.0.0.0/0" if dst in (None, "", "default") else str(dst)
