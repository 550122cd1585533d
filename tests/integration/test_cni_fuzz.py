"""Hostile input through the REAL CNI executable (the script `kubeweft install-cni` writes, which
the lab runs), property-based with hypothesis (the cases: tests/cni_hostile.py), in scratch
namespaces (prefix h16f):

    h16f<id>-node   the node, dual-stack (an IPv4 and an IPv6 pod range): the real agent serves
                    its socket here, and every call of the executable runs here (from one worker
                    thread that entered this netns)
    h16f<id>-p<n>   empty pod sandboxes

What every case must show:

- stdout holds exactly one JSON object, the CNI error (cniVersion, code, msg[, details]) with a
  code the spec allows (1-7, 11, 50, 51, 100+) and never 100 (an internal error: the input got
  past validation), and the exit status is not 0. Only a command that may succeed on that input
  (DEL, and with the agent up GC and STATUS; VERSION always) may instead exit 0 and print what
  that command prints.
- nothing is left behind: the node's links, every sandbox's links, the IPAM reservations
  anywhere under the scratch directory and the hostPort maps are as they were.

With the agent down (ADD, CHECK and GC answer 11, STATUS 50, once the input parsed) the cases
are cheap, so most run there. With the agent up the call goes over gRPC into the agent's parsing,
IPAM and datapath: every ADD there carries defects it must refuse, some of which only show after
the address is claimed and the veth made, so the refusal must roll everything back; and an ADD
refused there must not fail in the kernel (104) either: hostile input is caught by validation.

KUBEWEFT_FUZZ_SCALE=N runs N times as many cases as the CI count (1: 1,600 cases).
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ipaddress
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubeweft.cni import datapath
from kubeweft.lab import netns as lab_netns
from pyroute2.netlink.exceptions import NetlinkError

from tests.cni_hostile import SUPPORTED, Case, Sandbox, free_cases, is_spec_code, refused_cases
from tests.integration.test_cni_conformance import ScratchNode

SCALE = float(os.environ.get("KUBEWEFT_FUZZ_SCALE", "1"))
INTERNAL, DATAPATH_FAILURE = 100, 104
pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(240 * SCALE) + 120)]


def fuzz(examples: int):
    # no explain phase: it traces every line of a case run again and again, minutes per failure
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                    print_blob=True, suppress_health_check=list(HealthCheck),
                    phases=(Phase.explicit, Phase.generate, Phase.shrink))


class Fuzzer:
    """The scratch node, the executable, and the observations made before and after each case."""

    def __init__(self, node: ScratchNode, box: Sandbox) -> None:
        self.node, self.box = node, box
        self.exe = str(node.bin_dir / "kubeweft")
        self.pool = concurrent.futures.ThreadPoolExecutor(1, "h16f", initializer=_enter, initargs=(node.node,))
        self.netns = {"node": str(lab_netns.path(node.node)), **{pod: pod for pod in box.pods}}
        # reads each netns' /proc/thread-self/net/dev: 0.1 ms, where a pyroute2 dump costs 3 ms
        self.observer = concurrent.futures.ThreadPoolExecutor(1, "h16f-observer")
        self.baseline = self.observe()
        self.stats: dict[str, list] = {}           # test -> [cases, seconds, Counter of outcomes]

    def close(self) -> None:
        self.pool.shutdown()
        self.observer.shutdown()

    def observe(self) -> dict:
        out = self.observer.submit(lambda: {name: links_in(path) for name, path in self.netns.items()}).result(30)
        out["reservations"] = reservations(self.box.tmp)
        out["hostports"] = self.pool.submit(hostport_elements).result(30)
        return out

    def run(self, case: Case) -> subprocess.CompletedProcess:
        env = case.environ({b"PATH": os.environb[b"PATH"]})
        return self.pool.submit(subprocess.run, [self.exe], input=case.stdin, env=env, capture_output=True,
                                timeout=60, cwd=self.box.cwd, check=False).result(90)

    def check(self, test: str, case: Case, may_succeed: bool, refused: bool = False) -> None:
        try:
            self._check(test, case, may_succeed, refused)
        except AssertionError:
            self.reset(case)        # the next case, and hypothesis' replays of this one, start clean
            raise

    def reset(self, case: Case) -> None:
        """Undo what a failing case left: a DEL of it through the executable (the agent forgets
        its hostPorts and reservations), then every link and reservation still there."""
        env = dict(case.env, CNI_COMMAND=b"DEL")
        self.run(Case("DEL", tuple(env.items()), case.stdin))
        for name, path in self.netns.items():
            with datapath.open_sandbox(path) as ipr:
                for link in ipr.get_links():
                    if link.get("ifname") not in self.baseline[name]:
                        with contextlib.suppress(NetlinkError):     # a veth's peer went with it
                            ipr.link("del", index=link["index"])
        for path in reservations(self.box.tmp):
            os.unlink(path)

    def _check(self, test: str, case: Case, may_succeed: bool, refused: bool) -> None:
        t0 = time.monotonic()
        proc = self.run(case)
        stats = self.stats.setdefault(test, [0, 0.0, collections.Counter()])
        stats[0] += 1
        stats[1] += time.monotonic() - t0
        where = f"{case!r}\nexit {proc.returncode}\nstdout {proc.stdout[:600]!r}\nstderr {proc.stderr[-1500:]!r}"
        command = case.var("CNI_COMMAND")
        if proc.returncode == 0:
            assert may_succeed and command in (b"DEL", b"GC", b"STATUS", b"VERSION"), f"exit 0: {where}"
            if command == b"VERSION":
                doc = json.loads(proc.stdout)
                assert set(doc) == {"cniVersion", "supportedVersions"}, where
            else:
                assert proc.stdout == b"", where
            stats[2]["exit 0"] += 1
        else:
            try:
                doc = json.loads(proc.stdout)         # refuses empty, trailing data, several values
            except ValueError as e:
                raise AssertionError(f"stdout is not one JSON value ({e}): {where}") from None
            assert isinstance(doc, dict) and {"cniVersion", "code", "msg"} <= set(doc) \
                <= {"cniVersion", "code", "msg", "details"}, where
            assert doc["cniVersion"] in SUPPORTED and isinstance(doc["msg"], str) and doc["msg"], where
            assert is_spec_code(doc["code"]) and doc["code"] != INTERNAL, where
            if refused:
                assert doc["code"] not in (DATAPATH_FAILURE, 11), where
            stats[2][doc["code"]] += 1
        now = self.observe()
        if now != self.baseline:
            diff = {k: (self.baseline[k], now[k]) for k in now if now[k] != self.baseline[k]}
            raise AssertionError(f"left behind {diff}: {where}\nagent log: {self.node.agent_log()[-2000:]}")

    def report(self) -> str:
        parts = [f"{name}: {n} cases in {secs:.1f} s (outcomes {dict(sorted(codes.items(), key=str))})"
                 for name, (n, secs, codes) in self.stats.items()]
        total = sum(n for n, _, _ in self.stats.values())
        return f"CNI fuzz (scale {SCALE:g}): {total} cases; " + "; ".join(parts)


def links_in(netns_path: str) -> list[str]:
    """The interface names of a netns, from this thread (which stays there)."""
    lab_netns.setns(netns_path)
    lines = Path("/proc/thread-self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def reservations(root: Path) -> dict[str, str]:
    """Every IPAM reservation file (named by an IPv4 or IPv6 address) or unfinished claim under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.startswith(".tmp-") or _is_address(name):
                path = os.path.join(dirpath, name)
                try:
                    out[path] = Path(path).read_text(errors="replace")
                except OSError:
                    out[path] = "?"
    return out


_worker = threading.local()


def _enter(netns: str) -> None:
    """The worker thread: into the node's netns, with an nftables context made there."""
    import nftables
    lab_netns.setns(netns)
    _worker.nft = nftables.Nftables()
    _worker.nft.set_json_output(True)


def hostport_elements() -> list:
    """The hostPort maps' elements of both families' tables in the worker's netns ([] before the
    tables exist)."""
    nft = _worker.nft
    out = []
    for family in ("ip", "ip6"):
        for name in ("hostports", "hostip_ports"):
            rc, text, _ = nft.cmd(f"list map {family} kubeweft-cni {name}")
            if rc == 0:
                for obj in json.loads(text)["nftables"]:
                    out += obj.get("map", {}).get("elem", [])
    return out


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("h16f")
    (tmp / "cwd").mkdir()                 # relative paths in a case land here, for both processes
    (tmp / "node").mkdir()
    with ScratchNode(tmp / "node", pod_cidr="10.246.3.0/24,fd00:246:3::/64", bridge="kwf", cwd=tmp / "cwd",
                     tag=f"h16f{os.getpid() % 100000}") as node:
        box = Sandbox(tmp=tmp, cwd=tmp / "cwd", pods=tuple(str(lab_netns.path(node.new_pod())) for _ in range(3)),
                      node_netns=str(lab_netns.path(node.node)), live_socket=str(node.socket),
                      dead_socket=str(tmp / "nobody-listens.sock"), data_dir=str(node.data_dir),
                      bridge=node.bridge, subnet_prefix="10.246.3.", bin_dir=str(node.bin_dir),
                      subnet6_prefix="fd00:246:3::")
        box.make()
        f = Fuzzer(node, box)
        try:
            yield f
        finally:
            f.close()
            reporter = request.config.pluginmanager.getplugin("terminalreporter")
            capture = request.config.pluginmanager.getplugin("capturemanager")
            if reporter is not None and capture is not None:
                with capture.global_and_fixture_disabled():
                    reporter.write_line(f.report())


# ---- the agent down: the shim's own parsing, the fast path ------------------------------------

@fuzz(900)
@given(data=st.data())
def test_agent_down_add_check_gc_status_always_answer_one_error(fuzzer, data):
    case = data.draw(free_cases(fuzzer.box).filter(fuzzer.box.is_safe))
    fuzzer.check("agent down ADD/CHECK/GC/STATUS", case, may_succeed=False)


@fuzz(100)
@given(data=st.data())
def test_agent_down_del_and_version_succeed_or_answer_one_error(fuzzer, data):
    case = data.draw(free_cases(fuzzer.box, commands=("DEL", "DEL", "VERSION")).filter(fuzzer.box.is_safe))
    fuzzer.check("agent down DEL/VERSION", case, may_succeed=True)


# ---- the agent up: its parsing, IPAM and datapath ---------------------------------------------

@fuzz(400)
@given(data=st.data())
def test_agent_up_add_refuses_every_defect_and_rolls_back(fuzzer, data):
    case = data.draw(refused_cases(fuzzer.box).filter(fuzzer.box.is_safe))
    fuzzer.check("agent up ADD", case, may_succeed=False, refused=True)


@fuzz(200)
@given(data=st.data())
def test_agent_up_del_check_gc_status_succeed_or_answer_one_error(fuzzer, data):
    case = data.draw(free_cases(fuzzer.box, commands=("DEL", "CHECK", "GC", "STATUS"), live=True)
                     .filter(fuzzer.box.is_safe))
    fuzzer.check("agent up DEL/CHECK/GC/STATUS", case, may_succeed=True)
