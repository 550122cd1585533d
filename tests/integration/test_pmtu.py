"""Path MTU in both backends, on 2-node labs of this file's own.

- Pods get the underlay MTU (1500) minus 50 with VXLAN, the full MTU with host-gw.
- Pod to pod across nodes with DF set: exactly the pod MTU passes, one byte more fails loudly
  (EMSGSIZE at the sender), never silently.
- A too-large packet with DF set that meets a smaller link on the way gets ICMP "fragmentation
  needed" back, never a black hole: the underlay router sends the external host's packets for
  node2's pods via node1, so node1 must forward a 1500-byte DF packet into its 1450-byte VXLAN
  device (host-gw: into its 1500-byte uplink, which carries it).
- host-gw refuses at agent start when a node is not directly reachable; a running agent logs
  such a node and skips it.
"""
from __future__ import annotations

import errno
import json
import socket
import threading

import pytest
from kubeweft.lab import install, lifecycle, netns

from . import conftest
from . import overlay_helpers as oh

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h7-pmtu"
UNDERLAY_MTU = 1500
HEADERS = 28                     # IPv4 20 + ICMP/UDP 8
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2   # <linux/in.h>; Python 3.11's socket module lacks them


@pytest.fixture(scope="module", params=["vxlan", "host-gw"])
def blab(request):
    name = conftest.unique_lab_name("h7m")
    with oh.backend_lab(name, nodes=2, backend=request.param, on_name=conftest._session_lab_names.add) as cfg:
        pods = oh.create_pods(cfg, NS, {"a": "node1", "b": "node2"})
        yield request.param, cfg, pods


def pod_mtu(backend: str) -> int:
    return UNDERLAY_MTU - 50 if backend == "vxlan" else UNDERLAY_MTU


def link_mtu(ns: str, dev: str) -> int:
    return json.loads(oh.run_in(ns, ["ip", "-j", "link", "show", dev]).stdout)[0]["mtu"]


def test_pods_get_the_backends_mtu(blab):
    backend, cfg, pods = blab
    want = pod_mtu(backend)
    for p in pods.values():
        assert link_mtu(p.netns, "eth0") == want, p.key
    for node in ("node1", "node2"):
        ns = cfg.node_netns(node)
        assert link_mtu(ns, "kw0") == want
        has_vxlan = oh.run_in(ns, ["ip", "link", "show", "kw.1"]).returncode == 0
        assert has_vxlan == (backend == "vxlan")
        log = install.agent_log_text(cfg, node)
        assert f"overlay {backend} up: pod MTU {want}" in log


def udp_send_df(src_ns: str, dst: str, size: int) -> int | None:
    """Send one UDP datagram of `size` payload bytes with DF from `src_ns`: None if the kernel
    took it, else the errno."""
    out: list[int | None | BaseException] = []

    def send() -> None:
        with netns.entered(src_ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            s.sendto(b"x" * size, (dst, 8080))
            out.append(None)
        except OSError as e:
            out.append(e.errno)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread below
            out.append(e)
        finally:
            s.close()
    t = threading.Thread(target=send)
    t.start()
    t.join(5)
    assert out and not isinstance(out[0], BaseException), out
    return out[0]


def test_pod_to_pod_exact_mtu_passes_with_df_one_more_fails_loudly(blab):
    backend, _, pods = blab
    a, b = pods["a"], pods["b"]
    mtu = pod_mtu(backend)
    ok = oh.ping(a.netns, b.ip, size=mtu - HEADERS, count=2)
    assert ok.returncode == 0 and " 0% packet loss" in ok.stdout, ok.stdout + ok.stderr
    back = oh.ping(b.netns, a.ip, size=mtu - HEADERS)
    assert back.returncode == 0, back.stdout + back.stderr
    big = oh.ping(a.netns, b.ip, size=mtu - HEADERS + 1)
    assert big.returncode != 0
    assert f"message too long, mtu={mtu}" in big.stdout + big.stderr, big.stdout + big.stderr
    assert udp_send_df(a.netns, b.ip, mtu - HEADERS) is None
    assert udp_send_df(a.netns, b.ip, mtu - HEADERS + 1) == errno.EMSGSIZE


@pytest.fixture
def detour(blab):
    """The underlay router sends traffic for node2's pods to node1 (which routes it on over
    the overlay): the external host's 1500-byte packets must cross node1's pod-side MTU."""
    backend, cfg, pods = blab
    node2 = {n["name"]: n for n in lifecycle.status(cfg.name)["nodes"]}["node2"]
    u = cfg.underlay_netns
    assert oh.run_in(u, ["ip", "route", "replace", node2["podCIDR"], "via", cfg.node_ip(1)]).returncode == 0
    oh.run_in(cfg.external_netns, ["ip", "route", "flush", "cache"])
    try:
        yield backend, cfg, pods
    finally:
        oh.run_in(u, ["ip", "route", "del", node2["podCIDR"]])
        oh.run_in(cfg.external_netns, ["ip", "route", "flush", "cache"])


def test_too_big_df_packet_gets_frag_needed_never_a_black_hole(detour):
    backend, cfg, pods = detour
    b, ext = pods["b"], cfg.external_netns
    small = oh.ping(ext, b.ip, size=56)
    assert small.returncode == 0, small.stdout + small.stderr        # the detour works at all
    full = oh.ping(ext, b.ip, size=UNDERLAY_MTU - HEADERS)
    text = full.stdout + full.stderr
    if backend == "vxlan":
        # node1 answers for the 1450-byte VXLAN hop: ICMP frag needed, from node1's address
        assert full.returncode != 0
        assert f"From {cfg.node_ip(1)}" in text and "Frag needed and DF set (mtu = 1450)" in text, text
        # the sender learnt it: the next too-big DF packet fails at once, locally and loudly
        again = oh.ping(ext, b.ip, size=UNDERLAY_MTU - HEADERS)
        assert "message too long, mtu=1450" in again.stdout + again.stderr
        fits = oh.ping(ext, b.ip, size=1450 - HEADERS)
        assert fits.returncode == 0, fits.stdout + fits.stderr
        # without DF the same 1500-byte packet arrives in fragments
        frag = oh.ping(ext, b.ip, size=UNDERLAY_MTU - HEADERS, df=False)
        assert frag.returncode == 0, frag.stdout + frag.stderr
    else:
        # host-gw: node1 forwards into its 1500-byte uplink, so the full MTU passes
        assert full.returncode == 0 and " 0% packet loss" in full.stdout, text
        over = oh.ping(ext, b.ip, size=UNDERLAY_MTU - HEADERS + 1)
        assert "message too long, mtu=1500" in over.stdout + over.stderr


def test_hostgw_refuses_a_node_it_cannot_reach_directly(blab):
    backend, cfg, pods = blab
    if backend != "host-gw":
        pytest.skip("host-gw only")
    from kubernetes.client import ApiException
    core = oh.api(cfg)
    log1 = install.agent_log(cfg, "node1")
    try:
        mark = log1.stat().st_size
        core.create_node({"metadata": {"name": "node9", "annotations": {
            "kubeweft.io/public-ip": "192.168.57.9"}}}, _request_timeout=10)
        # the running agents log it and skip it; the routes between the reachable nodes stay
        said = oh.first_time(lambda: "node9 (192.168.57.9)" in log1.read_text()[mark:], 20, 0.1)
        assert said is not None, log1.read_text()[mark:]
        assert "skipped" in log1.read_text()[mark:]
        cidr2 = {n["name"]: n["podCIDR"] for n in lifecycle.status(cfg.name)["nodes"]}["node2"]
        assert oh.route_dsts(cfg.node_netns("node1")) == {cidr2}
        assert oh.probe(pods["a"].netns, pods["b"].ip, 8080)["outcome"] == "connected"

        # an agent (re)starting now refuses: a clear error and a non-zero exit (its kubelet
        # restarts the container, which fails again until node9 is gone)
        oh.kill9(lifecycle.find_agent(cfg.name, None, "node1"))
        pod = _agent_pod(core, "node1")
        failed = oh.first_time(lambda: _failed_exit(core, pod) not in (None, 0), 60, 0.2)
        text = install.agent_log(cfg, "node1").read_text()
        assert failed is not None, text
        assert "overlay host-gw refused" in text and "node node9 (192.168.57.9) not directly reachable" in text, text
        assert "use the vxlan backend" in text
    finally:
        try:
            core.delete_node("node9", _request_timeout=10)
        except ApiException:
            pass
        core.api_client.close()
        # node9 gone, the kubelet's next restart (after its back-off) serves again
        lifecycle.wait_agent(cfg.name, "node1", timeout=90)


def _agent_pod(core, node: str) -> str:
    pods = core.list_namespaced_pod("kube-system", label_selector="app.kubernetes.io/name=kubeweft",
                                    field_selector=f"spec.nodeName={node}", _request_timeout=10).items
    return pods[0].metadata.name


def _failed_exit(core, pod: str) -> int | None:
    """The exit code of the agent container's run after the kill (137), once it ended: its
    state or, restarting, its last state."""
    st = core.read_namespaced_pod(pod, "kube-system", _request_timeout=10).status
    agent = next((c for c in st.container_statuses or [] if c.name == "agent"), None)
    if agent is None or agent.restart_count < 1:
        return None
    for state in (agent.state, agent.last_state):
        if state and state.terminated and state.terminated.exit_code != 137:
            return state.terminated.exit_code
    return None
