"""The lab's lifecycle: topology, up, down (also after kill -9), status, the exec verbs.

The first half needs no API server or kubelet: the topology and stand-in lab processes
(anything carrying KUBEWEFT_LAB_ID). The second half runs on real labs (`lab2`, `lab_factory`).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubeweft.lab import lifecycle, netns, topology
from kubeweft.lab.config import LabConfig

from .conftest import KUBEWEFT, _session_lab_names, unique_lab_name

pytestmark = pytest.mark.timeout(180)


def cli(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([KUBEWEFT, "lab", "--name", name, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def ip_addr(ns: str) -> str:
    return subprocess.run(["ip", "-n", ns, "-o", "addr"], capture_output=True, text=True,
                          timeout=10, check=True).stdout


def stable(text: str) -> str:
    """`ip -o addr` without the IPv6 link-local lines: on a lab just built their DAD state
    (tentative, then not) may change between two reads of one namespace."""
    return "".join(line for line in text.splitlines(keepends=True) if " fe80::" not in line)


def ping(ns: str, dst: str) -> subprocess.CompletedProcess:
    return netns.run(ns, ["ping", "-c", "1", "-W", "2", dst], capture_output=True, text=True,
                     timeout=10, check=False)


def lab_pids(name: str) -> list[int]:
    return lifecycle.find_processes(name, None)


def assert_gone(name: str) -> None:
    cfg = LabConfig(name=name)
    assert topology.list_netns(cfg.netns_prefix) == []
    assert not cfg.state_dir.exists()
    assert lab_pids(name) == []


@contextlib.contextmanager
def standin_lab(nodes: int = 2):
    """A lab without control plane: state.json and the topology, as `up` makes them."""
    name = unique_lab_name("h3")
    _session_lab_names.add(name)
    cfg = LabConfig(name=name, nodes=nodes)
    token = "standin" + name
    try:
        cfg.log_dir.mkdir(parents=True)
        lifecycle._write_json(cfg.state_file, lifecycle.plan_state(cfg, token))
        topology.build(cfg)
        yield cfg, token
    finally:
        lifecycle.down(name)


def spawn(cfg: LabConfig, token: str, code: str, inside: str | None = None) -> subprocess.Popen:
    return lifecycle._spawn(cfg, [sys.executable, "-c", code], "standin", token, inside=inside)


def ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


SLEEP = "import time; time.sleep(60)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


# --- without a control plane -------------------------------------------------------------------

def test_topology_addresses_routes_and_pings():
    with standin_lab() as (cfg, _):
        assert sorted(topology.list_netns(cfg.netns_prefix)) == sorted(topology.lab_netns(cfg))
        assert f"inet {cfg.control_plane_ip}/24" in ip_addr(cfg.underlay_netns)
        assert f"inet {cfg.external_gateway_ip}/24" in ip_addr(cfg.underlay_netns)
        assert f"inet {cfg.external_ip}/24" in ip_addr(cfg.external_netns)
        for i in (1, 2):
            ns = cfg.node_netns(cfg.node_name(i))
            assert f"eth0    inet {cfg.node_ip(i)}/24" in ip_addr(ns)
            route = subprocess.run(["ip", "-n", ns, "route", "show", "default"], capture_output=True,
                                   text=True, timeout=10, check=True).stdout
            assert f"default via {cfg.control_plane_ip} dev eth0" in route
            fwd = netns.run(ns, ["sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
            assert fwd == "1"
        n1, n2 = cfg.node_netns("node1"), cfg.node_netns("node2")
        assert ping(n1, cfg.node_ip(2)).returncode == 0
        assert ping(cfg.external_netns, cfg.node_ip(1)).returncode == 0
        assert ping(n2, cfg.external_ip).returncode == 0
        # the lab's "cloud route table": a podCIDR routed via its node in the underlay
        topology.sync_pod_cidr_routes(cfg, [("node2", "10.244.2.0/24", cfg.node_ip(2)),
                                            ("node3", None, None)])
        routes = subprocess.run(["ip", "-n", cfg.underlay_netns, "route"], capture_output=True,
                                text=True, timeout=10, check=True).stdout
        assert f"10.244.2.0/24 via {cfg.node_ip(2)} dev lan0" in routes
        # no link of the lab in the root netns (the guard checks that too, at the end)
        root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                                    timeout=10, check=True).stdout
        assert "veth-node" not in root_links and "lan0" not in root_links
    assert_gone(cfg.name)


def test_exec_verbs_run_in_the_right_netns():
    with standin_lab() as (cfg, _):
        # a pod netns as the kubelet would record it in pods.json
        pod_ns = cfg.pod_netns("default", "web", "uid-1")
        subprocess.run(["ip", "netns", "add", pod_ns], check=True, timeout=10)
        subprocess.run(["ip", "-n", pod_ns, "link", "set", "lo", "up"], check=True, timeout=10)
        (cfg.node_dir("node2")).mkdir(parents=True, exist_ok=True)
        (cfg.node_dir("node2") / "pods.json").write_text(json.dumps(
            {"uid-1": {"namespace": "default", "name": "web", "netns": pod_ns, "ip": None,
                       "containerID": "c1", "pid": 0}}))
        cases = [(("node-exec", "node2"), cfg.node_netns("node2")),
                 (("ext-exec",), cfg.external_netns),
                 (("exec", "default/web"), pod_ns),
                 (("exec", "web"), pod_ns)]
        for verb, ns in cases:
            out = cli(cfg.name, *verb, "--", "ip", "-o", "addr")
            assert out.returncode == 0, out.stderr
            assert stable(out.stdout) == stable(ip_addr(ns)), verb
        assert cli(cfg.name, "ext-exec", "--", "sh", "-c", "exit 7").returncode == 7
        assert cli(cfg.name, "node-exec", "node1", "--", "no-such-command-h3").returncode == 127
        missing = cli(cfg.name, "exec", "default/nope", "--", "true")
        assert missing.returncode == 1 and "default/nope" in missing.stderr
        assert cli(cfg.name, "node-exec", "node9", "--", "true").returncode == 1
    assert_gone(cfg.name)


def test_down_ends_every_lab_process_also_stubborn_and_killed_ones():
    other = None
    with contextlib.ExitStack() as stack, standin_lab() as (cfg, token):
        stack.callback(lambda: other and (other.kill(), other.wait(5)))
        procs = [spawn(cfg, token, SLEEP),                                # like the apiserver
                 spawn(cfg, token, SLEEP, inside=cfg.node_netns("node1")),  # like a kubelet
                 spawn(cfg, token, STUBBORN, inside=cfg.node_netns("node2"))]
        # another lab's process must survive our down
        other = subprocess.Popen([sys.executable, "-c", SLEEP], start_new_session=True,
                                 env=dict(os.environ, KUBEWEFT_LAB_ID=f"{cfg.name}zz:x"))
        deadline = time.monotonic() + 10
        while len(lab_pids(cfg.name)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(lab_pids(cfg.name)) == sorted(p.pid for p in procs)
        while not ignores_sigterm(procs[2].pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(procs[0].pid, signal.SIGKILL)       # kill -9 of one of them first
        procs[0].wait(5)
        removed = lifecycle.down(cfg.name)
        text = "\n".join(removed)
        assert f"SIGKILL: {procs[2].pid}" in text    # the stubborn one needed it
        for ns in topology.lab_netns(cfg):
            assert f"deleted netns {ns}" in text
        assert f"removed {cfg.state_dir}" in text
        for p in procs:
            assert p.wait(5) is not None
        assert other.poll() is None
        assert_gone(cfg.name)
        second = cli(cfg.name, "down")
        assert second.returncode == 0 and "nothing to remove" in second.stdout


def test_down_without_state_json_matches_the_lab_name():
    with standin_lab() as (cfg, token):
        proc = spawn(cfg, token, SLEEP, inside=cfg.node_netns("node1"))
        cfg.state_file.unlink()                      # token unknown now: match "<name>:"
        out = cli(cfg.name, "down")
        assert out.returncode == 0, out.stderr
        assert str(proc.pid) in out.stdout
        assert proc.wait(5) is not None
        assert_gone(cfg.name)


def test_up_refuses_an_existing_lab_and_leaves_it_alone():
    with standin_lab() as (cfg, _):
        out = cli(cfg.name, "up", "--timeout", "5")
        assert out.returncode == 1
        assert "already up" in out.stderr and "down" in out.stderr
        assert cfg.state_file.exists()
        assert sorted(topology.list_netns(cfg.netns_prefix)) == sorted(topology.lab_netns(cfg))


def test_failed_up_says_why_and_leaves_nothing():
    name = unique_lab_name("h3")
    _session_lab_names.add(name)
    try:
        out = cli(name, "up", "--timeout", "0.2")    # the API server cannot be ready this soon
        assert out.returncode == 1
        assert "lab up failed" in out.stderr and "removing lab" in out.stderr
        assert_gone(name)
    finally:
        lifecycle.down(name)


def test_bad_names_are_refused():
    out = cli("h3-bad", "up")
    assert out.returncode == 1 and "invalid lab name" in out.stderr
    assert not LabConfig(name="h3-bad").state_dir.exists()


def test_status_and_kubeconfig_of_a_lab_that_is_not_up():
    name = unique_lab_name("h3")
    assert cli(name, "status").returncode == 1
    out = cli(name, "kubeconfig")
    assert out.returncode == 1 and "not up" in out.stderr


# --- on real labs -------------------------------------------------------------------------------

def test_lab2_every_node_ready(lab2):
    nodes = json.loads(lab2.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["node1", "node2"]
    for n in nodes:
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
    assert lab2.cli("kubeconfig").stdout.strip() == str(lab2.kubeconfig)


def test_lab2_status_json_shape(lab2):
    doc = lab2.status()
    assert set(doc) == {"nodes", "pods"}
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2"]
    for i, n in enumerate(doc["nodes"], start=1):
        assert set(n) == {"name", "status", "address", "addresses", "podCIDR", "podCIDRs", "netns",
                          "cniConfDir", "cniBinDir", "agentSocket"}
        assert n["addresses"] == [f"{lab2.cfg.node_ip(i)}/24"] and n["podCIDRs"] == [n["podCIDR"]]
        assert n["status"] == "Ready"
        assert n["address"] == lab2.cfg.node_ip(i)
        assert n["netns"] == lab2.cfg.node_netns(n["name"]) and netns.exists(n["netns"])
        assert n["podCIDR"] and n["podCIDR"].startswith("10.244.")
        assert n["cniConfDir"] == str(lab2.cfg.cni_conf_dir(n["name"]))
    for p in doc["pods"]:
        assert set(p) == {"namespace", "name", "node", "netns", "ip", "ips"}
    table = lab2.cli("status").stdout
    assert "node1" in table and lab2.cfg.node_ip(2) in table


def test_lab2_underlay_and_external_connectivity(lab2):
    cfg = lab2.cfg
    assert ping(cfg.node_netns("node1"), cfg.node_ip(2)).returncode == 0
    assert ping(cfg.external_netns, cfg.node_ip(1)).returncode == 0
    assert ping(cfg.external_netns, cfg.node_ip(2)).returncode == 0
    routes = subprocess.run(["ip", "-n", cfg.underlay_netns, "route"], capture_output=True, text=True,
                            timeout=10, check=True).stdout
    for n in lab2.status()["nodes"]:
        assert f"{n['podCIDR']} via {n['address']}" in routes


def _wait_pod_running(lab, ns: str, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in lab.status()["pods"]:
            if (p["namespace"], p["name"]) == (ns, name) and p["ip"] and p["netns"]:
                return p
        time.sleep(0.5)
    raise AssertionError(f"pod {ns}/{name} not running after {timeout}s:\n"
                         + lab.kubectl("get", "pod", "-n", ns, name, "-o", "yaml", check=False).stdout)


def test_lab2_exec_verbs_and_external_to_pod(lab2):
    ns = f"h3-{os.getpid()}"
    lab2.kubectl("create", "namespace", ns)
    try:
        lab2.kubectl("run", "web", "-n", ns, "--image", "lab", "--overrides",
                     json.dumps({"spec": {"nodeName": "node2"}}))
        pod = _wait_pod_running(lab2, ns, "web")
        assert pod["node"] == "node2"
        for args, netns_name in ((("exec", f"{ns}/web"), pod["netns"]),
                                 (("node-exec", "node1"), lab2.cfg.node_netns("node1")),
                                 (("ext-exec",), lab2.cfg.external_netns)):
            out = lab2.cli(*args, "--", "ip", "-o", "addr")
            assert stable(out.stdout) == stable(ip_addr(netns_name)), args
        assert f"inet {pod['ip']}/" in ip_addr(pod["netns"])
        # pods are routed, not hidden: the external host reaches a pod on node2 through the
        # underlay's podCIDR route, and the pod on node2 reaches node1
        assert ping(lab2.cfg.external_netns, pod["ip"]).returncode == 0
        assert ping(pod["netns"], lab2.cfg.node_ip(1)).returncode == 0
    finally:
        lab2.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_down_after_kill9_of_apiserver_and_kubelet(lab_factory):
    """Also of kubeweft's agents: containers of the DaemonSet's pods, which the killed kubelet
    can no longer stop."""
    lab = lab_factory(nodes=2, cni="kubeweft", prefix="h3")
    state = json.loads(lab.cfg.state_file.read_text())
    pids = lab_pids(lab.name)
    assert state["apiserver"]["pid"] in pids
    agents = [lifecycle.find_agent(lab.name, state["token"], f"node{i}") for i in (1, 2)]
    assert all(a in pids for a in agents), (agents, pids)
    kubelets = [p for p in pids if b"kubeweft.lab.kubelet" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert sorted(kubelets) == sorted(state["processes"][f"kubelet-node{i}"] for i in (1, 2))
    os.kill(state["apiserver"]["pid"], signal.SIGKILL)
    os.kill(state["processes"]["kubelet-node1"], signal.SIGKILL)
    out = lab.cli("down")
    assert "deleted netns" in out.stdout
    assert_gone(lab.name)
    assert not any(lifecycle._alive(a) for a in agents)        # a zombie at most, if nobody reaped it
    again = lab.cli("down")
    assert again.returncode == 0 and "nothing to remove" in again.stdout
