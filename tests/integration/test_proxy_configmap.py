"""The service proxy's configuration as kube-proxy's: the ConfigMap kube-system/kubeweft (a
KubeProxyConfiguration in config.conf, as deploy/base ships it) edited with kubectl, node1's
agent restarted as the lab starts it (lab.lifecycle.start_agent), and then `kubeweft services`
shows the new scheduler and traffic follows it. A mode other than nftables stops the agent
with a message that says why. The ConfigMap is removed and the agent restarted on its
defaults at the end, whatever happened.

    node1: client, the agent restarted    node2, node3: web-1..3
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from kubeweft.lab import lifecycle

from .services_helpers import cluster, record_agent, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "h15-config"
NODE = "node1"
ROOT = Path(__file__).resolve().parents[2]
KUBEWEFT = str(ROOT / ".venv" / "bin" / "kubeweft")


def shipped_configmap() -> dict:
    docs = yaml.safe_load_all((ROOT / "deploy" / "base" / "configmap.yaml").read_text())
    return next(d for d in docs if d["metadata"]["name"] == "kubeweft")


def restart_agent(c) -> subprocess.Popen:
    """Stop node1's agent (SIGTERM, as a rollout does) and start it again as the lab does."""
    token = json.loads(c.cfg.state_file.read_text())["token"]
    old = lifecycle.find_agent(c.cfg.name, token, NODE)
    if old is not None:                   # none: a configuration stopped the last one
        os.kill(old, signal.SIGTERM)
        wait_for("the old agent gone", lambda: lifecycle.find_agent(c.cfg.name, token, NODE) is None, timeout=30)
    proc = lifecycle.start_agent(c.cfg, NODE, token)
    record_agent(c, NODE, proc.pid)
    return proc


def set_config(c, text: str) -> None:
    body = shipped_configmap()
    body["data"]["config.conf"] = text
    c.lab.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))


def frontend(c, address: str) -> dict | None:
    proc = c.lab.cli("node-exec", NODE, "--", KUBEWEFT, "services", "--json", timeout=60, check=False)
    if proc.returncode != 0:
        return None                      # the agent's table is being made again
    return next((f for f in json.loads(proc.stdout) if f["address"] == address and f["clients"] == "all"), None)


def wait_scheduler(c, address: str, scheduler: str) -> dict:
    return wait_for(f"{address} with scheduler {scheduler} on {NODE}", lambda: (
        f if (f := frontend(c, address)) and f["scheduler"] == scheduler and len(f["backends"]) == 3 else None),
        timeout=90, interval=1.0)


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.start_pods(web={"web-1": "node2", "web-2": "node3", "web-3": "node2"}, clients={"client": NODE})
        cl.svc = cl.service("web", [svc_port(80, "http")], selector={"app": "web"})
        cl.wait_endpoints("web", 3)
        cl.wait_answer("client", cl.svc.ip, 80)
        try:
            yield cl
        finally:
            with contextlib.suppress(Exception):
                labk.kubectl("-n", "kube-system", "delete", "configmap", "kubeweft", "--ignore-not-found")
            proc = restart_agent(cl)
            wait_for("node1's agent ready again", lambda: proc.poll() is None and frontend(cl, f"{cl.svc.ip}:80/tcp"),
                     timeout=90, interval=1.0)


def test_an_edited_configmap_changes_the_scheduler_at_the_next_start(c):
    address = f"{c.svc.ip}:80/tcp"
    assert wait_scheduler(c, address, "random")
    shipped = shipped_configmap()["data"]["config.conf"]
    # as a user edits kube-proxy's: ipvs.scheduler, then a rollout
    set_config(c, shipped.replace('scheduler: ""', "scheduler: rr"))
    restart_agent(c)
    wait_scheduler(c, address, "rr")
    seq = [c.probe("client", c.svc.ip, 80).name for _ in range(24)]
    assert None not in seq and len(set(seq[:3])) == 3 and seq == seq[:3] * 8, seq      # in turn, exactly

    set_config(c, shipped.replace('scheduler: ""', "scheduler: sh"))
    restart_agent(c)
    wait_scheduler(c, address, "sh")
    got = collections.Counter(c.probe("client", c.svc.ip, 80).name for _ in range(24))
    assert len(got) == 1 and None not in got, got        # one client address: one endpoint


def test_a_mode_other_than_nftables_stops_the_agent_saying_why(c):
    shipped = shipped_configmap()["data"]["config.conf"]
    set_config(c, shipped.replace("mode: nftables", "mode: ipvs"))
    log = c.cfg.log_dir / f"agent-{NODE}.log"
    start = log.stat().st_size
    proc = restart_agent(c)
    assert proc.wait(timeout=60) == 1
    said = log.read_text()[start:]
    assert "mode 'ipvs' is not supported: kubeweft programs the Linux kernel's nftables only" in said, said
    # the rules it left keep serving while it is down
    assert c.probe("client", c.svc.ip, 80).outcome == "connected"
    set_config(c, shipped)
    restart_agent(c)
    wait_scheduler(c, f"{c.svc.ip}:80/tcp", "random")
