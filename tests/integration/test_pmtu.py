"""Path MTU in both backends, on 2-node labs of this file's own, in each IP family (ipv4, ipv6,
and dual checked over its IPv6, the family whose numbers differ).

- Pods get the underlay MTU (1500) minus the VXLAN overhead (50 over IPv4, 70 over IPv6; the
  smallest of the lab's families') with VXLAN, the full MTU with host-gw.
- Pod to pod across nodes with DF set: exactly the pod MTU passes, one byte more fails loudly
  (EMSGSIZE at the sender), never silently.
- A too-large packet with DF set that meets a smaller link on the way gets ICMP "fragmentation
  needed" (ICMPv6 Packet Too Big) back, never a black hole: the underlay router sends the
  external host's packets for node2's pods via node1, so node1 must forward a 1500-byte DF
  packet into its smaller VXLAN device (host-gw: into its 1500-byte uplink, which carries it).
- host-gw refuses at agent start when a node is not directly reachable; a running agent logs
  such a node and skips it.
"""
from __future__ import annotations

import errno
import json
import socket
import threading
from dataclasses import dataclass

import pytest
from kubeweft.lab import install, lifecycle, netns
from kubeweft.lab.config import LabConfig

from . import conftest
from . import overlay_helpers as oh

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h7-pmtu"
UNDERLAY_MTU = 1500
HEADERS = {4: 28, 6: 48}                 # IP header (20 or 40) + ICMP/UDP 8
VXLAN_OVERHEAD = {4: 50, 6: 70}          # outer IP header 20 or 40 + UDP 8 + VXLAN 8 + Ethernet 14
VERSION = {"ipv4": 4, "ipv6": 6, "dual": 6}     # the family a lab's traffic is checked over
# <linux/in.h>, <linux/in6.h>; Python 3.11's socket module lacks them
MTU_DISCOVER = {4: (socket.IPPROTO_IP, 10), 6: (socket.IPPROTO_IPV6, 23)}
PMTUDISC_DO = 2


def too_long(version: int, mtu: int) -> str:
    """ping's local error for a DF packet over the known path MTU (iputils words it per family)."""
    return f"message too long, mtu={mtu}" if version == 4 else f"message too long, mtu: {mtu}"
# a Node's underlay address of each family on no subnet of the lab's underlay
UNREACHABLE = {4: ("kubeweft.io/public-ip", "192.168.57.9"), 6: ("kubeweft.io/public-ip-v6", "2001:db8:57::9")}


@dataclass(frozen=True)
class BLab:
    backend: str
    cfg: LabConfig
    pods: dict[str, oh.Pod]
    version: int

    def ip(self, pod: str) -> str:
        """The pod's address of the family under test."""
        return self.pods[pod].ip_of(self.version)

    def node_ip(self, index: int) -> str:
        return self.cfg.node_ip6(index) if self.version == 6 else self.cfg.node_ip(index)


@pytest.fixture(scope="module", params=[(b, f) for b in ("vxlan", "host-gw") for f in VERSION],
                ids=lambda p: f"{p[0]}-{p[1]}")
def blab(request):
    backend, family = request.param
    name = conftest.unique_lab_name("h7m")
    with oh.backend_lab(name, nodes=2, backend=backend, on_name=conftest._session_lab_names.add,
                        ip_family=family) as cfg:
        pods = oh.create_pods(cfg, NS, {"a": "node1", "b": "node2"})
        yield BLab(backend, cfg, pods, VERSION[family])


def pod_mtu(backend: str, families: tuple[int, ...]) -> int:
    """The smallest of the families' MTUs: the pod's eth0 carries every family."""
    return min(UNDERLAY_MTU - (VXLAN_OVERHEAD[f] if backend == "vxlan" else 0) for f in families)


def link_mtu(ns: str, dev: str) -> int:
    return json.loads(oh.run_in(ns, ["ip", "-j", "link", "show", dev]).stdout)[0]["mtu"]


def test_pods_get_the_backends_mtu(blab):
    backend, cfg, pods = blab.backend, blab.cfg, blab.pods
    want = pod_mtu(backend, cfg.families)
    for p in pods.values():
        assert link_mtu(p.netns, "eth0") == want, p.key
    for node in ("node1", "node2"):
        ns = cfg.node_netns(node)
        assert link_mtu(ns, "kw0") == want
        for family, dev in oh.VXLAN_DEVICES.items():
            has_vxlan = oh.run_in(ns, ["ip", "link", "show", dev]).returncode == 0
            assert has_vxlan == (backend == "vxlan" and family in cfg.families), (node, dev)
            if has_vxlan:
                assert link_mtu(ns, dev) == UNDERLAY_MTU - VXLAN_OVERHEAD[family], (node, dev)
        log = install.agent_log_text(cfg, node)
        assert f"overlay {backend} up: pod MTU {want}" in log


def udp_send_df(src_ns: str, dst: str, size: int) -> int | None:
    """Send one UDP datagram of `size` payload bytes with DF from `src_ns`: None if the kernel
    took it, else the errno."""
    out: list[int | None | BaseException] = []
    version = 6 if ":" in dst else 4

    def send() -> None:
        with netns.entered(src_ns):
            s = socket.socket(socket.AF_INET6 if version == 6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(*MTU_DISCOVER[version], PMTUDISC_DO)
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
    a, b = blab.pods["a"], blab.pods["b"]
    a_ip, b_ip, headers = blab.ip("a"), blab.ip("b"), HEADERS[blab.version]
    mtu = pod_mtu(blab.backend, blab.cfg.families)
    ok = oh.ping(a.netns, b_ip, size=mtu - headers, count=2)
    assert ok.returncode == 0 and " 0% packet loss" in ok.stdout, ok.stdout + ok.stderr
    back = oh.ping(b.netns, a_ip, size=mtu - headers)
    assert back.returncode == 0, back.stdout + back.stderr
    big = oh.ping(a.netns, b_ip, size=mtu - headers + 1)
    assert big.returncode != 0
    assert too_long(blab.version, mtu) in big.stdout + big.stderr, big.stdout + big.stderr
    assert udp_send_df(a.netns, b_ip, mtu - headers) is None
    assert udp_send_df(a.netns, b_ip, mtu - headers + 1) == errno.EMSGSIZE


@pytest.fixture
def detour(blab):
    """The underlay router sends traffic for node2's pods to node1 (which routes it on over
    the overlay): the external host's 1500-byte packets must cross node1's pod-side MTU."""
    cfg, fam = blab.cfg, f"-{blab.version}"
    node2 = {n["name"]: n for n in lifecycle.status(cfg.name)["nodes"]}["node2"]
    cidr = next(c for c in node2["podCIDRs"] if (":" in c) == (blab.version == 6))
    u = cfg.underlay_netns
    assert oh.run_in(u, ["ip", fam, "route", "replace", cidr, "via", blab.node_ip(1)]).returncode == 0
    oh.run_in(cfg.external_netns, ["ip", fam, "route", "flush", "cache"])
    try:
        yield blab
    finally:
        oh.run_in(u, ["ip", fam, "route", "del", cidr])
        oh.run_in(cfg.external_netns, ["ip", fam, "route", "flush", "cache"])


def test_too_big_df_packet_gets_frag_needed_never_a_black_hole(detour):
    ext, v = detour.cfg.external_netns, detour.version
    b, headers = detour.ip("b"), HEADERS[v]
    small = oh.ping(ext, b, size=56)
    assert small.returncode == 0, small.stdout + small.stderr        # the detour works at all
    full = oh.ping(ext, b, size=UNDERLAY_MTU - headers)
    text = full.stdout + full.stderr
    if detour.backend == "vxlan":
        # node1 answers for its VXLAN hop of this family: ICMP frag needed (ICMPv6 Packet Too
        # Big), from node1's address
        tunnel = UNDERLAY_MTU - VXLAN_OVERHEAD[v]
        said = f"Frag needed and DF set (mtu = {tunnel})" if v == 4 else f"Packet too big: mtu={tunnel}"
        assert full.returncode != 0
        assert f"From {detour.node_ip(1)}" in text and said in text, text
        # the sender learnt it: the next too-big DF packet fails at once, locally and loudly
        again = oh.ping(ext, b, size=UNDERLAY_MTU - headers)
        assert too_long(v, tunnel) in again.stdout + again.stderr
        fits = oh.ping(ext, b, size=tunnel - headers)
        assert fits.returncode == 0, fits.stdout + fits.stderr
        # without DF the same 1500-byte packet arrives in fragments (IPv6: the sender fragments,
        # having learnt the path MTU)
        frag = oh.ping(ext, b, size=UNDERLAY_MTU - headers, df=False)
        assert frag.returncode == 0, frag.stdout + frag.stderr
    else:
        # host-gw: node1 forwards into its 1500-byte uplink, so the full MTU passes
        assert full.returncode == 0 and " 0% packet loss" in full.stdout, text
        over = oh.ping(ext, b, size=UNDERLAY_MTU - headers + 1)
        assert too_long(v, UNDERLAY_MTU) in over.stdout + over.stderr


def test_hostgw_refuses_a_node_it_cannot_reach_directly(blab):
    backend, cfg, pods = blab.backend, blab.cfg, blab.pods
    if backend != "host-gw":
        pytest.skip("host-gw only")
    from kubernetes.client import ApiException
    core = oh.api(cfg)
    log1 = install.agent_log(cfg, "node1")
    try:
        mark = log1.stat().st_size
        annotation, far = UNREACHABLE[blab.version]
        core.create_node({"metadata": {"name": "node9", "annotations": {annotation: far}}}, _request_timeout=10)
        # the running agents log it and skip it; the routes between the reachable nodes stay
        said = oh.first_time(lambda: f"node9 ({far})" in log1.read_text()[mark:], 20, 0.1)
        assert said is not None, log1.read_text()[mark:]
        assert "skipped" in log1.read_text()[mark:]
        cidrs2 = {n["name"]: n["podCIDRs"] for n in lifecycle.status(cfg.name)["nodes"]}["node2"]
        cidr2 = next(c for c in cidrs2 if (":" in c) == (blab.version == 6))
        assert oh.route_dsts(cfg.node_netns("node1"), blab.version) == {cidr2}
        assert oh.probe(pods["a"].netns, blab.ip("b"), 8080)["outcome"] == "connected"

        # an agent (re)starting now refuses: a clear error and a non-zero exit (its kubelet
        # restarts the container, which fails again until node9 is gone)
        oh.kill9(lifecycle.find_agent(cfg.name, None, "node1"))
        pod = _agent_pod(core, "node1")
        failed = oh.first_time(lambda: _failed_exit(core, pod) not in (None, 0), 60, 0.2)
        text = install.agent_log(cfg, "node1").read_text()
        assert failed is not None, text
        assert "overlay host-gw refused" in text and f"node node9 ({far}) not directly reachable" in text, text
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
