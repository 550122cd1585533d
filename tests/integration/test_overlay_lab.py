"""Cross-node pod networking on real labs.

On the shared 3-node kubeweft labs, once per IP family (`klab`: ipv4, ipv6, and dual over its
IPv6): every pod reaches every pod on every node by pod IP over TCP and UDP and the server sees
the true client pod address; node <-> pod on every node; pod -> external host is masqueraded to
the node address of that family; each family's VXLAN device and the pods have that family's MTU
(IPv6 VXLAN costs 70 bytes, so pods on ipv6 and dual labs get 1430).
On a 2-node lab of this file's own per family (ipv4, ipv6, dual over IPv6): nodes joining and
leaving (routes follow within a second, traffic between the others never stops) and an agent
kill -9 + restart (the kernel keeps every entry of every family, a running probe loop loses
nothing).
"""
from __future__ import annotations

import json
import time

import pytest
from kubeweft.lab import install, lifecycle

from . import conftest
from . import overlay_helpers as oh

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h7-overlay"
PLACEMENT = {f"p{node}{j}": f"node{node}" for node in (1, 2, 3) for j in "ab"}
SERVER_PORT = 9099
UNDERLAY_MTU = 1500
VXLAN_OVERHEAD = {4: 50, 6: 70}          # outer IP header 20 or 40 + UDP 8 + VXLAN 8 + Ethernet 14


@pytest.fixture(scope="module")
def pods(klab):
    try:
        yield oh.create_pods(klab.cfg, NS, PLACEMENT)
    finally:
        oh.delete_namespace(klab.cfg, NS)


def node_ips(lab) -> dict[str, str]:
    """Node name -> its underlay address of the family the test sends over."""
    return {n["name"]: lab.pick([a.split("/")[0] for a in n["addresses"]]) for n in lab.status()["nodes"]}


def external_ip(lab) -> str:
    return lab.cfg.external_ip6 if lab.version == 6 else lab.cfg.external_ip


def client_ip(result: dict) -> str:
    """The address part of a probe's "client" (IP:PORT or [IP]:PORT)."""
    return result["client"].rpartition(":")[0].strip("[]")


def test_every_pod_reaches_every_pod_tcp_and_udp_with_its_true_address(klab, pods):
    proc = klab.cli("matrix", "-n", NS, "--json", "--timeout", "2", check=False, timeout=120)
    every = json.loads(proc.stdout)["results"]
    # a dual lab probes each family; the one under test is klab.version's (family 0: the only one)
    results = [r for r in every if r.get("family", 0) in (0, klab.version)]
    # 6 sources x 6 targets x (8080/TCP, 8080/UDP), per family
    assert len(every) == 6 * 6 * 2 * len(klab.cfg.families)
    assert len(results) == 6 * 6 * 2
    assert {(r["from"], r["to"], r["proto"]) for r in results} == {
        (f"{NS}/{a}", f"{NS}/{b}", proto) for a in PLACEMENT for b in PLACEMENT for proto in ("TCP", "UDP")}
    bad = [r for r in every if r["outcome"] != "connected" or r["pod"] != r["to"]]
    assert not bad, json.dumps(bad, indent=1)
    # never NAT between pods: the server saw the client pod's own address, across nodes too
    ips = {p.key: klab.pick(p.ips) for p in pods.values()}
    seen = [(r["from"], client_ip(r)) for r in results]
    assert all(ip == ips[src] for src, ip in seen), seen
    cross = [r for r in results if pods[r["from"].split("/")[1]].node != pods[r["to"].split("/")[1]].node]
    assert len(cross) == 6 * 4 * 2
    assert proc.returncode == 0


def test_overlay_routes_on_every_node_are_flannels(klab, pods):
    status = klab.status()["nodes"]
    v = klab.version
    for n in status:
        others = {klab.pick(o["podCIDRs"]) for o in status if o["name"] != n["name"]}
        assert oh.route_dsts(n["netns"], v) == others, n["name"]
        k = oh.kernel_overlay(n["netns"], v)
        assert len(k["neighbours"]) == len(k["fdb"]) == len(others)
        # each family's VXLAN device: the underlay (1500) minus that family's VXLAN overhead
        for family in klab.cfg.families:
            dev = oh.VXLAN_DEVICES[family]
            link = json.loads(oh.run_in(n["netns"], ["ip", "-j", "link", "show", dev]).stdout)[0]
            assert link["mtu"] == UNDERLAY_MTU - VXLAN_OVERHEAD[family], (n["name"], dev)
    # pods get the smallest of the families' MTUs
    want = min(UNDERLAY_MTU - VXLAN_OVERHEAD[f] for f in klab.cfg.families)
    for p in pods.values():
        link = json.loads(oh.run_in(p.netns, ["ip", "-j", "link", "show", "eth0"]).stdout)[0]
        assert link["mtu"] == want, p.key


def test_node_to_pod_on_every_node(klab, pods):
    for node in ("node1", "node2", "node3"):
        for p in pods.values():
            for udp in (False, True):
                r = oh.probe(klab.cfg.node_netns(node), klab.pick(p.ips), 8080, udp=udp)
                assert r["outcome"] == "connected" and r["pod"] == p.key, (node, p.key, udp, r)


def test_pod_to_node_on_every_node(klab, pods):
    ips = node_ips(klab)
    servers = [oh.workload_in(klab.cfg.node_netns(n), SERVER_PORT, f"node/{n}") for n in ips]
    for s in servers:
        s.__enter__()
    try:
        for p in pods.values():
            for node, ip in ips.items():
                r = oh.probe(p.netns, ip, SERVER_PORT)
                assert r["outcome"] == "connected" and r["pod"] == f"node/{node}", (p.key, node, r)
    finally:
        for s in servers:
            s.__exit__(None, None, None)


def test_pod_to_external_is_masqueraded_to_its_node_address(klab, pods):
    ips = node_ips(klab)
    with oh.workload_in(klab.cfg.external_netns, SERVER_PORT, "external/host"):
        for p in pods.values():
            for udp in (False, True):
                r = oh.probe(p.netns, external_ip(klab), SERVER_PORT, udp=udp)
                assert r["outcome"] == "connected", (p.key, udp, r)
                assert client_ip(r) == ips[p.node], (p.key, r)


# --- a lab of our own: nodes joining and leaving, an agent restart ------------------------------

# a lab of its own per family, and the family its traffic and kernel checks use
OWN_FAMILIES = {"ipv4": 4, "ipv6": 6, "dual": 6}


@pytest.fixture(scope="module", params=list(OWN_FAMILIES))
def ownlab(request):
    name = conftest.unique_lab_name("h7j")
    with oh.backend_lab(name, nodes=2, backend="vxlan", on_name=conftest._session_lab_names.add,
                        ip_family=request.param) as cfg:
        pods = oh.create_pods(cfg, "h7-join", {"a": "node1", "b": "node2"})
        yield cfg, pods, OWN_FAMILIES[request.param]


def _node_ready(cfg, node: str):
    core = oh.api(cfg)

    def check() -> bool:
        try:
            n = core.read_node(node, _request_timeout=2)
        except Exception:  # noqa: BLE001 - not there yet
            return False
        return any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
    return core, check


def _node_gone(cfg, node: str):
    from kubernetes.client import ApiException
    core = oh.api(cfg)

    def check() -> bool:
        try:
            core.read_node(node, _request_timeout=2)
            return False
        except ApiException as e:
            return e.status == 404
    return core, check


def test_nodes_join_and_leave_routes_follow_within_a_second_traffic_never_stops(ownlab):
    import concurrent.futures as cf
    cfg, pods, v = ownlab
    a, b = pods["a"], pods["b"]
    with oh.ProbeLoop(a.netns, b.ip_of(v), 8080) as loop, \
            oh.ProbeLoop(b.netns, a.ip_of(v), 8080, udp=True) as uloop, cf.ThreadPoolExecutor(4) as pool:
        # --- join: node3 becomes Ready; node1 and node2 route to it within a second (in fact
        # before: the lab installs a node's CNI config, which makes it Ready, once its agent is up)
        core, ready = _node_ready(cfg, "node3")
        t_ready = pool.submit(oh.first_time, ready, 90, 0.05)
        t_routes = {n: pool.submit(oh.first_time, lambda n=n: len(oh.route_dsts(cfg.node_netns(n), v)) == 2, 90)
                    for n in ("node1", "node2")}
        oh.lab_cli(cfg.name, "node-add", timeout=150)
        ready_at = t_ready.result(100)
        core.api_client.close()
        assert ready_at is not None
        for n, fut in t_routes.items():
            at = fut.result(100)
            assert at is not None and at - ready_at < 1.0, (n, at and at - ready_at)
            print(f"join: {n} routes to node3 {at - ready_at:+.3f} s after node3 is Ready")
        cidrs3 = {x["name"]: x["podCIDRs"] for x in lifecycle.status(cfg.name)["nodes"]}["node3"]
        cidr3 = next(c for c in cidrs3 if (":" in c) == (v == 6))
        assert all(cidr3 in oh.route_dsts(cfg.node_netns(n), v) for n in ("node1", "node2"))
        c = oh.create_pods(cfg, "h7-join", {"c": "node3"}, create_namespace=False)["c"]
        assert oh.probe(a.netns, c.ip_of(v), 8080)["pod"] == c.key
        assert client_ip(oh.probe(c.netns, b.ip_of(v), 8080, udp=True)) == c.ip_of(v)

        # --- leave: node3's Node is deleted; its routes go from node1 and node2 within a second
        core, gone = _node_gone(cfg, "node3")
        t_gone = pool.submit(oh.first_time, gone, 60)
        t_routes = {n: pool.submit(oh.first_time, lambda n=n: cidr3 not in oh.route_dsts(cfg.node_netns(n), v), 60)
                    for n in ("node1", "node2")}
        out = oh.lab_cli(cfg.name, "node-remove", "node3", timeout=90).stdout
        gone_at = t_gone.result(70)
        core.api_client.close()
        assert gone_at is not None, out
        for n, fut in t_routes.items():
            at = fut.result(70)
            assert at is not None and at - gone_at < 1.0, (n, at and at - gone_at)
            print(f"leave: {n} dropped node3's route {at - gone_at:+.3f} s after its Node is gone")
        assert all(len(oh.kernel_overlay(cfg.node_netns("node1"), f)["fdb"]) == 1 for f in cfg.families)
        assert not any(n.endswith("-node3") for n in lab_netns(cfg))
        assert not cfg.node_dir("node3").exists()
        time.sleep(0.3)
    for what, lp in (("TCP a -> b", loop), ("UDP b -> a", uloop)):
        print(f"probe loop {what}: {lp.attempts} probes, {len(lp.failures)} failed")
        assert lp.attempts > 40, (what, lp.attempts)
        assert lp.failures == [], (what, lp.failures[:5])


def lab_netns(cfg) -> list[str]:
    from kubeweft.lab.topology import list_netns
    return list_netns(cfg.netns_prefix)


def test_agent_restart_changes_nothing_in_the_kernel_and_loses_no_packet(ownlab):
    cfg, pods, v = ownlab
    a, b = pods["a"], pods["b"]
    state = oh.lab_state(cfg)
    ns = cfg.node_netns("node1")
    before = {f: oh.kernel_overlay(ns, f) for f in cfg.families}
    assert all(k["routes"] and k["ifindex"] for k in before.values())
    with oh.ProbeLoop(a.netns, b.ip_of(v), 8080) as tcp, oh.ProbeLoop(b.netns, a.ip_of(v), 8080, udp=True) as udp:
        time.sleep(0.3)
        assert lifecycle.find_agent(cfg.name, state["token"], "node1"), "the agent of node1 is not running"
        before_logs = set(install.agent_logs(cfg, "node1"))
        # kill -9; the kubelet starts the agent's container again, with a log of its own
        lifecycle.restart_agent(cfg.name, "node1")
        # the new agent is up once it serves the CNI again
        up = oh.first_time(lambda: "serving CNI" in install.agent_log(cfg, "node1").read_text(), 60, 0.1)
        log = install.agent_log(cfg, "node1")
        assert log not in before_logs and up is not None, log.read_text()[-3000:]
        restarted = log.read_text()
        time.sleep(0.5)
    after = {f: oh.kernel_overlay(ns, f) for f in cfg.families}
    assert after == before
    # nothing was re-applied: the restarted controller found the kernel already right
    assert "overlay: add" not in restarted and "overlay: replace" not in restarted and \
        "overlay: delete" not in restarted, restarted
    for loop in (tcp, udp):
        assert loop.attempts > 10 and loop.failures == [], (loop.attempts, loop.failures[:5])
