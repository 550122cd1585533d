"""The service proxy's configuration as kube-proxy's: the ConfigMap kube-system/kubeweft (a
KubeProxyConfiguration in config.conf, which deploy/'s DaemonSet mounts and names with --config)
edited with kubectl, node1's kubeweft pod deleted so that the DaemonSet makes it again with the
edited file (a rollout, on one node), and then `kubeweft services` shows the new scheduler and
traffic follows it. A mode other than nftables stops the agent with a message that says why, in
its container's log. The shipped ConfigMap is put back and node1's pod made again at the end,
whatever happened.

    node1: client, its kubeweft pod remade    node2, node3: web-1..3
"""
from __future__ import annotations

import collections
import contextlib
import json
from pathlib import Path

import pytest
import yaml

from .services_helpers import cluster, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

NS = "h15-config"
NODE = "node1"
ROOT = Path(__file__).resolve().parents[2]
KUBEWEFT = str(ROOT / ".venv" / "bin" / "kubeweft")
AGENT_PODS = ("-n", "kube-system", "-l", "app.kubernetes.io/name=kubeweft", "--field-selector", f"spec.nodeName={NODE}")


def shipped_configmap() -> dict:
    docs = yaml.safe_load_all((ROOT / "deploy" / "base" / "configmap.yaml").read_text())
    return next(d for d in docs if d["metadata"]["name"] == "kubeweft")


def agent_pod(c) -> str | None:
    out = c.lab.kubectl("get", "pods", *AGENT_PODS, "-o", "json").stdout
    live = [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]
    return live[0]["metadata"]["name"] if live else None


def remake_agent_pod(c) -> str:
    """Delete node1's kubeweft pod (SIGTERM to the agent, as a rollout does) and return the name
    of the one the DaemonSet makes in its place, with the ConfigMap as it is now."""
    old = agent_pod(c)
    if old is not None:
        c.lab.kubectl("-n", "kube-system", "delete", "pod", old, "--wait=true", timeout=120)
    return wait_for(f"a new kubeweft pod on {NODE}", lambda: (p if (p := agent_pod(c)) and p != old else None),
                    timeout=90, interval=0.5)


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
                set_config(cl, shipped_configmap()["data"]["config.conf"])
            remake_agent_pod(cl)
            wait_scheduler(cl, f"{cl.svc.ip}:80/tcp", "random")


def test_an_edited_configmap_changes_the_scheduler_at_the_next_start(c):
    address = f"{c.svc.ip}:80/tcp"
    assert wait_scheduler(c, address, "random")
    shipped = shipped_configmap()["data"]["config.conf"]
    # as a user edits kube-proxy's: ipvs.scheduler, then a rollout
    set_config(c, shipped.replace('scheduler: ""', "scheduler: rr"))
    remake_agent_pod(c)
    wait_scheduler(c, address, "rr")
    seq = [c.probe("client", c.svc.ip, 80).name for _ in range(24)]
    assert None not in seq and len(set(seq[:3])) == 3 and seq == seq[:3] * 8, seq      # in turn, exactly

    set_config(c, shipped.replace('scheduler: ""', "scheduler: sh"))
    remake_agent_pod(c)
    wait_scheduler(c, address, "sh")
    got = collections.Counter(c.probe("client", c.svc.ip, 80).name for _ in range(24))
    assert len(got) == 1 and None not in got, got        # one client address: one endpoint


def test_a_mode_other_than_nftables_stops_the_agent_saying_why(c):
    shipped = shipped_configmap()["data"]["config.conf"]
    set_config(c, shipped.replace("mode: nftables", "mode: ipvs"))
    pod = remake_agent_pod(c)
    said = "mode 'ipvs' is not supported: kubeweft programs the Linux kernel's nftables only"

    def exited_saying_why():
        got = json.loads(c.lab.kubectl("-n", "kube-system", "get", "pod", pod, "-o", "json").stdout)
        agent = next((s for s in got["status"].get("containerStatuses") or [] if s["name"] == "agent"), {})
        ended = (agent.get("state") or {}).get("terminated") or (agent.get("lastState") or {}).get("terminated")
        if not ended:
            return None
        logs = c.lab.kubectl("-n", "kube-system", "logs", pod, "-c", "agent",
                             *(["--previous"] if "terminated" in (agent.get("lastState") or {}) else []),
                             check=False).stdout
        return (ended["exitCode"], logs) if said in logs else None
    code, logs = wait_for("the agent's exit and its reason in kubectl logs", exited_saying_why, timeout=90, interval=1.0)
    assert code == 1, logs
    # the rules it left keep serving while it is down
    assert c.probe("client", c.svc.ip, 80).outcome == "connected"
    set_config(c, shipped)
    remake_agent_pod(c)
    wait_scheduler(c, f"{c.svc.ip}:80/tcp", "random")
