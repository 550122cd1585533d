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

# \Z, not $: "$" also matches before a trailing newline
_ID_RE = re.compile(r"\A[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z")
_MAC_RE = re.compile(r"\A[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")
# The kernel's dev_valid_name: at most IFNAMSIZ-1 bytes, not "." or "..", no '/', ':' or byte the
# kernel's isspace() takes for a space (its Latin-1 table counts 0xa0, which UTF-8 continuation
# bytes contain: "à" is c3 a0).
IFNAMSIZ = 16
_IFNAME_BAD_BYTES = frozenset(b"/: \t\n\v\f\r\xa0")
UNIX_PATH_MAX = 108                  # sun_path, with its terminating NUL

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


def load_json(data: bytes | str):
    """One JSON value in UTF-8, as RFC 8259 has it between systems: json.loads alone would take
    UTF-16 or UTF-32 bytes too. ValueError for anything else, also for nesting deeper than the C
    decoder's recursion limit (~1,000 levels), where it raises RecursionError."""
    text = bytes(data).decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def peek_version(config: bytes | str | None) -> str | None:
    """The cniVersion of a configuration, or None when there is none or it does not parse."""
    try:
        doc = load_json(config) if config else None
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


def ifname_problem(name: str) -> str:
    """Why Linux would refuse `name` as an interface name ("" if it would not)."""
    try:
        raw = name.encode()
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return ("is empty" if not raw else
            f"is too long (max {IFNAMSIZ - 1} bytes)" if len(raw) >= IFNAMSIZ else
            "may not be . or .." if raw in (b".", b"..") else
            "contains / or : or whitespace" if _IFNAME_BAD_BYTES.intersection(raw) else "")


def validate_ifname(name: str) -> None:
    """Linux's rules for an interface name, as the spec restates them."""
    why = ifname_problem(name)
    if why:
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       f"CNI_IFNAME {name!r} {why}")


def _env_text(environ: Mapping[str, str], name: str) -> str:
    """A CNI_* variable as text. os.environ holds bytes that are not UTF-8 as lone surrogates
    (surrogateescape); the agent's protocol carries UTF-8 strings, so such a value is refused."""
    value = environ.get(name, "")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       f"{name} is not valid UTF-8: {value!r}") from None
    return value


def parse_env(environ: Mapping[str, str]) -> Invocation:
    """Read CNI_* variables; code 4 for a missing or invalid one. Empty counts as missing."""
    env = {name: _env_text(environ, name) for name in
           ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")}
    command = env["CNI_COMMAND"]
    if not command:
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       "required env variables [CNI_COMMAND] missing")
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       f"unknown CNI_COMMAND: {command}")
    missing = [k for k in _REQUIRED_ENV[command] if not env[k]]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       f"required env variables [{','.join(missing)}] missing")
    cid = env["CNI_CONTAINERID"]
    if cid and not _ID_RE.match(cid):
        raise CniError(INVALID_ENVIRONMENT, "Invalid necessary environment variables",
                       f"invalid characters in CNI_CONTAINERID {cid!r}")
    ifname = env["CNI_IFNAME"]
    if command in ("ADD", "CHECK", "DEL"):
        validate_ifname(ifname)
    raw_args = env["CNI_ARGS"]
    path = tuple(p for p in env["CNI_PATH"].split(":") if p)
    return Invocation(command=command, container_id=cid, netns=env["CNI_NETNS"],
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
        doc = load_json(data)
    except ValueError as e:
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
    if mtu is not None and not _is_int(mtu, 68, 65535):
        raise _invalid(f"mtu must be an integer in 68..65535, got {mtu!r}")
    strings = {}
    for key in ("socket", "dataDir", "bridge", "logFile"):
        v = doc.get(key)
        if v is not None and not isinstance(v, str):
            raise _invalid(f"field {key!r} must be a string")
        strings[key] = v or ""
        if key != "bridge" and strings[key]:
            why = path_problem(strings[key], UNIX_PATH_MAX - 1 if key == "socket" else None)
            if why:
                raise _invalid(f"field {key!r}: {strings[key][:200]!r} {why}")
    bridge = strings["bridge"] or DEFAULT_BRIDGE
    if ifname_problem(bridge):
        raise _invalid(f"invalid bridge name {bridge!r}: {ifname_problem(bridge)}")
    prev = doc.get("prevResult")
    prev_result = parse_result(prev) if prev is not None else None
    return NetConf(cni_version=version, name=doc["name"], type=doc["type"], raw=doc,
                   socket=strings["socket"] or DEFAULT_SOCKET, data_dir=strings["dataDir"],
                   bridge=bridge, mtu=mtu, prev_result=prev_result, runtime_config=rc,
                   log_file=strings["logFile"])


def path_problem(path: str, max_bytes: int | None = None) -> str:
    """Why `path` cannot name a file the plugin uses ("" if it can): relative paths would depend
    on the working directory of whichever process reads them (the shim's or the agent's)."""
    try:
        raw = path.encode()
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if b"\0" in raw:
        return "contains a NUL byte"
    if not path.startswith("/"):
        return "is not an absolute path"
    if max_bytes is not None and len(raw) > max_bytes:
        return f"is longer than {max_bytes} bytes"
    return ""


def parse_valid_attachments(conf: NetConf) -> set[tuple[str, str]]:
    """GC's list of attachments to keep: cni.dev/valid-attachments (1.1.0), or the draft's
    cni.dev/attachments. Null means none; absent is an error, so that a runtime bug never
    frees every address."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in conf.raw:
            items = [] if conf.raw[key] is None else conf.raw[key]      # null: an empty list, as in Go
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
        proto, host_ip = m.get("protocol") or "tcp", m.get("hostIP") or ""
        if not all(_is_int(p, 1, 65535) for p in (hp, cp)):
            raise _invalid(f"port mapping {m!r}: hostPort and containerPort must be in 1..65535")
        if not isinstance(proto, str) or proto.lower() not in NFT_PROTOCOLS:
            raise _invalid(f"port mapping {m!r}: unknown protocol {proto!r}")
        if host_ip and not _is_ip(host_ip):
            raise _invalid(f"port mapping {m!r}: hostIP {host_ip!r} is not an IP address")
        out.append(PortMapping(hp, cp, proto.lower(), host_ip))
    return out


def _is_int(value, low: int, high: int) -> bool:
    """A JSON integer (not a bool, which Python counts as one) in low..high."""
    return type(value) is int and low <= value <= high


# ipaddress is imported where an address is parsed, not with the module: it is 2 ms of the
# shim's 17 ms of imports (-X importtime), and the shim parses addresses only in a prevResult.

def _is_ip(value) -> bool:
    import ipaddress
    try:
        return isinstance(value, str) and bool(ipaddress.ip_address(value))
    except ValueError:
        return False


def _is_cidr(value) -> bool:
    """An address with a prefix length, as Go's ParseCIDR takes it."""
    import ipaddress
    try:
        return isinstance(value, str) and "/" in value and bool(ipaddress.ip_interface(value))
    except ValueError:
        return False


def _ip_interface(value: str):
    """"10.0.0.5", "10.0.0.5/24", "fd00::5" or "fd00::5/64" as an IPv4/IPv6Interface; None for
    anything else."""
    import ipaddress
    try:
        return ipaddress.ip_interface(value)
    except ValueError:
        return None


def parse_mac(value, what: str = "runtimeConfig.mac") -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise _invalid(f"{what} {value!r} is not a MAC address")
    if int(value[:2], 16) & 1:
        raise _invalid(f"{what} {value!r} is a multicast address")
    return value.lower()


def parse_requested(conf: NetConf, inv: Invocation) -> tuple[list[str], str | None]:
    """The addresses (at most one per family) and MAC the runtime asks for: runtimeConfig's ips
    and mac, else CNI_ARGS' IP (comma-separated, as host-local takes it) and MAC. Both sources
    are checked even when runtimeConfig wins, as libcni's typed CNI_ARGS refuse a malformed IP
    or MAC."""
    arg_ip = inv.args.get("IP")
    from_args = _parse_addresses(arg_ip.split(","), "CNI_ARGS IP") if arg_ip else []
    arg_mac = parse_mac(inv.args.get("MAC"), "CNI_ARGS MAC")
    return (conf.ips or from_args), (conf.mac or arg_mac)


def parse_ips(value) -> list[str]:
    """runtimeConfig.ips: addresses ("10.0.0.5", "fd00::5/64"), returned without the prefix."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid("runtimeConfig.ips must be a list of strings")
    return _parse_addresses(value, "runtimeConfig.ips")


def _parse_addresses(values: list[str], what: str) -> list[str]:
    out, families = [], set()
    for v in values:
        addr = _ip_interface(v)
        if addr is None:
            raise _invalid(f"{what}: {v!r} is not an IP address")
        if addr.version in families:
            raise _invalid(f"{what}: two IPv{addr.version} addresses (one per family)")
        families.add(addr.version)
        out.append(str(addr.ip))
    return out


# tbf counts rates and bursts in bytes in 32-bit fields: 2**35 bits and above do not fit
BANDWIDTH_MAX = 2**35 - 1


def parse_bandwidth(value) -> dict | None:
    """runtimeConfig.bandwidth: {ingressRate, ingressBurst, egressRate, egressBurst} (bits/s, bits)."""
    if value in (None, {}):
        return None
    keys = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
    if not isinstance(value, dict) or not all(_is_int(value.get(k, 0), 0, BANDWIDTH_MAX) for k in keys):
        raise _invalid(f"runtimeConfig.bandwidth {value!r}: rates and bursts are integers in "
                       f"0..{BANDWIDTH_MAX}")
    return {k: value[k] for k in keys if k in value}


# --- results -----------------------------------------------------------------------------------

_IFACE_KEYS = {"1.1.0": ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")}
_ROUTE_KEYS = {"1.1.0": ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")}


# The types of a result's fields, as libcni's types100.Result decodes them ("cidr": a string
# ParseCIDR takes, "ip": one ParseIP takes, "strings": a list of strings). null counts as absent.
_RESULT_FIELDS = {
    "interfaces": {"name": str, "mac": str, "mtu": int, "sandbox": str, "socketPath": str, "pciID": str},
    "ips": {"address": "cidr", "gateway": "ip", "interface": int, "version": str},
    "routes": {"dst": "cidr", "gw": "ip", "mtu": int, "advmss": int, "priority": int, "table": int,
               "scope": int},
    "dns": {"nameservers": "strings", "domain": str, "search": "strings", "options": "strings"},
}


def _undecodable(details: str) -> CniError:
    return CniError(DECODING_FAILURE, "Failed to decode content", details)


def _typed(obj: dict, where: str, fields: dict) -> dict:
    """obj with its known fields checked against their types (unknown fields pass through)."""
    for key, kind in fields.items():
        value = obj.get(key)
        if value is None:
            continue
        if kind == "cidr":
            ok = _is_cidr(value)
        elif kind == "ip":
            ok = _is_ip(value)
        elif kind == "strings":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = type(value) is kind          # bool is no int, as in Go
        if not ok:
            raise _undecodable(f"{where}.{key}: {value!r} is not a valid {getattr(kind, '__name__', kind)}")
    return {k: v for k, v in obj.items() if v is not None}


def parse_result(doc) -> dict:
    """A result of any supported version (a prevResult) -> the 1.1.0 shape (no ips[].version).
    A field of the wrong type, an address that is not a CIDR or a gateway that is not an IP is a
    decoding failure (6), as in libcni: CHECK and the results built on it trust these types."""
    if not isinstance(doc, dict):
        raise _undecodable("prevResult is not a JSON object")
    out: dict = {"cniVersion": LATEST}
    for key in ("interfaces", "ips", "routes"):
        items = [] if doc.get(key) is None else doc[key]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise _undecodable(f"prevResult.{key} must be a list of objects")
        out[key] = [_typed(i, f"prevResult.{key}[{n}]", _RESULT_FIELDS[key]) for n, i in enumerate(items)]
    for n, ip in enumerate(out["ips"]):
        ip.pop("version", None)
        if "address" not in ip:
            raise _undecodable(f"prevResult.ips[{n}].address missing")
    dns = {} if doc.get("dns") is None else doc["dns"]
    if not isinstance(dns, dict):
        raise _undecodable("prevResult.dns must be an object")
    out["dns"] = _typed(dns, "prevResult.dns", _RESULT_FIELDS["dns"])
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
    not show. `observed` is {"mac", "addresses": ["10.0.0.5/24", "fd00::5/64"],
    "routes": [{"dst", "gw"}]} (both families).
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
    live_routes = {(_canon_dst(r.get("dst"), r.get("gw")), r.get("gw") or "")
                   for r in observed.get("routes") or []}
    for r in prev.get("routes") or []:
        dst, gw = _canon_dst(r.get("dst"), r.get("gw")), r.get("gw") or ""
        if not any(d == dst and (not gw or g == gw) for d, g in live_routes):
            problems.append(f"route {r.get('dst')} via {r.get('gw') or '-'} missing")
    return problems


def _canon_dst(dst, gw: str = "") -> str:
    """A route's destination in one spelling: an absent one is the default route of the
    gateway's family."""
    if dst in (None, "", "default"):
        return "::/0" if ":" in (gw or "") else "0.0.0.0/0"
    return str(dst)
