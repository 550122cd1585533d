"""The kubeweft CNI plugin through its REAL executable and the real protocol (env + stdin), with the
real agent serving it over gRPC, in scratch namespaces (prefix h6a):

    h6a<id>-node   the "node": the agent runs here (via lab.netns.preexec), so does the shim
    h6a<id>-ext    an "external host" on the node's eth0 (198.18.0.2 -> node 198.18.0.1, and
                   2001:db8:18::2 -> node 2001:db8:18::1)
    h6a<id>-p<n>   one netns per pod

Each version's result schema, each error code, DEL in every odd state, CHECK, STATUS, GC,
capabilities (mac, ips, portMappings chained to the reference portmap plugin), the agent's
socket and restart reconcile, and one run through lab/cniexec.py (the libcni-like runtime).
What depends on the node's ranges (results, addresses, routes, CHECK, DEL, pod-to-pod traffic,
hostPorts, masquerade) runs for each IP family setup: IPv4, IPv6 alone, and dual-stack.
"""
from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import pytest
from kubeweft.lab import netns as lab_netns

from .waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KUBEWEFT = str(ROOT / ".venv" / "bin" / "kubeweft")
REFERENCE = Path("/usr/lib/cni")
NODE_IP, EXT_IP = "198.18.0.1", "198.18.0.2"
NODE_IP6, EXT_IP6 = "2001:db8:18::1", "2001:db8:18::2"       # documentation range
_ids = itertools.count(1)
# a node's pod ranges per IP family setup, in the order the agent is given them
RANGES = {"ipv4": ("10.250.1.0/24",), "ipv6": ("fd00:250:1::/64",),
          "dual": ("10.250.1.0/24", "fd00:250:1::/64")}


def gateway_of(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr).network_address + 1)


def default_dst(cidr: str) -> str:
    return "::/0" if ":" in cidr else "0.0.0.0/0"


def sh(*argv: str, netns: str | None = None, check: bool = True, timeout: float = 20) -> str:
    if netns:
        argv = ("ip", "netns", "exec", netns, *argv)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr}")
    return proc.stdout


class ScratchNode:
    """A node netns with the agent running in it, the CNI installed in a temp dir, pod netns."""

    def __init__(self, tmp: Path, pod_cidr: str = "10.250.1.0/24", bridge: str = "kw0",
                 ext: bool = False, tag: str | None = None, agent_args: tuple = (),
                 agent_prefix: tuple = (), cwd: Path | None = None) -> None:
        self.tag = tag or f"h6a{os.getpid() % 100000}x{next(_ids)}"
        self.tmp, self.pod_cidr, self.bridge = tmp, pod_cidr, bridge
        self.node = f"{self.tag}-node"
        self.ext = f"{self.tag}-ext" if ext else None
        self.bin_dir, self.conf_dir = tmp / "bin", tmp / "net.d"
        self.socket = tmp / "run" / "agent.sock"
        self.data_dir = self.socket.parent / "cni" / "data"     # install-cni's default
        self.agent: subprocess.Popen | None = None
        self.agent_args = agent_args
        self.agent_prefix = agent_prefix      # argv the agent runs under (e.g. unshare)
        self.cwd = cwd                  # the agent's working directory (None: the test's)
        self.pods: list[str] = []
        self._pods = itertools.count(1)

    # -- lifecycle
    def __enter__(self) -> Self:
        try:
            sh("ip", "netns", "add", self.node)
            sh("ip", "-n", self.node, "link", "set", "lo", "up")
            if self.ext:
                sh("ip", "netns", "add", self.ext)
                # made inside the node netns, the peer moved straight into ext: never in root
                sh("ip", "-n", self.node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                   "netns", self.ext)
                sh("ip", "-n", self.node, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
                sh("ip", "-n", self.ext, "addr", "add", f"{EXT_IP}/24", "dev", "eth0")
                sh("ip", "-n", self.node, "addr", "add", f"{NODE_IP6}/64", "dev", "eth0", "nodad")
                sh("ip", "-n", self.ext, "addr", "add", f"{EXT_IP6}/64", "dev", "eth0", "nodad")
                for ns in (self.node, self.ext):
                    sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", self.ext, "link", "set", "lo", "up")
            subprocess.run([KUBEWEFT, "install-cni", "--bin-dir", str(self.bin_dir), "--conf-dir",
                            str(self.conf_dir), "--socket", str(self.socket), "--cni-version", "1.1.0"],
                           check=True, timeout=30, capture_output=True)
            self.start_agent()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop_agent()
        for ns in [*self.pods, self.ext, self.node]:
            if ns and lab_netns.exists(ns):
                subprocess.run(["ip", "netns", "del", ns], timeout=20, check=False)

    def start_agent(self, *extra: str) -> None:
        with open(self.tmp / "agent.log", "a") as log:
            self.agent = subprocess.Popen(
                [*self.agent_prefix, KUBEWEFT, "agent", "--test-pod-cidr", self.pod_cidr, "--node-name", "scratch",
                 "--socket", str(self.socket), "--state-dir", str(self.socket.parent),
                 "--bridge", self.bridge, *self.agent_args, *extra],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
                preexec_fn=lab_netns.preexec(self.node))  # noqa: PLW1509 - main thread only
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.agent.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent did not come up:\n{self.agent_log()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect(str(self.socket))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop_agent(self, sig: int = signal.SIGTERM) -> int | None:
        if self.agent is None:
            return None
        if self.agent.poll() is None:
            self.agent.send_signal(sig)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(5)
        rc, self.agent = self.agent.returncode, None
        return rc

    def agent_log(self) -> str:
        return (self.tmp / "agent.log").read_text()

    # -- pods
    def new_pod(self) -> str:
        name = f"{self.tag}-p{next(self._pods)}"
        sh("ip", "netns", "add", name)
        self.pods.append(name)
        return name

    def conf(self, version: str = "1.1.0", **extra) -> dict:
        return {"cniVersion": version, "name": "kubeweft", "type": "kubeweft", "socket": str(self.socket),
                "dataDir": str(self.data_dir), "bridge": self.bridge, **extra}

    def cni(self, command: str, cid: str = "", pod: str | None = None, ifname: str = "eth0",
            conf: dict | bytes | None = None, args: str = "", env: dict | None = None,
            drop: tuple = ()) -> tuple[int, dict | None, str]:
        """Run the installed executable in the node netns, as a runtime does: (rc, stdout JSON, stderr)."""
        full = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid,
                "CNI_NETNS": str(lab_netns.path(pod)) if pod else "", "CNI_IFNAME": ifname,
                "CNI_PATH": f"{self.bin_dir}:{REFERENCE}", "CNI_ARGS": args, "PATH": os.environ["PATH"],
                **(env or {})}
        full = {k: v for k, v in full.items() if v and k not in drop}
        data = conf if isinstance(conf, bytes) else json.dumps(conf or self.conf()).encode()
        proc = subprocess.run([str(self.bin_dir / "kubeweft")], input=data, env=full, capture_output=True,
                              timeout=30, preexec_fn=lab_netns.preexec(self.node), check=False)
        out = proc.stdout.decode()
        return proc.returncode, (json.loads(out) if out.strip() else None), proc.stderr.decode()

    def add(self, pod: str, cid: str | None = None, version: str = "1.1.0", **extra) -> dict:
        rc, out, err = self.cni("ADD", cid or pod, pod, conf=self.conf(version, **extra))
        assert rc == 0, f"ADD failed: {out} {err}\n{self.agent_log()[-3000:]}"
        return out

    # -- observation
    def reserved(self) -> dict[str, str]:
        """address -> container id, straight from the IPAM store's files (both families)."""
        out = {}
        for f in self.data_dir.iterdir() if self.data_dir.exists() else ():
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(f.name)
                out[f.name] = f.read_text().split("\n")[0]
        return out

    def host_veths(self) -> list[str]:
        links = json.loads(sh("ip", "-j", "-n", self.node, "link", "show", "master", self.bridge,
                              check=False) or "[]")
        return sorted(link["ifname"] for link in links)

    def pod_addrs(self, pod: str, ifname: str = "eth0", family: str = "4") -> list[str]:
        """The interface's addresses: IPv4 ("4"), or global IPv6 ("6"), or both ("all")."""
        flags = () if family == "all" else (f"-{family}",)
        out = json.loads(sh("ip", "-j", "-n", pod, *flags, "addr", "show", "dev", ifname, "scope", "global",
                            check=False) or "[]")
        return [f"{a['local']}/{a['prefixlen']}" for link in out for a in link.get("addr_info", []) if "local" in a]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with ScratchNode(tmp_path_factory.mktemp("h6a-node"), ext=True) as n:
        shutil.copy(REFERENCE / "portmap", n.bin_dir / "portmap")
        yield n


@pytest.fixture(scope="module", params=list(RANGES))
def fam_node(request, tmp_path_factory):
    """A node with the pod ranges of one IP family setup (ipv4, ipv6, dual); .ranges holds them."""
    ranges = RANGES[request.param]
    with ScratchNode(tmp_path_factory.mktemp(f"h6a-{request.param}"), pod_cidr=",".join(ranges),
                     bridge="kwv") as n:
        n.ranges = ranges
        yield n


@pytest.fixture
def small_node(tmp_path):
    """Its own agent with a /29: 5 addresses to hand out (the gateway takes one)."""
    with ScratchNode(tmp_path, pod_cidr="10.251.0.0/29", bridge="kws") as n:
        yield n


# --- VERSION, result schemas --------------------------------------------------------------------

def test_version_is_answered_by_the_shim_itself(node):
    rc, out, _ = node.cni("VERSION", conf=b'{"cniVersion": "0.4.0"}', env={"CNI_NETNS": ""})
    assert rc == 0 and out == {"cniVersion": "0.4.0",
                               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_result_schema_per_version_and_del(fam_node, version):
    node = fam_node
    pod = node.new_pod()
    res = node.add(pod, version=version)
    assert res["cniVersion"] == version
    bridge, host, inner = res["interfaces"]
    assert bridge["name"] == "kwv" and host["name"].startswith("kw") and len(host["name"]) <= 15
    assert inner["name"] == "eth0" and inner["sandbox"] == str(lab_netns.path(pod))
    assert ("mtu" in inner) == (version == "1.1.0")
    # an address of every range, in the ranges' order, each with its family's gateway
    assert [ipaddress.ip_interface(ip["address"]).network for ip in res["ips"]] == \
        [ipaddress.ip_network(r) for r in node.ranges]
    for ip, cidr in zip(res["ips"], node.ranges, strict=True):
        assert ip["interface"] == 2 and ip["gateway"] == gateway_of(cidr)
        assert ("version" in ip) == version.startswith("0."), ip
        if version.startswith("0."):
            assert ip["version"] == ("6" if ":" in cidr else "4")
    assert res["routes"] == [{"dst": default_dst(r), "gw": gateway_of(r)} for r in node.ranges]
    assert res["dns"] == {}
    # the live state is what the result says
    assert sorted(node.pod_addrs(pod, family="all")) == sorted(ip["address"] for ip in res["ips"])
    link = json.loads(sh("ip", "-j", "-n", pod, "link", "show", "eth0"))[0]
    assert link["address"] == inner["mac"] and link["mtu"] == 1450
    for cidr in node.ranges:
        six = ":" in cidr
        assert f"default via {gateway_of(cidr)} dev eth0" in sh("ip", "-6" if six else "-4", "-n", pod, "route")
        # usable the moment ADD returns: no tentative address, the gateway answers at once
        sh("ping", "-6" if six else "-4", "-c1", "-W2", gateway_of(cidr), netns=pod)
    if any(":" in r for r in node.ranges):       # the link-local address too (an IPv4 pod's is left alone)
        assert "tentative" not in sh("ip", "-n", pod, "-6", "addr", "show", "dev", "eth0")
    assert host["name"] in node.host_veths()
    for ip in res["ips"]:
        assert node.reserved()[ip["address"].split("/")[0]] == pod
    rc, out, err = node.cni("DEL", pod, pod, conf=node.conf(version, prevResult=res))
    assert (rc, out) == (0, None), err
    # DEL frees every address of the attachment, in every family
    assert host["name"] not in node.host_veths() and pod not in node.reserved().values()
    assert node.pod_addrs(pod, family="all") == []


def test_add_honours_mac_ips_and_k8s_args(fam_node):
    node = fam_node
    wanted = [str(ipaddress.ip_network(r).network_address + 99) for r in node.ranges]
    pod = node.new_pod()
    rc, res, err = node.cni("ADD", "capab", pod, args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;"
                            "K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=capab;UNKNOWN_KEY=x",
                            conf=node.conf(runtimeConfig={"mac": "0a:58:0a:fa:01:63", "ips": wanted}))
    assert rc == 0, (res, err)
    assert res["interfaces"][2]["mac"] == "0a:58:0a:fa:01:63"
    got = [ip["address"] for ip in res["ips"]]
    assert got == [f"{w}/{ipaddress.ip_network(r).prefixlen}" for w, r in zip(wanted, node.ranges, strict=True)]
    assert sorted(node.pod_addrs(pod, family="all")) == sorted(got)
    # the same addresses for someone else: taken, and nothing of it stays reserved
    other = node.new_pod()
    rc, out, _ = node.cni("ADD", "capab2", other, conf=node.conf(runtimeConfig={"ips": wanted[-1:]}))
    assert rc != 0 and out["code"] == 103
    assert "capab2" not in node.reserved().values()
    # the host-local form of CNI_ARGS: IP=<one per family>, comma-separated
    rc, res2, err = node.cni("ADD", "byargs", other, args="IP=" + ",".join(
        str(ipaddress.ip_address(w) + 1) for w in wanted))
    assert rc == 0, (res2, err)
    assert [ipaddress.ip_interface(ip["address"]).ip for ip in res2["ips"]] == \
        [ipaddress.ip_address(w) + 1 for w in wanted]
    assert node.cni("DEL", "capab", pod)[0] == 0
    assert node.cni("DEL", "byargs", other)[0] == 0


def test_an_mtu_below_1280_is_refused_with_an_ipv6_range(fam_node):
    pod = fam_node.new_pod()
    rc, out, _ = fam_node.cni("ADD", "smallmtu", pod, conf=fam_node.conf(mtu=1200))
    if any(":" in r for r in fam_node.ranges):
        assert rc != 0 and out["code"] == 7 and "1280" in out["details"], out
        assert "smallmtu" not in fam_node.reserved().values() and fam_node.pod_addrs(pod, family="all") == []
    else:
        assert rc == 0 and out["interfaces"][2]["mtu"] == 1200, out
    assert fam_node.cni("DEL", "smallmtu", pod)[0] == 0


def test_add_fails_if_the_interface_exists_and_keeps_the_first(node):
    pod = node.new_pod()
    first = node.add(pod, cid="owner")
    rc, out, _ = node.cni("ADD", "intruder", pod)
    assert rc != 0 and out["code"] == 101 and "exists" in out["msg"]
    # nothing of the first attachment was rolled back, and the intruder holds nothing
    assert node.pod_addrs(pod) == [first["ips"][0]["address"]]
    assert "intruder" not in node.reserved().values()
    assert first["interfaces"][1]["name"] in node.host_veths()
    assert node.cni("DEL", "intruder", pod)[0] == 0
    assert node.pod_addrs(pod) == [first["ips"][0]["address"]]     # DEL of another id leaves it
    assert node.cni("DEL", "owner", pod)[0] == 0


def test_add_into_a_missing_netns_rolls_back(node):
    rc, out, _ = node.cni("ADD", "ghost", None, env={"CNI_NETNS": "/run/netns/h6a-does-not-exist"})
    assert rc != 0 and out["code"] == 3
    assert "ghost" not in node.reserved().values()


# --- error codes --------------------------------------------------------------------------------

@pytest.mark.parametrize("case,code", [
    ("no-command", 4), ("no-containerid", 4), ("no-ifname", 4), ("no-path", 4), ("bad-ifname", 4),
    ("unknown-command", 4), ("bad-json", 6), ("no-version", 1), ("old-version", 1),
    ("no-name", 7), ("bad-mtu", 7), ("check-0.3.1", 1), ("status-1.0.0", 1), ("bad-mac", 7),
    ("delegated-ipam", 2), ("unusable-data-dir", 5),
])
def test_error_codes(node, case, code, tmp_path):
    pod = node.new_pod()
    kw: dict = {}
    if case.startswith("no-") and case[3:] in ("command", "containerid", "ifname", "path"):
        kw["drop"] = ({"command": "CNI_COMMAND", "containerid": "CNI_CONTAINERID", "ifname": "CNI_IFNAME",
                       "path": "CNI_PATH"}[case[3:]],)
    command = "ADD"
    conf = node.conf()
    if case == "bad-ifname":
        kw["ifname"] = "this-is-too-long-for-linux"
    elif case == "unknown-command":
        command = "FROB"
    elif case == "bad-json":
        conf = b'{"cniVersion": "1.0.0", '
    elif case == "no-version":
        conf.pop("cniVersion")
    elif case == "old-version":
        conf["cniVersion"] = "0.2.0"
    elif case == "no-name":
        conf.pop("name")
    elif case == "bad-mtu":
        conf["mtu"] = 10
    elif case == "check-0.3.1":
        command, conf["cniVersion"] = "CHECK", "0.3.1"
    elif case == "status-1.0.0":
        command, conf["cniVersion"] = "STATUS", "1.0.0"
    elif case == "bad-mac":
        conf["runtimeConfig"] = {"mac": "not-a-mac"}
    elif case == "delegated-ipam":
        conf["ipam"] = {"type": "host-local", "subnet": "10.9.0.0/24"}
    elif case == "unusable-data-dir":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        conf["dataDir"] = str(blocker / "ipam")
    rc, out, err = node.cni(command, "errs", pod, conf=conf, **kw)
    assert not err.lstrip().startswith("{")            # stdout carries the error, stderr only logs
    assert rc != 0
    assert out["code"] == code, out
    if code == 2:
        assert "ipam" in out["details"] and "host-local" in out["details"]   # the key and its value
    assert out["msg"] and out["cniVersion"] in ("0.2.0", "0.3.1", "1.0.0", "1.1.0")
    assert "errs" not in node.reserved().values()
    assert node.pod_addrs(pod) == []


@pytest.mark.parametrize("family", ["ipv4", "dual"])
def test_agent_down_add_is_11_status_is_50_del_cleans_up_in_process(tmp_path, family):
    ranges = {"ipv4": "10.252.0.0/24", "dual": "10.252.0.0/24,fd00:252::/64"}[family]
    with ScratchNode(tmp_path, pod_cidr=ranges, bridge="kwd") as n:
        pod = n.new_pod()
        res = n.add(pod, cid="survivor", runtimeConfig={"portMappings": [
            {"hostPort": 18083, "containerPort": 8083, "protocol": "tcp"}]})
        addrs = [ip["address"].split("/")[0] for ip in res["ips"]]
        assert len(addrs) == len(ranges.split(","))
        assert n.stop_agent() == 0                 # SIGTERM: a clean exit
        assert not n.socket.exists()
        rc, out, err = n.cni("ADD", "late", n.new_pod())
        assert rc != 0 and out["code"] == 11 and "agent" in out["details"]
        assert err and not err.lstrip().startswith("{")       # logs go to stderr, not stdout
        rc, out, _ = n.cni("CHECK", "survivor", pod, conf=n.conf(prevResult=res))
        assert rc != 0 and out["code"] == 11
        rc, out, _ = n.cni("STATUS")
        assert rc != 0 and out["code"] == 50
        # DEL with the agent down: the shim does it in-process with the same datapath and IPAM,
        # and frees every address and every family's hostPort
        rc, out, err = n.cni("DEL", "survivor", pod)
        assert (rc, out) == (0, None), err
        assert "in-process" in err
        assert n.host_veths() == [] and n.pod_addrs(pod, family="all") == [] and n.reserved() == {}
        assert "18083" not in sh("nft", "list", "ruleset", netns=n.node)


# --- DEL in every odd state ---------------------------------------------------------------------

def test_del_unknown_container_missing_netns_and_twice(node):
    assert node.cni("DEL", "never-added", node.new_pod())[0] == 0
    assert node.cni("DEL", "never-added", None)[0] == 0                     # no CNI_NETNS at all
    pod = node.new_pod()
    res = node.add(pod, cid="gone")
    sh("ip", "netns", "del", pod)                                          # the sandbox vanished
    rc, out, err = node.cni("DEL", "gone", None, env={"CNI_NETNS": str(lab_netns.path(pod))})
    assert (rc, out) == (0, None), err
    assert res["interfaces"][1]["name"] not in node.host_veths()
    assert "gone" not in node.reserved().values()
    assert node.cni("DEL", "gone", None, env={"CNI_NETNS": str(lab_netns.path(pod))})[0] == 0


def test_del_when_the_pod_interface_is_already_gone(node):
    pod = node.new_pod()
    res = node.add(pod, cid="half")
    sh("ip", "-n", pod, "link", "del", "eth0")                             # takes the host end too
    assert node.cni("DEL", "half", pod)[0] == 0
    assert "half" not in node.reserved().values()
    assert res["interfaces"][1]["name"] not in node.host_veths()


# --- CHECK, STATUS, GC --------------------------------------------------------------------------

def test_check_compares_the_live_state_with_prev_result(fam_node):
    node = fam_node
    pod = node.new_pod()
    res = node.add(pod, cid="chk", version="1.0.0")
    conf = node.conf("1.0.0", prevResult=res)
    assert node.cni("CHECK", "chk", pod, conf=conf)[:2] == (0, None)
    rc, out, _ = node.cni("CHECK", "chk", pod, conf=node.conf("1.0.0"))
    assert rc != 0 and out["code"] == 7                                     # no prevResult
    # each family's route and address is checked: losing the last range's default route fails
    last = node.ranges[-1]
    six = "-6" if ":" in last else "-4"
    sh("ip", six, "-n", pod, "route", "del", "default")
    rc, out, _ = node.cni("CHECK", "chk", pod, conf=conf)
    assert rc != 0 and out["code"] == 102 and f"route {default_dst(last)}" in out["details"], out
    sh("ip", six, "-n", pod, "route", "add", "default", "via", gateway_of(last), "dev", "eth0")
    assert node.cni("CHECK", "chk", pod, conf=conf)[:2] == (0, None)
    sh("ip", six, "-n", pod, "addr", "flush", "dev", "eth0", "scope", "global")
    rc, out, _ = node.cni("CHECK", "chk", pod, conf=conf)
    assert rc != 0 and out["code"] == 102 and "address" in out["details"]
    assert res["ips"][-1]["address"] in out["details"]
    sh("ip", "-n", pod, "link", "del", "eth0")
    rc, out, _ = node.cni("CHECK", "chk", pod, conf=conf)
    assert rc != 0 and out["code"] == 3
    assert node.cni("DEL", "chk", pod)[0] == 0
    rc, out, _ = node.cni("CHECK", "chk", pod, conf=conf)
    assert rc != 0 and out["code"] == 3                                     # no reservation now


def test_pods_reach_each_other_in_every_family(fam_node):
    """Two pods on the bridge: ping and a TCP connection to each address of the other, which
    sees the client's own address of that family."""
    node = fam_node
    a, b = node.new_pod(), node.new_pod()
    ra, rb = node.add(a, cid="talk-a"), node.add(b, cid="talk-b")
    try:
        for ip_a, ip_b in zip(ra["ips"], rb["ips"], strict=True):
            src, dst = (ip["address"].split("/")[0] for ip in (ip_a, ip_b))
            sh("ping", "-c1", "-W2", dst, netns=a)
            server = _serve_tcp_in(b, 8085, host="::")
            try:
                assert _connect_from(a, dst, 8085) == f"hello {src}"
            finally:
                server.kill()
                server.wait(5)
    finally:
        assert node.cni("DEL", "talk-a", a)[0] == 0 and node.cni("DEL", "talk-b", b)[0] == 0


def test_status_and_exhaustion(small_node):
    n = small_node
    assert n.cni("STATUS")[:2] == (0, None)
    pods = [n.new_pod() for _ in range(6)]
    for i, pod in enumerate(pods[:5]):
        n.add(pod, cid=f"full{i}")
    rc, out, _ = n.cni("STATUS")
    assert rc != 0 and out["code"] == 51
    rc, out, _ = n.cni("ADD", "full5", pods[5])
    assert rc != 0 and out["code"] == 103 and "no IP addresses available" in out["msg"]
    assert n.pod_addrs(pods[5]) == [] and len(n.host_veths()) == 5        # rolled back
    assert n.cni("DEL", "full0", pods[0])[0] == 0
    assert n.cni("STATUS")[:2] == (0, None)


def test_gc_frees_what_is_not_valid(small_node):
    n = small_node
    pods = [n.new_pod() for _ in range(3)]
    results = [n.add(pod, cid=f"gc{i}") for i, pod in enumerate(pods)]
    valid = [{"containerID": "gc0", "ifname": "eth0"}]
    rc, out, err = n.cni("GC", conf=n.conf(**{"cni.dev/valid-attachments": valid}))
    assert (rc, out) == (0, None), err
    assert sorted(n.reserved().values()) == ["gc0"]
    assert n.host_veths() == [results[0]["interfaces"][1]["name"]]
    # the older key works too; null means "none valid"
    rc, _, _ = n.cni("GC", conf=n.conf(**{"cni.dev/attachments": None}))
    assert rc == 0 and n.reserved() == {} and n.host_veths() == []
    rc, out, _ = n.cni("GC", conf=n.conf())
    assert rc != 0 and out["code"] == 7                      # no list at all: refuse, free nothing


# --- the agent ----------------------------------------------------------------------------------

def test_agent_socket_is_root_only_and_a_stale_one_is_replaced(tmp_path):
    sock = tmp_path / "run" / "agent.sock"
    sock.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()                                          # a socket file nobody listens on
    with ScratchNode(tmp_path, pod_cidr="10.253.0.0/24", bridge="kwa") as n:
        assert (n.socket.stat().st_mode & 0o777) == 0o600
        assert n.cni("STATUS")[0] == 0
        # a second agent on the same socket refuses to start
        second = subprocess.run([KUBEWEFT, "agent", "--test-pod-cidr", "10.253.0.0/24", "--socket",
                                 str(n.socket), "--state-dir", str(tmp_path / "other")], capture_output=True, text=True,
                                timeout=30, preexec_fn=lab_netns.preexec(n.node), check=False)
        assert second.returncode != 0 and "another agent" in second.stderr
        assert n.cni("STATUS")[0] == 0


def test_agent_restart_reconciles_store_with_veths(tmp_path):
    with ScratchNode(tmp_path, pod_cidr="10.254.0.0/24", bridge="kwr") as n:
        kept, lost = n.new_pod(), n.new_pod()
        a = n.add(kept, cid="kept")
        b = n.add(lost, cid="lost")
        n.stop_agent(signal.SIGKILL)
        # while it is down, one pod's veth disappears (as if the agent died half-way through ADD)
        sh("ip", "-n", n.node, "link", "del", b["interfaces"][1]["name"])
        n.start_agent()
        assert sorted(n.reserved().values()) == ["kept"]
        assert n.host_veths() == [a["interfaces"][1]["name"]]
        sh("ping", "-c1", "-W2", "10.254.0.1", netns=kept)


# --- chaining and the runtime -------------------------------------------------------------------

def _serve_tcp_in(netns: str, port: int, host: str = "0.0.0.0") -> subprocess.Popen:
    """One connection answered with "hello <client address>"; host "::" takes both families
    (an IPv4 client shows as itself, not as ::ffff:a.b.c.d)."""
    code = ("import socket,sys\n"
            f"s=socket.socket(socket.AF_INET6 if ':' in {host!r} else socket.AF_INET)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "if s.family == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
            f"s.bind(({host!r}, {port})); s.listen(); print('ready', flush=True)\n"
            "s.settimeout(20)\n"
            "c, a = s.accept(); c.sendall(('hello ' + a[0].removeprefix('::ffff:')).encode()); c.close()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         preexec_fn=lab_netns.preexec(netns))  # noqa: PLW1509 - main thread only
    assert p.stdout.readline().strip() == "ready"
    return p


def _connect_from(netns: str, host: str, port: int) -> str:
    out: dict = {}

    def go() -> None:
        with lab_netns.entered(netns):
            s = socket.create_connection((host, port), timeout=5)
        try:
            out["data"] = s.recv(100).decode()
        finally:
            s.close()
    t = threading.Thread(target=go)
    t.start()
    t.join(15)
    return out.get("data", "")


def test_chained_with_reference_portmap_through_cniexec(node):
    """The conflist kubeweft + portmap (cniVersion 1.0.0: Debian's portmap speaks up to 1.0.0), run by
    the lab's libcni-like runtime: a hostPort on the node is reachable from the external host."""
    from kubeweft.lab import cniexec

    conflist = {"cniVersion": "1.0.0", "name": "kwchain", "plugins": [
        {"type": "kubeweft", "socket": str(node.socket), "dataDir": str(node.data_dir), "bridge": "kw0",
         "capabilities": {"portMappings": True, "mac": True, "ips": True, "bandwidth": True}},
        {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
    ]}
    net = cniexec.parse_network_config(json.dumps(conflist))
    runtime = cniexec.CniRuntime(node.bin_dir, node.tmp / "cniexec", timeout=30,
                                 preexec_fn=lab_netns.preexec(node.node))
    pod = node.new_pod()
    rt = cniexec.RuntimeConf(container_id="chained", netns=str(lab_netns.path(pod)),
                             args=cniexec.kubernetes_args("default", "web-0", "chained"),
                             capability_args={"portMappings": [
                                 {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]})
    server = None
    try:
        result = runtime.add(net, rt)
        pod_ip = result["ips"][0]["address"].split("/")[0]
        assert result["cniVersion"] == "1.0.0" and result["interfaces"][2]["sandbox"] == rt.netns
        # (no CHECK here: Debian's portmap 1.1.1 fails its own CHECK on an IPv4-only pod,
        # "could not check ipv6 dnat"; kubeweft's CHECK through cniexec is tested below)
        server = _serve_tcp_in(pod, 8080)
        answer = _connect_from(node.ext, NODE_IP, 18080)
        assert answer.startswith("hello "), answer             # through portmap's DNAT to the pod
        assert pod_ip in sh("nft", "list", "ruleset", netns=node.node) or \
            pod_ip in sh("iptables-save", netns=node.node, check=False)
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        runtime.delete(net, rt)
    assert "chained" not in node.reserved().values()
    assert node.pod_addrs(pod) == []


def test_chained_with_reference_tuning_and_bandwidth_through_cniexec(node):
    """kubeweft, then Debian's tuning (a sysctl and the MTU inside the pod) and bandwidth (a tbf
    qdisc on the host veth that kubeweft's result names): both read prevResult and act on the
    interfaces kubeweft made; DEL runs in reverse and leaves nothing."""
    from kubeweft.lab import cniexec

    for plugin in ("tuning", "bandwidth"):
        shutil.copy(REFERENCE / plugin, node.bin_dir / plugin)
    conflist = {"cniVersion": "1.0.0", "name": "kwtune", "plugins": [
        {"type": "kubeweft", "socket": str(node.socket), "dataDir": str(node.data_dir), "bridge": "kw0"},
        {"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ]}
    net = cniexec.parse_network_config(json.dumps(conflist))
    runtime = cniexec.CniRuntime(node.bin_dir, node.tmp / "cniexec-tune", timeout=30,
                                 preexec_fn=lab_netns.preexec(node.node))
    pod = node.new_pod()
    rt = cniexec.RuntimeConf(container_id="tuned", netns=str(lab_netns.path(pod)),
                             capability_args={"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 65536,
                                                            "egressRate": 8_000_000, "egressBurst": 65536}})
    try:
        result = runtime.add(net, rt)
        host_veth = result["interfaces"][1]["name"]
        assert sh("ip", "netns", "exec", pod, "sysctl", "-n", "net.ipv4.conf.eth0.accept_local").strip() == "1"
        assert json.loads(sh("ip", "-j", "-n", pod, "link", "show", "eth0"))[0]["mtu"] == 1400
        qdiscs = sh("tc", "qdisc", "show", "dev", host_veth, netns=node.node)
        assert "tbf" in qdiscs, qdiscs
    finally:
        runtime.delete(net, rt)
    assert "tuned" not in node.reserved().values()
    assert node.pod_addrs(pod) == []


def test_installed_conflist_through_cniexec_add_check_status_gc_del(node):
    """The conflist install-cni wrote (1.1.0), as the lab kubelet will use it."""
    from kubeweft.lab import cniexec

    net = cniexec.load_network_config(node.conf_dir)
    assert net is not None and net.cni_version == "1.1.0" and net.plugins[0]["type"] == "kubeweft"
    runtime = cniexec.CniRuntime(node.bin_dir, node.tmp / "cniexec2", timeout=30,
                                 preexec_fn=lab_netns.preexec(node.node))
    assert runtime.version("kubeweft", "1.1.0")["supportedVersions"][-1] == "1.1.0"
    pods = [node.new_pod() for _ in range(2)]
    rts = [cniexec.RuntimeConf(container_id=f"rt{i}", netns=str(lab_netns.path(p))) for i, p in enumerate(pods)]
    for rt in rts:
        assert runtime.add(net, rt)["cniVersion"] == "1.1.0"
        runtime.check(net, rt)
    runtime.status(net)
    runtime.gc(net, [("rt0", "eth0")])                        # rt1 is stale
    assert "rt1" not in node.reserved().values() and "rt0" in node.reserved().values()
    assert node.pod_addrs(pods[1]) == []
    runtime.delete(net, rts[0])
    assert "rt0" not in node.reserved().values()
    with contextlib.suppress(Exception):
        runtime.delete(net, rts[1])


@pytest.mark.parametrize("family", list(RANGES))
def test_hostports_and_masquerade_in_the_agents_nftables(tmp_path, family):
    """portMappings handled by kubeweft itself (no portmap plugin): the external host reaches the
    pod on node:hostPort in each family the pod has; and pod traffic leaving the cluster CIDR
    leaves with the node address of its family."""
    ranges = {"10.250.1.0/24": "10.248.1.0/24", "fd00:250:1::/64": "fd00:248:1::/64"}
    pod_cidrs = [ranges[r] for r in RANGES[family]]
    with ScratchNode(tmp_path, pod_cidr=",".join(pod_cidrs), bridge="kwh", ext=True,
                     agent_args=("--cluster-cidr", "10.248.0.0/16,fd00:248::/32")) as n:
        pod = n.new_pod()
        res = n.add(pod, cid="hp", runtimeConfig={"portMappings": [
            {"hostPort": 18081, "containerPort": 8081, "protocol": "tcp"}]})
        pod_ips = [ip["address"].split("/")[0] for ip in res["ips"]]
        tables = {"ip": NODE_IP, "ip6": NODE_IP6}
        for pod_ip in pod_ips:
            table, node_ip = ("ip6", NODE_IP6) if ":" in pod_ip else ("ip", NODE_IP)
            ext_ip = EXT_IP6 if ":" in pod_ip else EXT_IP
            server = _serve_tcp_in(pod, 8081, host="::")
            try:
                assert _connect_from(n.ext, node_ip, 18081) == f"hello {ext_ip}"
            finally:
                server.kill()
                server.wait(5)
            outside = _serve_tcp_in(n.ext, 18082, host="::")
            try:
                # ext has no route to the pod CIDR: only a masqueraded connection gets an answer
                assert _connect_from(pod, ext_ip, 18082) == f"hello {node_ip}"
            finally:
                outside.kill()
                outside.wait(5)
            assert pod_ip in sh("nft", "list", "table", table, "kubeweft-cni", netns=n.node)
            tables.pop(table)
        # a family the pod has no address of: no hostPort there (its table holds no element)
        for table in tables:
            listing = sh("nft", "list", "map", table, "kubeweft-cni", "hostports", netns=n.node, check=False)
            assert "18081" not in listing
        assert n.cni("DEL", "hp", pod)[0] == 0
        for pod_ip in pod_ips:
            table = "ip6" if ":" in pod_ip else "ip"
            assert pod_ip not in sh("nft", "list", "table", table, "kubeweft-cni", netns=n.node)


def _grpc_library_call(node: ScratchNode, command: str, cid: str, pod: str):
    """The call the shim makes, through the grpc library and the generated stubs instead of the
    shim's own HTTP/2 client: the reference the shim's answers are held against."""
    import grpc
    from kubeweft.cni.shim import METHODS
    from kubeweft.proto import kubeweft_pb2, kubeweft_pb2_grpc

    req = kubeweft_pb2.CniRequest(command=command, container_id=cid, netns=str(lab_netns.path(pod)),
                                  ifname="eth0", path=f"{node.bin_dir}:{REFERENCE}",
                                  config=json.dumps(node.conf()).encode())
    with grpc.insecure_channel(f"unix:{node.socket}") as channel:
        return getattr(kubeweft_pb2_grpc.CniStub(channel), METHODS[command])(req, timeout=20)


def test_the_grpc_library_gets_the_answers_the_shim_gets(node):
    pod = node.new_pod()
    resp = _grpc_library_call(node, "ADD", "viagrpc", pod)
    assert not resp.HasField("error"), resp.error
    res = json.loads(resp.result)
    assert node.pod_addrs(pod) == [res["ips"][0]["address"]]
    # the same refusal (eth0 is taken in that netns) through both clients
    refused = _grpc_library_call(node, "ADD", "viagrpc2", pod)
    rc, out, _ = node.cni("ADD", "viagrpc2", pod)
    assert refused.error.code == out["code"] == 101 and rc != 0
    assert (refused.error.msg, refused.error.details) == (out["msg"], out.get("details", ""))
    resp = _grpc_library_call(node, "DEL", "viagrpc", pod)
    assert not resp.HasField("error") and resp.result == b""
    assert "viagrpc" not in node.reserved().values()


def test_bandwidth_capability_shapes_both_directions(node):
    pod = node.new_pod()
    res = node.add(pod, cid="bw", runtimeConfig={"bandwidth": {
        "ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 4_000_000, "egressBurst": 40_000}})
    host = res["interfaces"][1]["name"]
    assert "tbf" in sh("tc", "qdisc", "show", "dev", host, netns=node.node)
    assert "tbf" in sh("tc", "qdisc", "show", "dev", "eth0", netns=pod)
    assert node.cni("DEL", "bw", pod)[0] == 0


# --- the lab: `kubeweft lab up --cni kubeweft` (deploy/lab's DaemonSet, the lab kubelet) -------------

def test_lab_with_kubeweft_cni(lab_factory):
    lab = lab_factory(nodes=2, cni="kubeweft")
    cfg = lab.cfg
    node1 = cfg.node_name(1)
    conf = json.loads((cfg.cni_conf_dir(node1) / "10-kubeweft.conflist").read_text())
    assert conf["cniVersion"] == "1.1.0" and conf["plugins"][0]["type"] == "kubeweft"
    # Ready means "a CNI config exists": the agent may still be starting
    wait_for("the agent's socket", cfg.agent_socket(node1).exists, 60, interval=0.5)
    assert (cfg.agent_socket(node1).stat().st_mode & 0o777) == 0o600
    pods = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: kw-{i}, namespace: default}}
spec:
  nodeName: node{i}
  containers: [{{name: web, image: x, ports: [{{containerPort: 8080, hostPort: 1900{i}}}]}}]
""" for i in (1, 2))
    lab.kubectl("apply", "-f", "-", input=pods)

    def running() -> dict | None:
        st = {p["name"]: p for p in lab.status()["pods"] if p["name"].startswith("kw-")}
        return st if len(st) == 2 and all(p.get("ip") for p in st.values()) else None
    st = wait_for("both pods running with an address", running, 90, interval=0.5)
    ip1, ip2 = st["kw-1"]["ip"], st["kw-2"]["ip"]
    assert ip1.startswith("10.244.") and ip1 != ip2

    def probe(*args: str) -> dict:
        return json.loads(lab.cli("probe", "--json", "--timeout", "3", *args, check=False).stdout.splitlines()[0])
    # cross-node over the agent's VXLAN overlay, with the pod's own source address
    def cross() -> dict | None:
        p = probe("--from", "default/kw-1", f"{ip2}:8080")
        return p if p["outcome"] == "connected" else None
    r = wait_for("kw-1 -> kw-2 across nodes", cross, 30, interval=1)
    assert r["pod"] == "default/kw-2" and r["client"].split(":")[0] == ip1, r
    # hostPort on node2 from the external host, through the agent's nftables
    r = probe("--from", "external", f"{cfg.node_ip(2)}:19002")
    assert r["outcome"] == "connected" and r["pod"] == "default/kw-2", r
    # deleting the pod runs DEL: its address is free again in node2's store
    data2 = cfg.node_host_dir(cfg.node_name(2)) / "var/lib/kubeweft/ipam"     # the DaemonSet's --data-dir
    assert (data2 / ip2).exists()
    lab.kubectl("delete", "pod", "kw-2", "--wait=false")
    wait_for("the deleted pod's address freed", lambda: not (data2 / ip2).exists(), 60, interval=0.5)
    lab.kubectl("delete", "pod", "kw-1", "--wait=false")


@pytest.mark.parametrize("size", [30_000, 70_000])
def test_large_configs_cross_the_wire(node, size):
    """30 kB: several HTTP/2 DATA frames from the shim's own client; 70 kB: beyond the default
    flow-control window, so the shim's client waits for the agent's WINDOW_UPDATEs."""
    pod = node.new_pod()
    rc, res, err = node.cni("ADD", f"big{size}", pod, conf=node.conf(padding="x" * size))
    assert rc == 0, err
    assert node.pod_addrs(pod) == [res["ips"][0]["address"]]
    assert node.cni("DEL", f"big{size}", pod, conf=node.conf(padding="x" * size))[0] == 0
