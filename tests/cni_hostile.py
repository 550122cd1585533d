"""Hostile input for the CNI executable: hypothesis strategies over its environment and stdin.

A `Case` is what a runtime hands the plugin: the CNI_* variables as execve passes them (bytes,
possibly not UTF-8; a variable may be absent) and the bytes on stdin.

- `free_cases`: anything at all: every variable and every configuration field missing, empty,
  huge, not UTF-8, a path traversal, garbage, of the wrong JSON type; stdin truncated, not JSON,
  deeply nested, in an unknown version. For a plugin whose agent is down.
- `refused_cases`: a valid call with one to three defects that the plugin must refuse (each
  labelled), plus noise the plugin must accept (unknown keys and CNI_ARGS, valid capabilities).
  For a plugin whose agent is up: the call reaches the agent's parsing, IPAM and datapath.

Paths the plugin opens, creates or appends to (CNI_NETNS, socket, dataDir, logFile) are drawn
only under the test's scratch directory, or are paths that do not exist or cannot be entered
(`Sandbox.is_safe` is the last check): a fuzzer must never make the plugin act on anything
outside the test, least of all on another network namespace.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# The spec's error codes (CNI 1.1.0 "Error"): 1-7 and 11 for every command, 50 and 51 for STATUS;
# 100 and above are the plugin's own.
SPEC_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 11, 50, 51})
HUGE = 120_000                  # below MAX_ARG_STRLEN (128 KiB), the most one variable may hold
_NSFS_DEV = os.stat("/proc/self/ns/net").st_dev


def is_spec_code(code) -> bool:
    return isinstance(code, int) and not isinstance(code, bool) and (code in SPEC_CODES or code >= 100)


@dataclass(frozen=True)
class Sandbox:
    """The scratch world one test module made: where paths may point."""
    tmp: Path                     # everything below is the test's
    cwd: Path                     # the plugin's and the agent's working directory (relative paths)
    pods: tuple[str, ...]         # netns paths of empty pod sandboxes the test owns
    node_netns: str               # the netns path the plugin and the agent run in
    live_socket: str              # the agent's socket (agent up) or a path nobody listens on
    dead_socket: str
    data_dir: str                 # the agent's IPAM store
    bridge: str
    subnet_prefix: str            # "10.246.3." : pod addresses for runtimeConfig.ips
    bin_dir: str
    subnet6_prefix: str = ""      # "fd00:246:3::" : the node's IPv6 range ("": none)

    @property
    def regular_file(self) -> str:
        return str(self.tmp / "a-regular-file")

    @property
    def directory(self) -> str:
        return str(self.tmp / "a-directory")

    def make(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        Path(self.directory).mkdir(exist_ok=True)
        Path(self.regular_file).write_text("not a namespace\n")

    def is_safe(self, case: Case) -> bool:
        """No path of the case names a network namespace that is not the test's own, and the
        socket it names is the test's (never the default one, where a real agent may listen)."""
        try:
            conf = json.loads(case.stdin)
        except (ValueError, RecursionError):
            conf = None
        if isinstance(conf, dict):
            sock = conf.get("socket")
            if not sock or (isinstance(sock, str) and sock.startswith("/")
                            and not sock.startswith(f"{self.tmp}/")):
                return False
        netns = case.var("CNI_NETNS")
        if not netns:
            return True
        path = Path(os.fsdecode(netns))
        try:
            st_ = os.stat(path if path.is_absolute() else self.cwd / path)
        except (OSError, ValueError):
            return True
        if st_.st_dev != _NSFS_DEV:
            return True                       # not a namespace: entering it fails
        own = [os.stat(p) for p in (*self.pods, self.node_netns)]
        return any((st_.st_dev, st_.st_ino) == (o.st_dev, o.st_ino) for o in own)


@dataclass(frozen=True)
class Case:
    command: str                                 # what the case means to run (for the oracle)
    env: tuple[tuple[str, bytes | None], ...]    # every CNI_* variable; None: absent
    stdin: bytes
    defects: tuple[str, ...] = ()                # what the case broke, for the report
    noise: tuple[str, ...] = field(default=())

    def var(self, name: str) -> bytes | None:
        return dict(self.env).get(name)

    def environ(self, extra: dict[bytes, bytes]) -> dict[bytes, bytes]:
        out = dict(extra)
        out.update({k.encode(): v for k, v in self.env if v is not None})
        return out

    def __repr__(self) -> str:           # huge values are cut: the report stays readable
        def cut(v) -> str:
            r = repr(v)
            return r if len(r) <= 160 else f"{r[:120]}...<{len(r)} chars>...{r[-20:]}"
        env = ", ".join(f"{k}={cut(v)}" for k, v in self.env)
        return f"Case({self.command}, defects={list(self.defects)}, env[{env}], stdin={cut(self.stdin)})"

    def _repr_pretty_(self, printer, cycle) -> None:      # hypothesis prints drawn values with it
        printer.text(repr(self))


# ---- values ------------------------------------------------------------------------------------

def _nul_free(b: bytes) -> bytes:
    return b.replace(b"\0", b"")


huge_bytes = st.tuples(st.sampled_from([b"a", b"0", b"/", b";", b"=", b"\xc3\xa9", b"ab=cd;"]),
                       st.integers(4096, HUGE)).map(lambda t: (t[0] * (t[1] // len(t[0]) + 1))[:t[1]])
non_utf8 = st.tuples(st.binary(max_size=24), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]),
                     st.binary(max_size=8)).map(lambda t: _nul_free(t[0] + t[1] + t[2]))
garbage_bytes = st.binary(min_size=1, max_size=64).map(_nul_free)
garbage_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                       min_size=1, max_size=40).map(str.encode)
TRAVERSALS = (b"..", b".", b"/", b"//", b"../../../../../../nope", b"/proc/self/..", b"./../nope/../..",
              b"/dev/null", b"/nope/../nope", b"..;..", b"\\..\\..\\nope", b"%2e%2e%2fnope", b"~/nope")
traversal = st.sampled_from(TRAVERSALS) | st.integers(1, 64).map(lambda n: b"../" * n + b"nope")


def hostile_env(valid: bytes | None = None) -> st.SearchStrategy[bytes | None]:
    """A variable's value: absent, empty, huge, not UTF-8, a traversal, garbage (or `valid`)."""
    options = [st.none(), st.just(b""), huge_bytes, non_utf8, traversal, garbage_bytes, garbage_text]
    if valid is not None:
        options.append(st.just(valid))
    return st.one_of(options)


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=24),
                        st.sampled_from([0, -1, 65536, 2**63, 10**40, "", " ", "\ud800", "a\u0000b", "NaN"]))
json_value = st.recursive(json_scalar, lambda c: st.lists(c, max_size=4)
                          | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
huge_json = st.integers(10_000, 2_000_000).map(lambda n: "x" * n)
UNKNOWN_VERSIONS = ("2.0.0", "0.2.0", "0.1.0", "1.1", "1", "1.1.0.0", "v1.1.0", "1.1.0-rc1", "01.1.0",
                    "1.01.0", " 1.1.0", "1.1.0 ", "", "1.2.0", "99999999999999999999.0.0", "１.１.０")
DEEP = "__h16_deep__"


def _dump(conf, deep: int = 0) -> bytes:
    """JSON text; the string DEEP anywhere in it becomes `deep` levels of nested arrays."""
    text = json.dumps(conf)
    if deep:
        text = text.replace(json.dumps(DEEP), "[" * deep + "]" * deep)
    return text.encode("utf-8", "surrogatepass")


def _short(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else f"{r[:50]}...<{len(r)}>"


# ---- configuration fields ----------------------------------------------------------------------

@functools.cache
def _path_value(box: Sandbox, live: bool) -> st.SearchStrategy:
    """A string for socket/dataDir/logFile that can only point into the scratch directory."""
    return st.sampled_from([
        box.directory, box.regular_file, str(box.tmp / "missing" / "deeper" / "x"),
        "relative-name", "./rel/../rel2", f"{box.tmp}/a-directory/../a-directory",
        box.live_socket if live else box.dead_socket, box.dead_socket,
        f"{box.tmp}/\u00e9t\u00e9", f"{box.tmp}/nul\u0000byte", f"{box.tmp}/lone\ud800surrogate",
        f"{box.tmp}/" + "n" * 5000, str(box.tmp / ("x" * 300)),
    ])


@functools.cache
def _prev_result_garbage() -> st.SearchStrategy:
    """A prevResult with one part of the wrong shape or type."""
    iface = st.fixed_dictionaries({}, optional={"name": json_value, "mac": json_value, "sandbox": json_value,
                                                "mtu": json_value, "socketPath": json_value,
                                                "pciID": json_value})
    ip = st.fixed_dictionaries({}, optional={"address": json_value | st.sampled_from(
        ["10.0.0.5", "10.0.0.5/33", "garbage/24", "::1/129", "10.0.0.5/24/1"]),
        "gateway": json_value, "interface": json_value, "version": json_value})
    route = st.fixed_dictionaries({}, optional={"dst": json_value, "gw": json_value, "mtu": json_value,
                                                "priority": json_value, "table": json_value})
    dns = st.fixed_dictionaries({}, optional={"nameservers": json_value, "domain": json_value,
                                              "search": json_value, "options": json_value})
    return st.one_of(
        json_scalar, st.lists(json_value, max_size=3),
        st.fixed_dictionaries({"cniVersion": st.sampled_from(SUPPORTED) | json_scalar},
                              optional={"interfaces": st.lists(iface, max_size=3) | json_scalar,
                                        "ips": st.lists(ip, min_size=1, max_size=3) | json_scalar,
                                        "routes": st.lists(route, max_size=3) | json_scalar,
                                        "dns": dns | json_scalar}))


@functools.cache
def _runtime_config_garbage() -> st.SearchStrategy:
    mapping = st.fixed_dictionaries({}, optional={"hostPort": json_value, "containerPort": json_value,
                                                  "protocol": json_value, "hostIP": json_value})
    return st.one_of(
        json_scalar, st.lists(json_value, max_size=3),
        st.fixed_dictionaries({}, optional={
            "portMappings": st.lists(mapping, min_size=1, max_size=3) | json_value,
            "mac": json_value | st.sampled_from(["01:00:5e:00:00:01", "zz:zz:zz:zz:zz:zz", "ff:ff:ff:ff:ff:ff",
                                                 "00:00:00:00:00:00:00"]),
            "ips": json_value | st.lists(st.sampled_from(["10.0.0.1/40", "::1", "1.2.3", "300.1.1.1", "fd00::1/129",
                                                          "fd00::1", "fd00::2", "::ffff:10.0.0.1", "fe80::1%eth0"]),
                                         min_size=1, max_size=2),
            "bandwidth": json_value | st.fixed_dictionaries(
                {}, optional={k: json_value | st.sampled_from([2**70, -1, 2**35, 10**30])
                              for k in ("ingressRate", "ingressBurst", "egressRate", "egressBurst")}),
        }))


TOP_FIELDS = ("cniVersion", "name", "type", "socket", "dataDir", "bridge", "logFile", "mtu",
              "runtimeConfig", "prevResult", "ipam", "cni.dev/valid-attachments", "capabilities",
              "args", "dns")


def base_conf(box: Sandbox, version: str, live: bool) -> dict:
    return {"cniVersion": version, "name": "kubeweft", "type": "kubeweft",
            "socket": box.live_socket if live else box.dead_socket, "dataDir": box.data_dir,
            "bridge": box.bridge}


@st.composite
def hostile_stdin(draw, box: Sandbox, command: str, live: bool) -> tuple[bytes, str]:
    """stdin bytes and what was broken in it."""
    conf = base_conf(box, draw(st.sampled_from(SUPPORTED)), live)
    if command == "GC":
        conf["cni.dev/valid-attachments"] = []
    kind = draw(st.sampled_from(["valid", "valid", "valid", "wrong type", "wrong type", "path", "version", "truncated",
                                 "garbage", "not an object", "deep", "huge", "prevResult", "prevResult",
                                 "runtimeConfig", "runtimeConfig", "ipam", "bom", "utf16", "empty"]))
    deep = 0
    if kind == "wrong type":
        key = draw(st.sampled_from(TOP_FIELDS))
        if key in ("socket", "dataDir", "logFile") and draw(st.booleans()):
            conf[key] = draw(_path_value(box, live))
        else:
            value = draw(json_value | huge_json)
            if key in ("socket", "dataDir", "logFile") and isinstance(value, str):
                # never a path outside the scratch dir, and never the default socket (a real agent's)
                value = f"{box.tmp}/{value[:200].replace('/', '_')}"
            if key == "socket" and value is None:
                value = box.dead_socket
            conf[key] = value
        kind = f"{key}: wrong type or value"
    elif kind == "path":
        key = draw(st.sampled_from(["socket", "dataDir", "logFile"]))
        conf[key] = draw(_path_value(box, live))
        kind = f"{key}: {conf[key][:60]!r}"
    elif kind == "version":
        conf["cniVersion"] = draw(st.sampled_from(UNKNOWN_VERSIONS) | json_scalar)
        if draw(st.booleans()):
            del conf["cniVersion"]
    elif kind == "deep":
        deep = draw(st.integers(500, 200_000))
        key = draw(st.sampled_from(["top", "cniVersion", "runtimeConfig", "prevResult", "extra"]))
        if key == "top":
            return b"[" * deep + b"]" * deep, f"deep {deep} at top"
        conf[key] = DEEP
        kind = f"deep {deep} at {key}"
    elif kind == "huge":
        conf[draw(st.sampled_from(["name", "extra", "cniVersion", "bridge"]))] = draw(huge_json)
    elif kind == "prevResult":
        conf["prevResult"] = draw(_prev_result_garbage())
    elif kind == "runtimeConfig":
        conf["runtimeConfig"] = draw(_runtime_config_garbage())
    elif kind == "ipam":
        conf["ipam"] = draw(st.sampled_from([{"type": "host-local", "subnet": "10.0.0.0/24"}, {"type": "dhcp"}])
                            | json_value)
    elif kind == "not an object":
        return _dump(draw(st.lists(json_value, max_size=3) | json_scalar)), kind
    data = _dump(conf, deep)
    if kind == "truncated":
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    elif kind == "garbage":
        data = draw(st.binary(max_size=200) | garbage_text)
    elif kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "utf16":
        data = data.decode().encode("utf-16")
    elif kind == "empty":
        data = b""
    return data, kind


@st.composite
def free_cases(draw, box: Sandbox, commands=("ADD", "CHECK", "GC", "STATUS"), live: bool = False) -> Case:
    """Anything: any variable may be hostile, and stdin too. `live`: the configuration names the
    agent's socket (else one nobody listens on)."""
    command = draw(st.sampled_from(commands))
    cmd_value = command.encode() if command in ("ADD", "CHECK", "GC", "STATUS", "DEL", "VERSION") else None
    valid = {"CNI_COMMAND": cmd_value, "CNI_CONTAINERID": b"c" + draw(st.binary(min_size=4, max_size=8)).hex().encode(),
             "CNI_NETNS": draw(st.sampled_from(box.pods)).encode(), "CNI_IFNAME": b"eth0",
             "CNI_ARGS": b"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
             "CNI_PATH": box.bin_dir.encode()}
    n = draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3]))
    broken = set(draw(st.lists(st.sampled_from(VARS), min_size=n, max_size=n, unique=True)))
    if cmd_value is None:
        broken.add("CNI_COMMAND")
    env = []
    for name in VARS:
        if name in broken:
            value = draw(hostile_env() | st.sampled_from([b"add", b"Add", b"ADD ", b"DELETE", b"VERSIONS",
                                                          b"ADD\n", b"DEL;ADD"])
                         if name == "CNI_COMMAND" else hostile_env())
        else:
            value = valid[name]
        env.append((name, value))
    stdin, what = draw(hostile_stdin(box, command, live))
    defects = tuple(f"{n} hostile" for n in sorted(broken)) + (f"stdin: {what}",)
    case = Case(command, tuple(env), stdin, defects)
    return case


# ---- refused cases: a valid call, and defects the plugin must refuse ---------------------------

@functools.cache
def _valid_runtime_config(box: Sandbox) -> st.SearchStrategy[dict]:
    """Capabilities the plugin accepts: they make it do more (hostPorts, shaping, a fixed MAC or
    address) before a later defect must roll everything back."""
    return st.fixed_dictionaries({}, optional={
        "portMappings": st.lists(st.fixed_dictionaries(
            {"hostPort": st.integers(20000, 20999), "containerPort": st.integers(1, 65535),
             "protocol": st.sampled_from(["tcp", "udp", "TCP", "sctp"])},
            optional={"hostIP": st.sampled_from(["", "0.0.0.0", "127.0.0.1", "::1", "::", "2001:db8::1"])}),
            min_size=1, max_size=3, unique_by=lambda m: (m["hostPort"], m["protocol"].lower())),
        "mac": st.sampled_from(["02:42:ac:11:00:02", "0a:58:0a:f4:01:07", "AA:BB:CC:DD:EE:FF"]),
        "bandwidth": st.fixed_dictionaries({}, optional={
            "ingressRate": st.integers(8, 2**32), "egressRate": st.integers(8, 2**32),
            "ingressBurst": st.integers(0, 2**31), "egressBurst": st.integers(0, 2**31)}),
        "ips": _valid_ips(box),
    })


def _valid_ips(box: Sandbox) -> st.SearchStrategy[list[str]]:
    """runtimeConfig.ips the node can give: an address of its IPv4 range, of its IPv6 range, or
    one of each (either order)."""
    v4 = st.integers(2, 250).map(lambda n: f"{box.subnet_prefix}{n}")
    if not box.subnet6_prefix:
        return v4.map(lambda a: [a])
    v6 = st.integers(2, 2**64 - 1).map(lambda n: str(ipaddress.IPv6Address(f"{box.subnet6_prefix}0") + n))
    return st.one_of(v4.map(lambda a: [a]), v6.map(lambda a: [a]),
                     st.tuples(v4, v6).map(list), st.tuples(v6, v4).map(list))


@functools.cache
def _defects(box: Sandbox) -> tuple[st.SearchStrategy, st.SearchStrategy, st.SearchStrategy]:
    """Three strategies of (label, change), change(env dict, conf dict) -> stdin bytes, a function
    of the final stdin, or None (conf as JSON): defects the shim itself refuses (the environment
    and the configuration's fields), defects only the agent sees (capabilities, CNI_ARGS' IP and
    MAC), and defects the agent meets only after it claimed an address and made the veth."""
    def env_set(name, value):
        def change(env, conf):
            env[name] = value
        return change

    def env_del(name):
        def change(env, conf):
            env[name] = None
        return change

    def conf_set(key, value):
        def change(env, conf):
            conf[key] = value
        return change

    def rc_set(key, value):
        def change(env, conf):
            rc = conf["runtimeConfig"] if isinstance(conf.get("runtimeConfig"), dict) else {}
            conf["runtimeConfig"] = {**rc, key: value}
        return change

    def args_ip(ip):
        def change(env, conf):
            env["CNI_ARGS"] = f"K8S_POD_NAME=x;IP={ip}".encode()
            if isinstance(conf.get("runtimeConfig"), dict):
                conf["runtimeConfig"].pop("ips", None)
        return change

    def raw(data):
        def change(env, conf):
            return data
        return change

    def encode(fn):
        def change(env, conf):
            return fn          # applied to the final JSON text
        return change

    ifnames_refused = st.sampled_from(["", ".", "..", "eth 0", "eth/0", "e:0", "a" * 16, "eth\t0",
                                       "\u00e9" * 8, "\u4e2d" * 6, "eth0\n", "x\x0by"])
    bad_cids = st.sampled_from(["-leading-dash", "has space", "semi;colon", "slash/in", "\u00e9t\u00e9",
                                "a" * 10 + "\n", ".dot-first", "_under", "tab\tin"])
    shallow = [
        st.builds(lambda v: (f"CNI_COMMAND={v!r}", env_set("CNI_COMMAND", v)),
                  hostile_env() | st.sampled_from([b"add", b"ADD ", b"FROB"])),
        st.builds(lambda v: (f"CNI_CONTAINERID={_short(v)}", env_set("CNI_CONTAINERID", v)),
                  st.none() | st.just(b"") | non_utf8 | bad_cids.map(str.encode)),
        st.builds(lambda v: (f"CNI_IFNAME={_short(v)}", env_set("CNI_IFNAME", v)),
                  st.none() | non_utf8 | ifnames_refused.map(str.encode) | huge_bytes),
        st.builds(lambda v: (f"CNI_ARGS={_short(v)}", env_set("CNI_ARGS", v)),
                  non_utf8 | st.sampled_from([b"K8S_POD_NAME", b"=x", b"a;b"])),
        st.builds(lambda v: (f"CNI_NETNS={_short(v)}", env_set("CNI_NETNS", v)),
                  st.none() | st.just(b"") | non_utf8),
        st.just(("CNI_PATH absent", env_del("CNI_PATH"))),
        st.builds(lambda v: (f"stdin {_short(v)}", raw(v)),
                  st.binary(max_size=80) | st.just(b"") | st.just(b"[]") | st.just(b"null")
                  | st.integers(500, 100_000).map(lambda n: b"{\"a\":" + b"[" * n + b"]" * n + b"}")),
        st.sampled_from([("stdin in UTF-16", encode(lambda b: b.decode().encode("utf-16"))),
                         ("stdin with a BOM", encode(lambda b: b"\xef\xbb\xbf" + b)),
                         ("stdin in Latin-1", encode(lambda b: b.replace(b"kubeweft", b"kubeweft\xe9"))),
                         ("stdin with trailing data", encode(lambda b: b + b" {}"))]),
        st.builds(lambda v: (f"cniVersion {v!r}", conf_set("cniVersion", v)),
                  st.sampled_from(UNKNOWN_VERSIONS) | json_scalar.filter(lambda v: v not in SUPPORTED)),
        st.builds(lambda k, v: (f"{k} {_short(v)}", conf_set(k, v)), st.sampled_from(["name", "type"]),
                  json_value.filter(lambda v: not isinstance(v, str) or v == "")),
        st.builds(lambda v: (f"name {v!r}", conf_set("name", v)),
                  st.sampled_from(["has space", "-dash", "slash/x", "\u00e9", "kubeweft\n"])),
        st.builds(lambda v: (f"mtu {v!r}", conf_set("mtu", v)),
                  json_value.filter(lambda v: not (type(v) is int and 68 <= v <= 65535))),
        st.builds(lambda k, v: (f"{k} {_short(v)}", conf_set(k, v)),
                  st.sampled_from(["socket", "dataDir", "logFile", "bridge"]),
                  json_value.filter(lambda v: v is not None and not isinstance(v, str))),
        st.builds(lambda v: (f"bridge {v!r}", conf_set("bridge", v)),
                  st.sampled_from(["a" * 16, "br 0", "br/0", "br:0", "\u00e9" * 8])),
        st.builds(lambda v: (f"ipam {_short(v)}", conf_set("ipam", v)),
                  st.sampled_from([{"type": "host-local"}, {"type": "dhcp"}, "x", [1], 1, True])),
        st.builds(lambda v: (f"runtimeConfig {_short(v)}", conf_set("runtimeConfig", v)),
                  json_value.filter(lambda v: v and not isinstance(v, dict))),
        st.builds(lambda v: (f"prevResult {_short(v)}", conf_set("prevResult", v)), _refused_prev_result()),
    ]
    deep = [
        st.builds(lambda v: (f"CNI_ARGS={_short(v)}", env_set("CNI_ARGS", b"K8S_POD_NAME=x;" + v)),
                  st.sampled_from([b"IP=garbage", b"IP=10.0.0.1.1", b"MAC=zz", b"MAC=01:00:00:00:00:00",
                                   b"IP=fd00::1,fd00::2", b"IP=10.0.0.1,garbage", b"IP=10.0.0.1,", b"IP=,",
                                   b"IP=fd00::1/129"])),
        # well-formed but not available: refused only when runtimeConfig.ips does not win over it
        st.builds(lambda v: (f"CNI_ARGS=IP={v}", args_ip(v)),
                  st.sampled_from([box.subnet_prefix + "0", box.subnet_prefix + "1", box.subnet_prefix + "255",
                                   "192.0.2.7", "2001:db8::7", "::1",
                                   *((box.subnet6_prefix + "0", box.subnet6_prefix + "1",
                                      f"{box.subnet_prefix}7,{box.subnet6_prefix}1") if box.subnet6_prefix else ())])),
        st.builds(lambda v: (f"portMappings {_short(v)}", rc_set("portMappings", v)),
                  st.one_of(json_scalar.filter(lambda v: v is not None), st.lists(
                      st.fixed_dictionaries({"hostPort": st.integers(20000, 20999) | json_value,
                                             "containerPort": st.integers(1, 65535) | json_value},
                                            optional={"protocol": json_value | st.just("icmp"),
                                                      "hostIP": st.sampled_from(
                                                          ["garbage", "1.2.3.4.5", "300.0.0.1", "10.0.0.1/24"])
                                                      | json_value.filter(lambda v: v and not isinstance(v, str))}),
                      min_size=1, max_size=3).filter(_some_mapping_refused))),
        st.builds(lambda v: (f"mac {v!r}", rc_set("mac", v)),
                  st.sampled_from(["01:00:5e:00:00:01", "zz:zz:zz:zz:zz:zz", "ff:ff:ff:ff:ff:ff",
                                   "00:11:22:33:44", "00-11-22-33-44-55", " 02:42:ac:11:00:02",
                                   "02:42:ac:11:00:02\n"])
                  | json_value.filter(lambda v: v not in (None, "") and not isinstance(v, str))),
        st.builds(lambda v: (f"ips {v!r}", rc_set("ips", v)),
                  st.sampled_from([["::1"], ["1.2.3"], ["300.1.1.1"], ["garbage"], [box.subnet_prefix + "0"],
                                   [box.subnet_prefix + "1"], [box.subnet_prefix + "255"], ["192.0.2.1"], [1],
                                   "10.0.0.1", ["2001:db8::1"], ["fd00::1", "fd00::2"],
                                   [box.subnet_prefix + "7", box.subnet_prefix + "8"],
                                   *(([box.subnet6_prefix + "0"], [box.subnet6_prefix + "1"],
                                      [box.subnet_prefix + "7", box.subnet6_prefix + "1"])
                                     if box.subnet6_prefix else ())])),
        st.builds(lambda v: (f"bandwidth {v!r}", rc_set("bandwidth", v)),
                  st.fixed_dictionaries({"ingressRate": st.sampled_from([-1, 2**35, 10**30, 2**64, "1M", 1.5, 4]),
                                         "ingressBurst": st.sampled_from([0, 10**30, -5, "x"])})
                  | st.fixed_dictionaries({"egressRate": st.integers(8, 2**32),
                                           "egressBurst": st.sampled_from([10**30, 2**64, -8, "big"])})),
    ]
    # refused only after the address is claimed (and the veth made): the refusal rolls back
    late = [
        st.builds(lambda v: (f"CNI_NETNS {_short(v)}", env_set("CNI_NETNS", v)),
                  st.sampled_from([b"/nope/netns", box.regular_file.encode(), box.directory.encode(),
                                   b"/dev/null", b"/", b"relative/netns", b"../" * 30 + b"nope"]) | huge_bytes),
        st.just(("CNI_IFNAME lo, which every sandbox has", env_set("CNI_IFNAME", b"lo"))),
        st.builds(lambda k, v: (f"bandwidth {k} {v}", rc_set("bandwidth", {k: v})),
                  st.sampled_from(["ingressRate", "egressRate"]), st.integers(1, 7)),
    ]
    return st.one_of(shallow), st.one_of(deep), st.one_of(late)


def _some_mapping_refused(mappings: list) -> bool:
    """At least one entry that no reading of the spec accepts."""
    def ok_port(p) -> bool:
        return type(p) is int and 1 <= p <= 65535

    def refused(m) -> bool:
        proto = m.get("protocol") or "tcp"       # absent, null or "": TCP, as kubelet means it
        host_ip = m.get("hostIP")
        return (not ok_port(m["hostPort"]) or not ok_port(m["containerPort"])
                or not isinstance(proto, str) or proto.lower() not in ("tcp", "udp", "sctp")
                or (host_ip not in ("", None) and not _is_ip(host_ip)))
    return any(refused(m) for m in mappings)


def _is_ip(v) -> bool:
    import ipaddress
    if not isinstance(v, str):
        return False
    try:
        ipaddress.ip_address(v)
        return True
    except (ValueError, TypeError):
        return False


@functools.cache
def _refused_prev_result() -> st.SearchStrategy:
    """prevResults a spec-typed decoder refuses (libcni's types100.Result): not an object, a list
    that is not a list, an entry of the wrong type, an address that is not a CIDR."""
    wrong_str = json_value.filter(lambda v: v is not None and not isinstance(v, str))
    wrong_int = json_value.filter(lambda v: v is not None and type(v) is not int)
    iface = {"name": "eth0", "sandbox": "/x"}
    ip = {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0}
    route = {"dst": "0.0.0.0/0", "gw": "10.0.0.1"}
    return st.one_of(
        json_value.filter(lambda v: not isinstance(v, dict)),
        st.builds(lambda k, v: {"cniVersion": "1.1.0", k: v},
                  st.sampled_from(["interfaces", "ips", "routes"]),
                  json_value.filter(lambda v: v not in (None, [], {}, "", 0, False) and not isinstance(v, list))),
        st.builds(lambda k, v: {"cniVersion": "1.1.0", "interfaces": [{**iface, k: v}]},
                  st.sampled_from(["name", "mac", "sandbox", "socketPath", "pciID"]), wrong_str),
        st.builds(lambda v: {"cniVersion": "1.1.0", "interfaces": [{**iface, "mtu": v}]}, wrong_int),
        st.builds(lambda k, v: {"cniVersion": "1.1.0", "ips": [{**ip, k: v}]},
                  st.sampled_from(["address", "gateway"]),
                  wrong_str | st.sampled_from(["10.0.0.5/33", "garbage", "10.0.0.5/24/1", "", "1.2.3/24"])),
        st.builds(lambda v: {"cniVersion": "1.1.0", "ips": [{**ip, "interface": v}]}, wrong_int),
        st.builds(lambda k, v: {"cniVersion": "1.1.0", "routes": [{**route, k: v}]},
                  st.sampled_from(["dst", "gw"]), wrong_str | st.sampled_from(["nope", "10.0.0.0/40", ""])),
        st.builds(lambda k, v: {"cniVersion": "1.1.0", "dns": {k: v}},
                  st.sampled_from(["nameservers", "search", "options"]),
                  json_value.filter(lambda v: v is not None and not (isinstance(v, list)
                                                                     and all(isinstance(i, str) for i in v)))),
        st.builds(lambda v: {"cniVersion": "1.1.0", "dns": v},
                  json_value.filter(lambda v: v is not None and not isinstance(v, dict))),
    )


@st.composite
def refused_cases(draw, box: Sandbox) -> Case:
    """A valid ADD (a pod netns of the test, the live agent, valid capabilities and noise), then
    one defect met after the address is claimed (one case in three), or one or two defects only
    the agent sees, and in one case of four also up to two the shim refuses already."""
    command = "ADD"
    cid = draw(st.from_regex(r"\A[a-z0-9][a-z0-9_.\-]{0,40}\Z"))
    env: dict[str, bytes | None] = {
        "CNI_COMMAND": command.encode(), "CNI_CONTAINERID": cid.encode(),
        "CNI_NETNS": draw(st.sampled_from(box.pods)).encode(),
        "CNI_IFNAME": draw(st.sampled_from([b"eth0", b"net1", b"e", b"a" * 15])),
        "CNI_ARGS": b"IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=p-" + cid.encode()
        + draw(st.sampled_from([b"", b";UNKNOWN=x", b";K8S_POD_UID=", b";;"])),
        "CNI_PATH": box.bin_dir.encode()}
    conf = base_conf(box, draw(st.sampled_from(SUPPORTED)), live=True)
    noise = []
    if draw(st.booleans()):
        conf["runtimeConfig"] = draw(_valid_runtime_config(box))
        noise.append(f"runtimeConfig {conf['runtimeConfig']}")
    if draw(st.booleans()):
        conf[draw(st.sampled_from(["unknownField", "capabilities", "args", "dns"]))] = draw(json_value)
        noise.append("an unknown field")
    shallow, deep, late = _defects(box)
    if draw(st.sampled_from([True, False, False])):
        defects = [draw(late)]
    else:
        defects = draw(st.lists(deep, min_size=1, max_size=2, unique_by=lambda d: d[0]))
    if draw(st.sampled_from([False, False, False, True])):
        defects += draw(st.lists(shallow, min_size=1, max_size=2, unique_by=lambda d: d[0]))
    stdin, encodings = None, []
    for _, change in defects:
        out = change(env, conf)
        if callable(out):
            encodings.append(out)
        elif out is not None:
            stdin = out
    data = stdin if stdin is not None else _dump(conf)
    for fn in encodings:
        try:
            data = fn(data)
        except UnicodeDecodeError:
            pass                 # stdin is raw bytes already
    return Case(command, tuple(env.items()), data, tuple(label for label, _ in defects), tuple(noise))
