"""Hostile API objects that the API server accepts reach the agents and change nothing else.

On the 3-node kubeweft lab: a Service with 1,000 ports, a Service whose kubeweft.io/scheduler
annotation names no scheduler (taken with the default, and one line), EndpointSlices with garbage addresses and ports (one with
a 253-character name), a NetworkPolicy with a 253-character name and 10,000 peers, and policies
whose selectors match everything (in a namespace of their own). Each refused object costs one
line in the agent's log, and no traceback; the 1,000 ports and the 10,000 peers are programmed;
a client allowed by an unrelated policy still reaches an unrelated Service and a client that
policy denies still does not; node1's agent RSS is measured before and after.

Then one Service, one broken Service and one NetworkPolicy are changed as fast as the lab's API
server takes writes, while new unrelated Services are created: the time each takes to reach
node1's kernel is measured against the same with no churn, and the broken one still logs once.

Objects a real kube-apiserver refuses (a clusterIP of "999.1.1.1", an IPv6 clusterIP on an IPv4
cluster, externalIPs or loadBalancerSourceRanges garbage) cannot be created here either: the watch edge is fed those raw in
tests/unit/test_watch_edge_hostile.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import statistics
import threading
import time
from pathlib import Path

import pytest
import yaml
from kubeweft.lab import install
from kubeweft.proxy.render_policy import TABLE as POLICY_TABLE
from kubeweft.proxy.render_policy import policy_id

from .services_helpers import CONNECTED, agent_pid, cluster, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "hostile"
NS_WIDE = "hostile-wide"
LONG_SLICE = "s" * 253
LONG_POLICY = "p" * 253
SCHEDULER = "kubeweft.io/scheduler"
HOSTILE_SCHEDULER = "maglev; drop all\n" + "x" * 2000       # a scheduler nobody has, multi-line and long
CHURN_SECONDS = 8.0
WRITERS = 12                     # requests in flight against the API server while churning


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def log_since(c, node: str, offset: int) -> str:
    return install.agent_log(c.cfg, node).read_bytes()[offset:].decode(errors="replace")


def log_size(c, node: str) -> int:
    return install.agent_log(c.cfg, node).stat().st_size


def in_kernel(c, node: str, *args: str) -> bool:
    return c.lab.run_in(c.cfg.node_netns(node), ["nft", *args], timeout=20).returncode == 0


def policy(name: str, selector: dict, peers: list[dict], namespace: str = NS) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [{"from": peers}]}}


@pytest.fixture(scope="module")
def c(labk):
    from kubernetes import client as k8s
    with cluster(labk, NS) as cl:
        cl.start_pods(web={"web-2": "node2"})
        cl.pod("client1", "node1", labels={"role": "client"})
        cl.pod("other", "node1")
        cl.wait_ready("client1", "other")
        cl.svc = cl.service("web", [svc_port(80, 8080, name="http")], selector={"app": "web"})
        cl.wait_endpoints("web", 1)
        cl.net = k8s.NetworkingV1Api(cl.api_client)
        cl.net.create_namespaced_network_policy(NS, policy(
            "web-from-clients", {"matchLabels": {"app": "web"}},
            [{"podSelector": {"matchLabels": {"role": "client"}}}]), _request_timeout=10)
        cl.wait_answer("client1", cl.svc.ip, 80)
        try:
            yield cl
        finally:
            with contextlib.suppress(Exception):        # never made, or gone
                cl.core.delete_namespace(NS_WIDE, _request_timeout=10)
            cl.lab.kubectl("-n", NS, "delete", "networkpolicy", "--all", check=False)


def outcomes(c, source: str, n: int = 8) -> list[str]:
    return [c.probe(source, c.svc.ip, 80).outcome for _ in range(n)]


def test_hostile_objects_are_skipped_with_one_line_and_others_keep_working(c):
    pid = agent_pid(c, "node1")
    rss_before = rss_kb(pid)
    offsets = {n: log_size(c, n) for n in ("node1", "node2")}

    # accepted by the API: programmed whole
    many = c.service("many-ports", [svc_port(1000 + i, 8080, name=f"p{i}") for i in range(1000)])
    c.endpoint_slice("many-ports-1", "many-ports",
                     [{"addresses": [c.pod_ip("web-2")], "conditions": {"ready": True}, "nodeName": "node2"}],
                     [{"name": f"p{i}", "port": 8080, "protocol": "TCP"} for i in range(100)])
    peers = [{"ipBlock": {"cidr": f"198.18.{i // 256}.{i % 256}/32"}} for i in range(10_000)]
    c.net.create_namespaced_network_policy(NS, policy(LONG_POLICY, {"matchLabels": {"app": "web"}}, peers),
                                           _request_timeout=30)
    c.core.create_namespace({"metadata": {"name": NS_WIDE}}, _request_timeout=10)
    wide = policy("everything", {}, [{"namespaceSelector": {}, "podSelector": {}}], namespace=NS_WIDE)
    wide["spec"]["policyTypes"] = ["Ingress", "Egress"]
    wide["spec"]["egress"] = [{"to": [{"namespaceSelector": {}}]}]
    c.net.create_namespaced_network_policy(NS_WIDE, wide, _request_timeout=10)
    # accepted by the API server; the slices are refused by the agent, the annotation is read as
    # the default scheduler
    lb = c.service("sched-garbage", [svc_port(80, 8080, name="http")], selector={"app": "web"},
                   annotations={SCHEDULER: HOSTILE_SCHEDULER})
    c.endpoint_slice(LONG_SLICE, "web", [{"addresses": ["999.1.1.1"], "conditions": {"ready": True}}],
                     [{"name": "http", "port": 8080, "protocol": "TCP"}])
    c.endpoint_slice("junk", "web", [{"addresses": ["garbage"]}], [{"name": "http", "port": 8080}])

    wait_for("the 1,000-port Service in node1's kernel", lambda: in_kernel(
        c, "node1", "get", "element", "ip", "kubeweft", "service-ips", f"{{ {many.ip} . tcp . 1099 }}"), timeout=30)
    wait_for("the 10,000-peer policy in node2's kernel", lambda: in_kernel(
        c, "node2", "list", "chain", "inet", POLICY_TABLE, f"{policy_id(f'{NS}/{LONG_POLICY}')}_in"), timeout=30)

    assert c.probe("client1", many.ip, 1099).outcome == CONNECTED          # port 1099 -> web-2:8080
    assert outcomes(c, "client1") == [CONNECTED] * 8
    assert CONNECTED not in outcomes(c, "other", 3)                       # still denied
    assert c.probe("client1", lb.ip, 80).outcome == CONNECTED              # the default scheduler

    for node, offset in offsets.items():
        text = log_since(c, node, offset)
        assert "Traceback" not in text, text[-3000:]
        for name in ("sched-garbage", LONG_SLICE, "junk"):
            lines = [line for line in text.splitlines() if f"{NS}/{name} skipped" in line]
            assert len(lines) == 1, (node, name, lines)
    rss_after = rss_kb(pid)
    print(f"\nnode1 agent RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB with the "
          f"hostile objects")
    assert rss_after < rss_before + 64 * 1024, (rss_before, rss_after)


class Churn:
    """Writers that PATCH objects as fast as the API server answers, on their own event loop."""

    def __init__(self, c, targets: list[tuple[str, callable]]) -> None:
        kc = yaml.safe_load(c.cfg.kubeconfig.read_text())
        self.server = kc["clusters"][0]["cluster"]["server"]
        self.token = kc["users"][0]["user"]["token"]
        self.ctx = ssl.create_default_context(cafile=str(c.cfg.pki_dir / "ca.crt"))
        self.targets = targets               # (path, body(i) -> merge patch)
        self.writes = 0
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import aiohttp
        hdr = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/merge-patch+json"}
        async with aiohttp.ClientSession(headers=hdr, timeout=aiohttp.ClientTimeout(total=10),
                                         connector=aiohttp.TCPConnector(ssl=self.ctx, limit=WRITERS)) as s:
            async def writer(k: int) -> None:
                i = k
                while not self.stop.is_set():
                    path, body = self.targets[i % len(self.targets)]
                    try:
                        async with s.patch(self.server + path, json=body(i)) as r:
                            await r.read()
                            self.writes += 1
                            self.errors += r.status >= 300
                    except (TimeoutError, aiohttp.ClientError):
                        self.errors += 1
                    i += WRITERS
            await asyncio.gather(*(writer(k) for k in range(WRITERS)))

    def __enter__(self):
        self.t0 = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)
        self.seconds = time.monotonic() - self.t0


def time_to_kernel(c, i: int) -> float:
    """Seconds from creating Service probe-<i> to its ClusterIP being in node1's kernel."""
    t0 = time.monotonic()
    svc = c.service(f"probe-{i}", [svc_port(80, 8080, name="http")])
    wait_for(f"probe-{i} in node1's kernel", lambda: in_kernel(
        c, "node1", "get", "element", "ip", "kubeweft", "cluster-ips", f"{{ {svc.ip} }}"), timeout=30, interval=0.02)
    return time.monotonic() - t0


def test_an_object_changed_as_fast_as_the_api_allows_does_not_starve_the_others(c):
    c.service("churn", [svc_port(80, 8080, name="http")], selector={"app": "web"})
    c.service("churn-broken", [svc_port(80, 8080, name="http")], selector={"app": "web"},
              annotations={SCHEDULER: HOSTILE_SCHEDULER})
    c.net.create_namespaced_network_policy(NS, policy("churn", {"matchLabels": {"app": "none"}},
                                                      [{"podSelector": {}}]), _request_timeout=10)
    quiet = [time_to_kernel(c, i) for i in range(5)]
    offset = log_size(c, "node1")
    base = f"/api/v1/namespaces/{NS}/services"
    targets = [
        (f"{base}/churn", lambda i: {"spec": {"ports": [{"name": "http", "port": 80 + i % 2, "targetPort": 8080}]}}),
        (f"{base}/churn-broken", lambda i: {"metadata": {"annotations": {"churn": str(i)}}}),
        (f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/churn",
         lambda i: {"spec": {"ingress": [{"from": [{"podSelector": {"matchLabels": {"v": str(i)}}}]}]}}),
    ]
    busy = []
    with Churn(c, targets) as churn:
        deadline = time.monotonic() + CHURN_SECONDS
        i = 5
        while time.monotonic() < deadline:
            busy.append(time_to_kernel(c, i))
            assert c.probe("client1", c.svc.ip, 80).outcome == CONNECTED
            i += 1
    rate = churn.writes / churn.seconds
    print(f"\nchurn: {churn.writes} writes in {churn.seconds:.1f}s ({rate:.0f}/s, {churn.errors} errors); "
          f"an unrelated Service to node1's kernel: quiet median {statistics.median(quiet) * 1000:.0f} ms "
          f"max {max(quiet) * 1000:.0f} ms; under churn median {statistics.median(busy) * 1000:.0f} ms "
          f"max {max(busy) * 1000:.0f} ms over {len(busy)}")
    assert churn.writes > 100 and churn.errors < churn.writes / 10
    assert max(busy) < 3.0, busy
    text = log_since(c, "node1", offset)
    assert "Traceback" not in text
    assert len(re.findall(rf"service {NS}/churn-broken skipped", text)) <= 1, text[-3000:]
