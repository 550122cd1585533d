"""Smoke test of the policy controller on the shared kubeweft labs (`klab`: once per IP family,
over IPv4 on the ipv4 lab and over IPv6 on the ipv6 and dual labs), with real packets:
a policy isolates a pod and allows one peer on one port, a label change moves a peer in and
out, the node still reaches its pod, established connections survive a policy that would deny
them, and drops are counted (Prometheus) and logged (nflog -> the agent's log).

Plus, without a lab: every golden table of tests/unit/golden/policy loads into a real kernel.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from kubeweft.lab import install, netns
from kubeweft.lab.probe import CONNECTED, probe_once, read_pods

from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden" / "policy"
NS = "h11smoke"
SETTLE = 10.0


def test_golden_tables_load_into_the_kernel():
    from kubeweft.proxy.nftables import Nft

    name = f"h11-golden-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        nft = Nft(name)
        files = sorted(GOLDEN.glob("*.nft"))
        assert files
        for path in files:
            nft.run(path.read_text())
            assert nft.exists("chain inet kubeweft-policy filter_forward"), path.name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


# ---- on the lab ----------------------------------------------------------------------------------

def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="h11probe")


def probe(src_netns: str, ip: str, port: int, udp: bool = False, timeout: float = 1.0) -> str:
    """One probe, made on a worker thread (a netns is entered per thread)."""
    with _pool() as pool:
        return pool.submit(probe_once, src_netns, ip, port, udp=udp, timeout=timeout).result(timeout + 5)["outcome"]


def pod_manifest(name: str, node: str, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "w", "image": "lab", "ports": [
                {"containerPort": 80, "name": "http"}, {"containerPort": 81, "protocol": "UDP"}]}]}}


def netpol(name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def host_cidr(ip: str) -> str:
    """The ipBlock of one address: /32, or /128 for IPv6."""
    return f"{ip}/{128 if ':' in ip else 32}"


def apply(lab, *objs: dict) -> None:
    lab.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objs))   # JSON is YAML


@pytest.fixture(scope="module")
def world(klab):
    """Pods a, b on node1 and c on node2 in namespace h11smoke; removed afterwards. Each pod's
    "ip" is its address of the family the run sends over (klab.version)."""
    lab = klab
    try:
        lab.kubectl("create", "namespace", NS)
        apply(lab, pod_manifest("a", "node1", {"role": "server"}), pod_manifest("b", "node1", {"role": "client"}),
              pod_manifest("c", "node2", {"role": "other"}))
        lab.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/a", "pod/b", "pod/c", "--timeout=90s", timeout=100)
        pods = {k.split("/")[1]: dict(v, ip=lab.pick(v.get("ips") or [v["ip"]]))
                for k, v in read_pods(lab.cfg).items() if k.startswith(f"{NS}/")}
        assert set(pods) == {"a", "b", "c"}
        yield lab, pods
    finally:
        lab.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False, timeout=30)


@pytest.fixture
def clean_policies(world):
    lab, _ = world
    yield
    lab.kubectl("delete", "networkpolicy", "--all", "-n", NS, "--ignore-not-found", check=False, timeout=30)


def test_isolation_peers_named_port_label_change_and_node(world, clean_policies):
    lab, pods = world
    a, b, c = pods["a"], pods["b"], pods["c"]
    assert probe(c["netns"], a["ip"], 80) == CONNECTED
    apply(lab, netpol("server", {"podSelector": {"matchLabels": {"role": "server"}},
                                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                              "ports": [{"port": "http"}]}]}))
    wait_for("c -> a:80 dropped", lambda: probe(c["netns"], a["ip"], 80, timeout=0.5) == "timeout", SETTLE)
    assert probe(b["netns"], a["ip"], 80) == CONNECTED                  # the peer, on the named port
    assert probe(b["netns"], a["ip"], 81, udp=True, timeout=0.5) != CONNECTED   # not on another port
    assert probe(lab.cfg.node_netns("node1"), a["ip"], 80) == CONNECTED  # its own node always
    # egress of a, b is not isolated: a reaches c
    assert probe(a["netns"], c["ip"], 81, udp=True) == CONNECTED

    # c becomes a client: one element change on node1, and c gets in
    t0 = time.monotonic()
    lab.kubectl("label", "pod", "-n", NS, "c", "role=client", "--overwrite")
    wait_for("c -> a:80 connected", lambda: probe(c["netns"], a["ip"], 80, timeout=0.3) == CONNECTED, SETTLE)
    print(f"label change to first allowed connection: {time.monotonic() - t0:.2f} s")
    lab.kubectl("label", "pod", "-n", NS, "c", "role=other", "--overwrite")
    wait_for("c -> a:80 dropped", lambda: probe(c["netns"], a["ip"], 80, timeout=0.3) == "timeout", SETTLE)


def test_egress_isolation_on_the_source_node(world, clean_policies):
    lab, pods = world
    a, b, c = pods["a"], pods["b"], pods["c"]
    apply(lab, netpol("c-out", {"podSelector": {"matchLabels": {"role": "other"}}, "policyTypes": ["Egress"],
                                "egress": [{"to": [{"ipBlock": {"cidr": host_cidr(b["ip"])}}],
                                            "ports": [{"protocol": "UDP", "port": 81}]}]}))
    wait_for("c -> a:81/udp dropped",
             lambda: probe(c["netns"], a["ip"], 81, udp=True, timeout=0.5) == "timeout", SETTLE)
    assert probe(c["netns"], b["ip"], 81, udp=True) == CONNECTED
    assert probe(c["netns"], b["ip"], 80, timeout=0.5) == "timeout"
    assert probe(a["netns"], c["ip"], 80) == CONNECTED       # ingress of c is not isolated; replies pass


def _line_exchange(sock: socket.socket) -> str:
    sock.sendall(b"hostname\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.decode().strip()


def test_established_connections_survive_a_policy_change(world, clean_policies):
    """Decision: like Calico and Cilium, a policy change does not cut established connections
    (ct state established is accepted first); new connections follow the new policy."""
    lab, pods = world
    a, c = pods["a"], pods["c"]

    def connect() -> socket.socket:
        with netns.entered(c["netns"]):
            s = socket.socket(socket.AF_INET6 if ":" in a["ip"] else socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect((a["ip"], 80))
        return s

    with _pool() as pool:
        sock = pool.submit(connect).result(10)
    try:
        assert _line_exchange(sock) == "a"
        apply(lab, netpol("deny-all", {"podSelector": {}}))
        wait_for("c -> a:80 dropped", lambda: probe(c["netns"], a["ip"], 80, timeout=0.3) == "timeout", SETTLE)
        assert _line_exchange(sock) == "a"          # the old connection still flows
    finally:
        sock.close()
    lab.kubectl("delete", "networkpolicy", "deny-all", "-n", NS)
    wait_for("c -> a:80 connected", lambda: probe(c["netns"], a["ip"], 80, timeout=0.3) == CONNECTED, SETTLE)


def _metrics(lab, node: str) -> str:
    def get() -> str:
        with netns.entered(lab.cfg.node_netns(node)):
            s = socket.create_connection(("127.0.0.1", 10249), timeout=3)
        s.close()
        with netns.entered(lab.cfg.node_netns(node)):
            return urllib.request.urlopen("http://127.0.0.1:10249/metrics", timeout=5).read().decode()
    with _pool() as pool:
        return pool.submit(get).result(15)


def test_drops_are_counted_and_logged(world, clean_policies):
    lab, pods = world
    a, c = pods["a"], pods["c"]
    apply(lab, netpol("deny-c", {"podSelector": {"matchLabels": {"role": "server"}},
                                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}))
    wait_for("c -> a:80 dropped", lambda: probe(c["netns"], a["ip"], 80, timeout=0.3) == "timeout", SETTLE)
    assert probe(c["netns"], a["ip"], 81, udp=True, timeout=0.5) == "timeout"
    pattern = re.compile(r'kubeweft_networkpolicy_drops_total\{direction="ingress",namespace="h11smoke",'
                         r'policy="deny-c"\} (\d+)')
    found = pattern.search(_metrics(lab, "node1"))
    assert found and int(found.group(1)) >= 2
    log_file = install.agent_log(lab.cfg, "node1")
    src, dst = (re.escape(f"[{ip}]" if ":" in ip else ip) for ip in (c["ip"], a["ip"]))
    want = re.compile(rf"denied ingress by {NS}/deny-c: udp {src}:\d+ -> {dst}:81")
    wait_for("the drop in node1's agent log", lambda: want.search(log_file.read_text(errors="replace")), 5)


# ---- the controller's bookkeeping against a real kernel, events fed by hand ------------------------

@pytest.fixture
def scratch_nft():
    from kubeweft.proxy.nftables import Nft

    name = f"h11-ctl-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield Nft(name), name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def _elements(nft, set_name: str) -> set[str]:
    out = set()
    for item in nft.list(f"set inet kubeweft-policy {set_name}"):
        for e in item.get("set", {}).get("elem", []) or []:
            out.add(e if isinstance(e, str) else json.dumps(e))
    return out


def _pod_obj(name, ip, labels, node="node1"):
    return {"metadata": {"namespace": "x", "name": name, "labels": labels},
            "spec": {"nodeName": node}, "status": {"podIP": ip} if ip else {}}


def test_controller_bookkeeping(scratch_nft):
    from kubeweft.proxy import render_policy as rp
    from kubeweft.proxy.policy_controller import PolicyController

    scratch_nft, name = scratch_nft
    ctl = PolicyController(None, "node1", "10.244.0.0/24", nft=scratch_nft, netns=name)
    pol = {"metadata": {"namespace": "x", "name": "p"},
           "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}}
    ctl._on_sync("ns", {("", "x"): {"metadata": {"name": "x"}}})
    ctl._on_sync("pol", {("x", "p"): pol, ("x", "bad"): {"metadata": {"namespace": "x", "name": "bad"},
                                                           "spec": {"podSelector": "everything"}}})
    ctl._on_sync("pod", {("x", "c"): _pod_obj("c", "10.244.1.9", {"app": "client"}, node="node2")})
    with ctl.lock:
        ctl._plan_locked()
        ctl.rebuild()
    pid = rp.policy_id("x/p")
    assert list(ctl.planner.policies) == ["x/p"]              # the broken one skipped
    assert _elements(scratch_nft, f"{pid}_i0") == {"10.244.1.9"}

    # a flow that saw replies from the address's previous holder: "established", it would pass
    # any policy, so pod_added must remove it
    ct = ["conntrack", "-I", "-p", "udp", "-s", "203.0.113.2", "-d", "10.244.0.5", "--sport", "40551",
          "--dport", "80", "-t", "60", "-u", "SEEN_REPLY"]
    assert netns.run(name, ct, capture_output=True, timeout=10).returncode == 0
    # ADD of a pod the informer has seen without an IP yet: covered before pod_added returns
    ctl._on_event("pod", "ADDED", _pod_obj("w", "", {"app": "web"}))
    ctl.pod_added("x", "w", ["10.244.0.5"], "cid-1")
    flows = netns.run(name, ["conntrack", "-L"], capture_output=True, text=True, timeout=10).stdout
    assert "10.244.0.5" not in flows
    assert _elements(scratch_nft, rp.IN_ISOLATED) == {"10.244.0.5"}
    assert _elements(scratch_nft, f"{pid}_sel") == {"10.244.0.5"}
    assert _elements(scratch_nft, rp.LOCAL_PODS) == {"10.244.0.5"}          # c is on node2
    # the informer's next view, still without podIP, keeps the CNI's address
    ctl._on_event("pod", "MODIFIED", _pod_obj("w", "", {"app": "web"}))
    ctl.sync()
    assert _elements(scratch_nft, rp.IN_ISOLATED) == {"10.244.0.5"}

    # a label change: one small transaction
    before = ctl.transactions
    ctl._on_event("pod", "MODIFIED", _pod_obj("c", "10.244.1.9", {"app": "other"}, node="node2"))
    ctl.sync()
    assert ctl.transactions == before + 1 and _elements(scratch_nft, f"{pid}_i0") == set()

    # DEL: the address leaves every set, and a late informer view with the old podIP does not
    # bring it back (the IP may already belong to another pod)
    ctl.pod_deleted("cid-1")
    assert _elements(scratch_nft, rp.IN_ISOLATED) == set() == _elements(scratch_nft, rp.LOCAL_PODS)
    ctl._on_event("pod", "MODIFIED", _pod_obj("w", "10.244.0.5", {"app": "web"}))
    ctl.sync()
    assert _elements(scratch_nft, rp.IN_ISOLATED) == set()

    # someone removes our elements behind our back: the next failed transaction rebuilds
    ctl._on_event("pod", "MODIFIED", _pod_obj("c", "10.244.1.9", {"app": "client"}, node="node2"))
    ctl.sync()
    scratch_nft.run(f"flush set inet kubeweft-policy {pid}_i0")
    ctl._on_event("pod", "DELETED", _pod_obj("c", "10.244.1.9", {"app": "client"}, node="node2"))
    rebuilds = ctl.rebuilds
    ctl.sync()                                   # delete element of a missing element fails
    assert ctl.rebuilds == rebuilds + 1
    assert _elements(scratch_nft, f"{pid}_i0") == set()

    # the policy goes: its chains, sets and counters go in one transaction
    ctl._on_event("pol", "DELETED", pol)
    ctl.sync()
    assert not scratch_nft.exists(f"set inet kubeweft-policy {pid}_sel")
    assert not scratch_nft.exists(f"chain inet kubeweft-policy {pid}_in")


def test_an_attachment_without_pod_arguments_is_only_a_local_address(scratch_nft):
    from kubeweft.proxy import render_policy as rp
    from kubeweft.proxy.policy_controller import PolicyController

    scratch_nft, name = scratch_nft
    ctl = PolicyController(None, "node1", "10.244.0.0/24", nft=scratch_nft, netns=name)
    for kind in ("ns", "pol", "pod"):
        ctl._on_sync(kind, {})
    with ctl.lock:
        ctl._plan_locked()
        ctl.rebuild()
    ctl.pod_added("", "", ["10.244.0.9"], "cid-x")
    assert _elements(scratch_nft, rp.LOCAL_PODS) == {"10.244.0.9"}
    ctl.pod_deleted("cid-x")
    assert _elements(scratch_nft, rp.LOCAL_PODS) == set()
