"""The runtime side of the CNI protocol, as libcni does it: what a container runtime runs.

Pure part (unit-tested): picking and parsing the network configuration, building each plugin's
environment and stdin, naming the result cache, parsing what a plugin printed.
Thin shell: `CniRuntime` executes the plugins (each with a timeout) and keeps the cache.

Semantics follow libcni (containernetworking/cni, libcni/api.go):
- ADD runs the plugins in order, each getting the previous one's result as prevResult; the
  last result is cached under <data dir>/results/<network>-<containerID>-<ifname>.
- DEL runs them in reverse with the cached result as prevResult (cniVersion >= 0.4.0), and
  succeeds without a cache entry; the entry is removed afterwards.
- CHECK (>= 0.4.0) runs them in order with the cached result; no cache entry is an error.
- STATUS and GC exist from 1.1.0; for older configs they do nothing (GC still DELs the cached
  attachments that are not valid any more, as libcni does).
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_SUFFIXES = (".conflist", ".conf", ".json")
CAPABILITIES = ("portMappings", "mac", "ips", "bandwidth")
CACHE_KIND = "cniCacheV1"
RUNTIME_ERROR = 999          # the spec's "internal" code: used for failures on the runtime side
DEFAULT_TIMEOUT = 30.0


class CniError(Exception):
    """A CNI error: a plugin's error JSON (code, msg, details) and which plugin said it."""

    def __init__(self, code: int, msg: str, details: str = "", plugin: str = ""):
        super().__init__(code, msg, details, plugin)
        self.code = code
        self.msg = msg
        self.details = details
        self.plugin = plugin

    def __str__(self) -> str:
        where = f"plugin {self.plugin}: " if self.plugin else ""
        tail = f" ({self.details})" if self.details else ""
        return f"{where}CNI error {self.code}: {self.msg}{tail}"


class ConfigError(ValueError):
    """The network configuration cannot be used."""


# --- configuration (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkConfig:
    """A network configuration list; a single .conf becomes a one-plugin list."""
    name: str
    cni_version: str
    plugins: tuple[dict, ...]
    source: str = ""
    disable_check: bool = False
    disable_gc: bool = False


def pick_config_file(names: Iterable[str]) -> str | None:
    """The file libcni would load: the lexicographically first *.conflist, *.conf or *.json."""
    candidates = sorted(n for n in names if n.endswith(CONFIG_SUFFIXES) and not n.startswith("."))
    return candidates[0] if candidates else None


def parse_network_config(text: str, source: str = "") -> NetworkConfig:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source or 'config'}: invalid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source or 'config'}: not a JSON object")
    name = raw.get("name")
    if not name or not isinstance(name, str):
        raise ConfigError(f"{source or 'config'}: no 'name'")
    version = raw.get("cniVersion", "0.1.0")
    if "plugins" in raw:
        plugins = raw["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise ConfigError(f"{source or 'config'}: 'plugins' must be a non-empty list")
    elif source.endswith(".conflist"):
        raise ConfigError(f"{source}: a .conflist needs 'plugins'")
    else:
        # a single-plugin .conf: the whole object is the plugin's configuration
        plugins = [{k: v for k, v in raw.items() if k not in ("name", "cniVersion")}]
    for i, p in enumerate(plugins):
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
            raise ConfigError(f"{source or 'config'}: plugins[{i}] has no 'type'")
    return NetworkConfig(name=name, cni_version=str(version), plugins=tuple(plugins), source=source,
                         disable_check=bool(raw.get("disableCheck", False)),
                         disable_gc=bool(raw.get("disableGC", False)))


def parse_version(v: str) -> tuple[int, int, int]:
    parts = (v or "0.1.0").split(".")
    try:
        nums = [int(p) for p in parts] + [0, 0, 0]
    except ValueError:
        raise ConfigError(f"invalid cniVersion {v!r}") from None
    return nums[0], nums[1], nums[2]


def version_at_least(v: str, minimum: str) -> bool:
    return parse_version(v) >= parse_version(minimum)


# --- one invocation (pure) ---------------------------------------------------------------------
@dataclass(frozen=True)
class RuntimeConf:
    """What the runtime knows of one attachment (libcni's RuntimeConf)."""
    container_id: str
    netns: str                                   # a path, e.g. /run/netns/NAME
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()       # CNI_ARGS pairs
    capability_args: Mapping[str, object] = field(default_factory=dict)


def kubernetes_args(namespace: str, name: str, infra_container_id: str) -> tuple[tuple[str, str], ...]:
    """The CNI_ARGS a kubelet's runtime passes for a pod."""
    return (("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", name),
            ("K8S_POD_INFRA_CONTAINER_ID", infra_container_id))


def render_cni_args(args: Iterable[tuple[str, str]]) -> str:
    return ";".join(f"{k}={v}" for k, v in args)


def render_env(command: str, rt: RuntimeConf | None, cni_path: str,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The plugin's environment: the runtime's own (so KUBEWEFT_LAB_ID and PATH pass through)
    with the CNI_* variables set for this command."""
    env = {k: v for k, v in (base or {}).items() if not k.startswith("CNI_")}
    env["CNI_COMMAND"] = command
    env["CNI_PATH"] = cni_path
    if rt is not None:
        env["CNI_CONTAINERID"] = rt.container_id
        env["CNI_NETNS"] = rt.netns
        env["CNI_IFNAME"] = rt.ifname
        env["CNI_ARGS"] = render_cni_args(rt.args)
    return env


def render_runtime_config(plugin: dict, capability_args: Mapping[str, object]) -> dict:
    """Only the capabilities this plugin declares, and only those the runtime has values for."""
    declared = plugin.get("capabilities") or {}
    return {cap: capability_args[cap] for cap in CAPABILITIES
            if declared.get(cap) and cap in capability_args}


def render_plugin_config(net: NetworkConfig, plugin: dict, rt: RuntimeConf | None,
                         prev_result: dict | None, extra: Mapping[str, object] | None = None) -> dict:
    """The stdin JSON for one plugin: its own conf plus name, cniVersion, runtimeConfig,
    prevResult (and anything in `extra`, e.g. GC's valid attachments)."""
    conf = dict(plugin)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    conf.pop("runtimeConfig", None)
    conf.pop("prevResult", None)
    if rt is not None:
        runtime = render_runtime_config(plugin, rt.capability_args)
        if runtime:
            conf["runtimeConfig"] = runtime
    if prev_result is not None:
        conf["prevResult"] = prev_result
    if extra:
        conf.update(extra)
    return conf


def cache_file_name(net_name: str, container_id: str, ifname: str) -> str:
    return f"{net_name}-{container_id}-{ifname}"


def render_cache_entry(net: NetworkConfig, rt: RuntimeConf, result: dict) -> dict:
    return {"kind": CACHE_KIND, "containerId": rt.container_id, "ifName": rt.ifname,
            "networkName": net.name, "netns": rt.netns, "cniArgs": [list(a) for a in rt.args],
            "capabilityArgs": dict(rt.capability_args), "result": result}


def parse_plugin_output(plugin: str, returncode: int, stdout: bytes, stderr: bytes = b"") -> dict | None:
    """A plugin's answer: the result JSON (None when it printed nothing), or a CniError."""
    text = stdout.decode(errors="replace").strip()
    if returncode != 0:
        try:
            err = json.loads(text) if text else None
        except json.JSONDecodeError:
            err = None
        if isinstance(err, dict) and "code" in err:
            try:
                code = int(err["code"])
            except (TypeError, ValueError):
                code = RUNTIME_ERROR
            raise CniError(code, str(err.get("msg", "")), str(err.get("details", "")), plugin)
        why = text or stderr.decode(errors="replace").strip() or f"exit status {returncode}"
        raise CniError(RUNTIME_ERROR, f"netplugin failed: {why}", "", plugin)
    if not text:
        return None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as e:
        raise CniError(RUNTIME_ERROR, f"invalid result JSON: {e}", text[:200], plugin) from None
    if not isinstance(result, dict):
        raise CniError(RUNTIME_ERROR, "result is not a JSON object", text[:200], plugin)
    return result


def find_plugin(plugin_type: str, cni_path: str) -> Path | None:
    """The executable for `plugin_type` in the ':'-separated CNI_PATH."""
    if "/" in plugin_type:
        return None
    for d in cni_path.split(os.pathsep):
        p = Path(d) / plugin_type
        if d and p.is_file() and os.access(p, os.X_OK):
            return p
    return None


# --- the shell -----------------------------------------------------------------------------------
def load_network_config(conf_dir: str | os.PathLike) -> NetworkConfig | None:
    """The network configuration in `conf_dir`, or None when there is none yet."""
    d = Path(conf_dir)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return None
    chosen = pick_config_file(names)
    if chosen is None:
        return None
    return parse_network_config((d / chosen).read_text(), str(d / chosen))


class CniRuntime:
    """Runs CNI plugins from `bin_dir` (CNI_PATH) and caches results under `data_dir`.

    `preexec_fn` (e.g. lab.netns.preexec(node_netns)) lets a caller that is not inside the
    node's netns run the plugins there; the lab kubelet already is, and leaves it None.
    `launcher` is an argv prefix that runs the plugin's executable where the node's filesystem
    is (the lab kubelet's pluginroot), and `plugin_dir` where bin_dir is seen there (CNI_PATH
    and the executable's path as the plugin is given them)."""

    def __init__(self, bin_dir: str | os.PathLike, data_dir: str | os.PathLike,
                 timeout: float = DEFAULT_TIMEOUT, preexec_fn: Callable[[], None] | None = None,
                 env: Mapping[str, str] | None = None, launcher: Sequence[str] = (),
                 plugin_dir: str | None = None):
        self.cni_path = str(bin_dir)
        self.launcher = tuple(launcher)
        self.plugin_dir = plugin_dir
        self.data_dir = Path(data_dir)
        self.timeout = timeout
        self.preexec_fn = preexec_fn
        self.base_env = dict(os.environ if env is None else env)

    # --- the commands ----------------------------------------------------------------------------
    def add(self, net: NetworkConfig, rt: RuntimeConf) -> dict:
        result: dict | None = None
        for plugin in net.plugins:
            conf = render_plugin_config(net, plugin, rt, result)
            out = self._exec("ADD", plugin["type"], conf, rt)
            if out is None:
                raise CniError(RUNTIME_ERROR, "ADD printed no result", "", plugin["type"])
            result = out
        assert result is not None
        self._write_cache(net, rt, result)
        return result

    def delete(self, net: NetworkConfig, rt: RuntimeConf) -> None:
        cached = self.cached_result(net, rt) if version_at_least(net.cni_version, "0.4.0") else None
        for plugin in reversed(net.plugins):
            conf = render_plugin_config(net, plugin, rt, cached)
            self._exec("DEL", plugin["type"], conf, rt)
        self._cache_path(net.name, rt.container_id, rt.ifname).unlink(missing_ok=True)

    def check(self, net: NetworkConfig, rt: RuntimeConf) -> None:
        if not version_at_least(net.cni_version, "0.4.0"):
            raise CniError(RUNTIME_ERROR, f"configuration version {net.cni_version} does not support "
                           "the CHECK command")
        if net.disable_check:
            return
        cached = self.cached_result(net, rt)
        if cached is None:
            raise CniError(RUNTIME_ERROR, f"no cached result for {rt.container_id}/{rt.ifname}: "
                           "cannot check")
        for plugin in net.plugins:
            self._exec("CHECK", plugin["type"], render_plugin_config(net, plugin, rt, cached), rt)

    def status(self, net: NetworkConfig) -> None:
        """Raises the first plugin's CniError (e.g. 50, not ready); nothing before 1.1.0."""
        if not version_at_least(net.cni_version, "1.1.0"):
            return
        for plugin in net.plugins:
            self._exec("STATUS", plugin["type"], render_plugin_config(net, plugin, None, None), None)

    def gc(self, net: NetworkConfig, valid: Iterable[tuple[str, str]]) -> None:
        """Garbage-collect everything but the (containerID, ifname) attachments in `valid`."""
        keep = {(c, i) for c, i in valid}
        errors: list[CniError] = []
        for entry in self.cached_entries(net.name):
            if (entry.get("containerId"), entry.get("ifName")) in keep:
                continue
            rt = RuntimeConf(container_id=entry["containerId"], netns=entry.get("netns", ""),
                             ifname=entry["ifName"],
                             args=tuple(tuple(a) for a in entry.get("cniArgs", [])),
                             capability_args=entry.get("capabilityArgs") or {})
            try:
                self.delete(net, rt)
            except CniError as e:
                errors.append(e)
        if version_at_least(net.cni_version, "1.1.0") and not net.disable_gc:
            valid_json = [{"containerID": c, "ifname": i} for c, i in sorted(keep)]
            for plugin in net.plugins:
                conf = render_plugin_config(net, plugin, None, None,
                                            {"cni.dev/valid-attachments": valid_json})
                try:
                    self._exec("GC", plugin["type"], conf, None)
                except CniError as e:
                    errors.append(e)
        if errors:
            raise errors[0]

    def version(self, plugin_type: str, cni_version: str = "1.0.0") -> dict:
        out = self._exec("VERSION", plugin_type, {"cniVersion": cni_version}, None)
        return out or {}

    # --- the cache ---------------------------------------------------------------------------------
    def cached_result(self, net: NetworkConfig, rt: RuntimeConf) -> dict | None:
        try:
            entry = json.loads(self._cache_path(net.name, rt.container_id, rt.ifname).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return entry.get("result")

    def cached_entries(self, net_name: str) -> list[dict]:
        out = []
        d = self.data_dir / "results"
        if not d.is_dir():
            return out
        for p in sorted(d.glob(f"{net_name}-*")):
            try:
                entry = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if entry.get("kind") == CACHE_KIND and entry.get("networkName") == net_name:
                out.append(entry)
        return out

    def _cache_path(self, net_name: str, container_id: str, ifname: str) -> Path:
        return self.data_dir / "results" / cache_file_name(net_name, container_id, ifname)

    def _write_cache(self, net: NetworkConfig, rt: RuntimeConf, result: dict) -> None:
        path = self._cache_path(net.name, rt.container_id, rt.ifname)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(render_cache_entry(net, rt, result)))
        os.replace(tmp, path)

    # --- one plugin ----------------------------------------------------------------------------------
    def _exec(self, command: str, plugin_type: str, conf: dict, rt: RuntimeConf | None) -> dict | None:
        exe = find_plugin(plugin_type, self.cni_path)
        if exe is None:
            raise CniError(RUNTIME_ERROR, f'failed to find plugin "{plugin_type}" in path '
                           f"[{self.cni_path}]", "", plugin_type)
        env = render_env(command, rt, self.plugin_dir or self.cni_path, self.base_env)
        seen_as = f"{self.plugin_dir}/{exe.name}" if self.plugin_dir else str(exe)
        try:
            proc = subprocess.run([*self.launcher, seen_as], check=False, input=json.dumps(conf).encode(), env=env,
                                  capture_output=True, timeout=self.timeout,
                                  preexec_fn=self.preexec_fn, close_fds=True)
        except subprocess.TimeoutExpired:
            raise CniError(RUNTIME_ERROR, f"{command} timed out after {self.timeout:g}s", "",
                           plugin_type) from None
        return parse_plugin_output(plugin_type, proc.returncode, proc.stdout, proc.stderr)
