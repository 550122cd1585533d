"""kill -9 the agent of the client's node under a steady stream of NEW connections to a
ClusterIP, held down for DOWN_FOR seconds (lab.lifecycle.hold_agent) and then restarted by its
pod's kubelet: not one connection fails, and a connection established before the kill keeps
working after the restart.

The agent reconciles with the kernel at start without flushing, so the rules
it left behind keep serving while it is down and while it starts again.

    node1: client1, the agent that dies    node2: web-2    node3: web-3
"""
from __future__ import annotations

import concurrent.futures
import time

import pytest
from kubeweft.lab import lifecycle
from kubeweft.lab import probe as lab_probe

from .services_helpers import (
    CONNECTED,
    cluster,
    http_get,
    keepalive_socket,
    names,
    svc_port,
    whoami,
)
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "h10-restart"
NODE = "node1"
RATE = 20            # new connections per second
DURATION = 10.0      # seconds of stream
KILL_AT = 3.0        # seconds into the stream
DOWN_FOR = 1.0       # seconds without an agent before the restart


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.start_pods(web={"web-2": "node2", "web-3": "node3"}, clients={"client1": NODE})
        cl.svc = cl.service("web", [svc_port(80, "http")], selector={"app": "web"})
        cl.wait_endpoints("web", 2)
        cl.wait_answer("client1", cl.svc.ip, 80)
        yield cl


def test_kill_9_agent_under_new_connections(c):
    sources = [c.source_netns("client1"), c.cfg.node_netns(NODE)]
    held = keepalive_socket(sources[0], c.svc.ip, 80)
    first = whoami(held)
    assert first.endswith(("web-2", "web-3")), first

    results: list[dict] = []
    restarted = None
    old, kill_time = None, 0.0
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            futs = []
            t0 = time.monotonic()
            for i in range(int(RATE * DURATION)):
                due = t0 + i / RATE
                while time.monotonic() < due:
                    time.sleep(min(0.005, max(0.0, due - time.monotonic())))
                now = time.monotonic() - t0
                if old is None and now >= KILL_AT:
                    old = lifecycle.hold_agent(c.cfg.name, NODE)
                    kill_time = time.monotonic() - t0
                if old is not None and restarted is None and now >= kill_time + DOWN_FOR:
                    restarted = pool.submit(lifecycle.release_agent, c.cfg.name, NODE, old)
                futs.append(pool.submit(lab_probe.probe_once, sources[i % 2], c.svc.ip, 80, timeout=3.0))
            results = [f.result(timeout=30) for f in futs]
            restarted = restarted.result(timeout=60) if restarted else None
    finally:
        if old is not None and restarted is None:          # never leave the shared lab without this agent
            restarted = lifecycle.release_agent(c.cfg.name, NODE, old)
    assert restarted is not None
    failed = [r for r in results if r["outcome"] != CONNECTED]
    assert not failed, f"{len(failed)} of {len(results)} new connections failed: {failed[:5]}"
    assert {(r["pod"] or "").rpartition("/")[2] for r in results} == {"web-2", "web-3"}
    # the connection made before the kill still works, to the same endpoint
    assert whoami(held) == first
    held.close()
    # the new agent is up and serving: healthy, and it programs a change made now
    assert lifecycle._alive(restarted), "the restarted agent exited"
    wait_for("the new agent healthy", lambda: http_get(c.cfg.node_netns(NODE), "127.0.0.1", 10256,
                                                       "/healthz")[0] == 200, timeout=30)
    c.web_pod("web-1", NODE)
    c.wait_ready("web-1")
    wait_for("the new agent programs a new endpoint",
             lambda: names(c.who("client1", c.svc.ip, 80, n=12)) == {"web-1", "web-2", "web-3"})
