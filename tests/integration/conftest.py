"""Shared fixtures of every integration test (root, network namespaces, the real kernel).

What you get here:

- The whole suite is skipped (with the reason) when not run as root.
- `rootns_guard` (session, autouse): snapshots the ROOT network namespace before the session
  (links and their state, addresses, routes of all tables, ip rules, net.* sysctls, the
  nftables ruleset, the /run/netns entries not made by tests) and fails the session's last
  test teardown if any of it changed. Counters and timers are ignored.
- `lab2` (session): ONE running 2-node lab, `--cni reference`, built through the real CLI
  (`kubeweft lab up`) and always removed (`kubeweft lab down`) at the end. It is a `Lab`:
      lab.name, lab.cfg (lab.config.LabConfig), lab.kubeconfig (Path), lab.kubectl_path (str)
      lab.kubectl(*args, input=None, check=True, timeout=60) -> CompletedProcess (text)
      lab.client() -> kubernetes.client.ApiClient          (close it, or use `with`)
      lab.status() -> dict                                 (`kubeweft lab status --json`)
      lab.cli(*args, check=True, timeout=60) -> CompletedProcess of `kubeweft lab --name N ...`
      lab.run_in(netns, argv, timeout=30) -> CompletedProcess (argv inside that netns, text)
  Share it politely: clean up the pods/services you create (use your own k8s namespace).
- `labk` (session): the same for ONE 3-node lab with `--cni kubeweft` (kubeweft installed by
  `lab up` with `kubectl apply -k deploy/lab`: the DaemonSet's agent, CNI, VXLAN overlay,
  service proxy, policy; lab.lifecycle.find_agent, restart_agent, hold_agent/release_agent and
  lab.install.agent_log reach the agent container of a node).
- `labk6`, `labkd` (session): the same 3-node kubeweft lab on `--ip-family ipv6` and `dual`.
  `klab` (session, parametrized by `lab_family` over ipv4, ipv6, dual): labk, labk6 or labkd,
  with `klab.version` the family the test's traffic uses (4, 6, and 6 on dual: its secondary),
  `klab.pick(ips)` that family's address of a pod or node, `klab.hostport(ip, port)`.
  Take `klab` instead of `labk` to run a lab test in every family.
- `lab_factory` (function): `make(nodes=2, cni="reference", timeout=120, ip_family="ipv4") -> Lab`
  brings up a fresh lab of your own with a unique name (ipv4, ipv6 or dual); every lab it made
  is downed after the test.
  `fresh_lab(...)` is the same as a context manager, for module-scoped fixtures.

Snapshot helpers for tests of the guard itself: `snapshot_netns(name_or_None)`,
`diff_snapshots(before, after) -> list[str]`.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubeweft.lab import netns as lab_netns
from kubeweft.lab.config import STATE_ROOT, LabConfig

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
KUBEWEFT = str(VENV_BIN / "kubeweft")
KUBECTL = str(VENV_BIN / "kubectl")

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="integration tests need root (network namespaces)")
        for item in items:
            if HERE in Path(str(item.fspath)).resolve().parents:
                item.add_marker(skip)


def pytest_report_header(config):
    if os.geteuid() != 0:
        return "kubeweft: not root, integration tests skipped"
    return None


# --- root netns snapshot ----------------------------------------------------------------------

# Entries under /run/netns made by tests (engineers' scratch prefixes h1.., labs t<digits>..):
# other test runs may add and remove them at any time, so the guard ignores them.
TEST_NETNS = re.compile(r"^(h\d|t\d|k\d)")
# sysctls that move by themselves
VOLATILE_SYSCTL = re.compile(r"(nf_conntrack_count|\.stable_secret$)")
# per-route/address fields that move by themselves (RA lifetimes, cached PMTU)
VOLATILE_KEYS = {"expires", "valid_life_time", "preferred_life_time", "stats", "stats64", "cache"}
NFT_VOLATILE = re.compile(r"\s+(expires|timeout) \S+|\s+counter packets \d+ bytes \d+")

_session_lab_names: set[str] = set()   # labs made by this session: none may outlive it


def _run(argv: list[str], inside: str | None) -> str:
    kw = {"capture_output": True, "text": True, "timeout": 30}
    proc = lab_netns.run(inside, argv, check=False, **kw) if inside else \
        subprocess.run(argv, check=False, **kw)
    return proc.stdout


def _json(argv: list[str], inside: str | None) -> list:
    out = _run(argv, inside).strip()
    return json.loads(out) if out else []


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _keyed(items: list) -> set[str]:
    return {json.dumps(_clean(i), sort_keys=True) for i in items}


def snapshot_netns(inside: str | None = None) -> dict[str, object]:
    """What the guard compares, for the root netns (None) or a named one (tests of the guard)."""
    links = {}
    for link in _json(["ip", "-j", "link", "show"], inside):
        links[link["ifname"]] = json.dumps(
            {k: link.get(k) for k in ("ifindex", "flags", "mtu", "qdisc", "operstate", "address",
                                      "master", "link_type", "link_netnsid")}, sort_keys=True)
    addrs = set()
    for link in _json(["ip", "-j", "addr", "show"], inside):
        for a in link.get("addr_info", []):
            addrs.add(f"{link['ifname']} {a.get('family')} {a.get('local')}/{a.get('prefixlen')} "
                      f"scope {a.get('scope')}")
    routes = _keyed(_json(["ip", "-j", "-4", "route", "show", "table", "all"], inside)) | \
        _keyed(_json(["ip", "-j", "-6", "route", "show", "table", "all"], inside))
    rules = _keyed(_json(["ip", "-j", "-4", "rule", "show"], inside)) | \
        _keyed(_json(["ip", "-j", "-6", "rule", "show"], inside))
    sysctls = {}
    for line in _run(["sysctl", "-a"], inside).splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.startswith("net.") and not VOLATILE_SYSCTL.search(key):
            sysctls[key] = value
    nft = NFT_VOLATILE.sub("", _run(["nft", "-s", "list", "ruleset"], inside)).strip()
    snap: dict[str, object] = {"links": links, "addresses": addrs, "routes": routes,
                               "rules": rules, "sysctls": sysctls, "nftables": nft}
    if inside is None:
        snap["netns"] = {n for n in os.listdir(lab_netns.NETNS_DIR) if not TEST_NETNS.match(n)} \
            if lab_netns.NETNS_DIR.exists() else set()
        # labs (a developer's own, say) make and remove their namespaces as they please
        snap["labs"] = set(os.listdir(STATE_ROOT)) if STATE_ROOT.is_dir() else set()
    return snap


def diff_snapshots(before: dict, after: dict) -> list[str]:
    """Human-readable differences, one line each; [] when nothing changed.
    sysctls: a changed or vanished key counts; a new key (a module loaded somewhere) does not,
    since a new link in the netns is caught by "links" already."""
    out = []
    for what in ("links",):
        b, a = before[what], after[what]
        out += [f"link removed: {k}" for k in sorted(b.keys() - a.keys())]
        out += [f"link added: {k}" for k in sorted(a.keys() - b.keys())]
        out += [f"link changed: {k}: {b[k]} -> {a[k]}" for k in sorted(b.keys() & a.keys()) if b[k] != a[k]]
    for what in ("addresses", "routes", "rules"):
        out += [f"{what} removed: {x}" for x in sorted(before[what] - after[what])]
        out += [f"{what} added: {x}" for x in sorted(after[what] - before[what])]
    b, a = before["sysctls"], after["sysctls"]
    out += [f"sysctl changed: {k}: {b[k]} -> {a.get(k, '(gone)')}" for k in sorted(b) if a.get(k) != b[k]]
    if before["nftables"] != after["nftables"]:
        out.append(f"nftables ruleset changed:\n--- before\n{before['nftables']}\n--- after\n"
                   f"{after['nftables']}")
    if "netns" in before:
        labs = tuple(f"{lab}-" for lab in before.get("labs", set()) | after.get("labs", set()))
        out += [f"netns removed: {n}" for n in sorted(before["netns"] - after["netns"])
                if not n.startswith(labs)]
    return out


def _left_over_lab_netns() -> list[str]:
    if not lab_netns.NETNS_DIR.exists():
        return []
    left = sorted(n for n in os.listdir(lab_netns.NETNS_DIR)
                  if any(n.startswith(f"{lab}-") for lab in _session_lab_names))
    return left + [str(LabConfig(name=lab).state_dir) for lab in sorted(_session_lab_names)
                   if LabConfig(name=lab).state_dir.exists()]


@pytest.fixture(scope="session", autouse=True)
def rootns_guard():
    if os.geteuid() != 0:
        yield
        return
    before = snapshot_netns(None)
    yield
    after = snapshot_netns(None)
    problems = diff_snapshots(before, after)
    problems += [f"left behind by a lab of this session: {n}" for n in _left_over_lab_netns()]
    assert not problems, "the root network namespace changed during the tests:\n" + "\n".join(problems)


# --- labs ---------------------------------------------------------------------------------------

@dataclass
class Lab:
    name: str
    cfg: LabConfig
    kubeconfig: Path
    kubectl_path: str = KUBECTL
    version: int = 4              # the IP family a family-parametrized test sends over (klab)

    def pick(self, ips, version: int | None = None) -> str:
        """The address of family `version` (default: self.version) among a pod's or node's
        addresses; AssertionError when it has none."""
        want = version or self.version
        for ip in ([ips] if isinstance(ips, str) else ips):
            if (":" in ip) == (want == 6):
                return ip
        raise AssertionError(f"no IPv{want} address among {ips}")

    def hostport(self, ip: str, port: int) -> str:
        """ADDR:PORT, [ADDR]:PORT for IPv6, as `lab probe` takes it."""
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([KUBEWEFT, "lab", "--name", self.name, *args], capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubeweft lab {' '.join(args)} -> {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        proc = subprocess.run([self.kubectl_path, *args], input=input, capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def client(self):
        from kubernetes import config as k8s_config
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig))

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def run_in(self, netns_name: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return lab_netns.run(netns_name, argv, capture_output=True, text=True, timeout=timeout, check=False)


_counter = itertools.count(1)
KILLED_AGENTS_ENV = {"KUBEWEFT_LAB_BACKOFF_BASE": "1"}


def unique_lab_name(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid()}x{next(_counter)}"


def down_lab(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([KUBEWEFT, "lab", "--name", name, "down"], capture_output=True, text=True,
                          timeout=60, check=False)


@contextlib.contextmanager
def fresh_lab(name: str | None = None, nodes: int = 2, cni: str = "reference",
              timeout: float = 120, env: dict[str, str] | None = None,
              ip_family: str = "ipv4") -> Iterator[Lab]:
    """Bring up a lab through the real CLI, yield it, always bring it down. `env`: set for
    `lab up`, whose processes (the kubelets) keep it. `ip_family`: ipv4, ipv6 or dual."""
    name = name or unique_lab_name()
    _session_lab_names.add(name)
    try:
        proc = subprocess.run([KUBEWEFT, "lab", "--name", name, "up", "--nodes", str(nodes),
                               "--cni", cni, "--ip-family", ip_family, "--timeout", str(timeout)],
                              capture_output=True, text=True, timeout=timeout + 60, check=False,
                              env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            pytest.fail(f"kubeweft lab up ({name}) failed: {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        cfg = LabConfig(name=name, nodes=nodes, cni=cni, ip_family=ip_family)
        yield Lab(name=name, cfg=cfg, kubeconfig=cfg.kubeconfig)
    finally:
        down = down_lab(name)
        if down.returncode != 0:
            print(f"kubeweft lab down ({name}): {down.stdout}{down.stderr}", file=sys.stderr)


@pytest.fixture(scope="session")
def lab2() -> Iterator[Lab]:
    with fresh_lab(f"t{os.getpid()}", nodes=2, cni="reference", timeout=120) as lab:
        yield lab


@pytest.fixture(scope="session")
def labk() -> Iterator[Lab]:
    """ONE running 3-node lab with kubeweft installed as users install it (deploy/lab's
    DaemonSet: CNI, VXLAN overlay, service proxy, policy), shared by the tests that need
    kubeweft's datapath. Same interface as lab2; share it politely (your own k8s namespace,
    clean up what you create). Several tests kill an agent (lab.lifecycle.restart_agent,
    hold_agent): its kubelet's CrashLoopBackOff starts at 1 s here, not 10 s."""
    with fresh_lab(f"k{os.getpid()}", nodes=3, cni="kubeweft", timeout=120, env=KILLED_AGENTS_ENV) as lab:
        yield lab


@pytest.fixture(scope="session")
def labk6() -> Iterator[Lab]:
    """As labk, on an IPv6 lab (`--ip-family ipv6`): Nodes, pods and Services of IPv6 only."""
    with fresh_lab(f"k{os.getpid()}v6", nodes=3, cni="kubeweft", timeout=120, env=KILLED_AGENTS_ENV,
                   ip_family="ipv6") as lab:
        yield lab


@pytest.fixture(scope="session")
def labkd() -> Iterator[Lab]:
    """As labk, on a dual-stack lab (`--ip-family dual`, IPv4 primary): every Node and pod has
    an address of each family."""
    with fresh_lab(f"k{os.getpid()}d", nodes=3, cni="kubeweft", timeout=120, env=KILLED_AGENTS_ENV,
                   ip_family="dual") as lab:
        yield lab


# A test parametrized over IP families takes `klab` instead of `labk`, with `lab_family` naming the
# lab and `klab.version` the family its traffic uses: ipv4 (labk, over IPv4), ipv6 (labk6, over
# IPv6), dual (labkd, over IPv6, the secondary family: the primary is what ipv4 runs).
FAMILY_LABS = {"ipv4": ("labk", 4), "ipv6": ("labk6", 6), "dual": ("labkd", 6)}


@pytest.fixture(scope="session", params=list(FAMILY_LABS))
def lab_family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def klab(request, lab_family) -> Lab:
    fixture, version = FAMILY_LABS[lab_family]
    lab = request.getfixturevalue(fixture)
    lab.version = version
    return lab


@pytest.fixture
def lab_factory():
    stack = contextlib.ExitStack()

    def make(nodes: int = 2, cni: str = "reference", timeout: float = 120, prefix: str = "t",
             ip_family: str = "ipv4") -> Lab:
        return stack.enter_context(fresh_lab(unique_lab_name(prefix), nodes=nodes, cni=cni,
                                             timeout=timeout, ip_family=ip_family))
    with stack:
        yield make
