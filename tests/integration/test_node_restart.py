"""`kubeweft lab node-restart NODE` on the shared kubeweft lab: a reboot, and the node back.

    node1: c1 (client)    node2: c2 (client)    node3: r1, r2 (web, NodePort), restarted

After the restart: r1 and r2 come back (same UID, new sandbox through a CNI ADD) and answer from
the other nodes' pods and from the external host through a NodePort on node3; r1 connects to a
pod on node1 (the overlay both ways); node3's IPAM store holds exactly one reservation per pod
of node3, each the pod's IP, and no two pods of the cluster share an IP; `lab status` says
node3 is Ready; none of node3's old processes lives on, and every /run/netns entry of the lab
is a live namespace of a node or of a pod the kubelets know.
"""
from __future__ import annotations

import json
import os
import time

import pytest
from kubeweft.cni import ipam
from kubeweft.lab import lifecycle, netns, topology

from .services_helpers import CONNECTED, EXTERNAL, cluster, svc_port
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "node-restart"
NODE = "node3"
WEB = ("r1", "r2")


def _starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def node_processes(cfg, token: str) -> dict[int, str | None]:
    """PID -> start time of the lab's processes in NODE's netns and its pods' netns."""
    pods = json.loads((cfg.node_dir(NODE) / "pods.json").read_text())
    names = [cfg.node_netns(NODE)] + [p["netns"] for p in pods.values()
                                      if p.get("netns") and not p.get("hostNetwork")]
    return {pid: _starttime(pid) for pid in lifecycle.find_node_processes(cfg.name, token, names)}


def reservations(cfg) -> dict[str, str]:
    """NODE's IPAM store (the agent's --data-dir, /var/lib/kubeweft/ipam on the node):
    container ID -> address."""
    store = cfg.node_host_dir(NODE) / "var/lib/kubeweft/ipam"
    cidr = json.loads((store / "agent.json").read_text())["podCIDR"]
    return {cid: str(addr.ip) for (cid, _), addr in ipam.Allocator(store, cidr).reservations().items()}


def restart_count(c, name: str) -> int:
    return c._raw(c.core.read_namespaced_pod, name, NS)["status"]["containerStatuses"][0]["restartCount"]


def pods_of_cluster(c) -> list[dict]:
    return c._raw(c.core.list_pod_for_all_namespaces)["items"]


def test_node_restart_brings_pods_back_with_their_addresses_accounted_for(labk):
    cfg = labk.cfg
    token = json.loads(cfg.state_file.read_text())["token"]
    with cluster(labk, NS) as c:
        c.start_pods(web={name: NODE for name in WEB}, clients={"c1": "node1", "c2": "node2"})
        svc = c.service("web", [svc_port(80, 8080, name="http")], selector={"app": "web"},
                        type_="NodePort")
        c.wait_endpoints("web", 2)
        node_port = svc.node_ports["http"]
        uids = {n: c._raw(c.core.read_namespaced_pod, n, NS)["metadata"]["uid"] for n in WEB}
        restarts = {n: restart_count(c, n) for n in WEB}
        ips_before = {n: c.pod_ip(n) for n in WEB}
        old = node_processes(cfg, token)
        marker = cfg.node_host_dir(NODE) / "run" / "before-restart"
        marker.write_text("")
        assert len(old) >= 3, old        # the kubelet, the agent, r1's and r2's workloads

        t0 = time.monotonic()
        out = labk.cli("node-restart", NODE, "--timeout", "120", timeout=180).stdout
        ready_s = time.monotonic() - t0
        # the API still holds the pods' status from before the reboot (Ready, the old
        # restartCount) until the new kubelet has started their containers and reported them,
        # as on a real node: wait for that report, then for Ready
        want = {n: restarts[n] + 1 for n in WEB}
        wait_for(f"{', '.join(WEB)} reported with restartCount {want}",
                 lambda: {n: restart_count(c, n) for n in WEB} == want, timeout=90, interval=0.3)
        ips = c.wait_ready(*WEB, "c1", "c2", timeout=90)
        pods_s = time.monotonic() - t0
        print(f"\nnode-restart {NODE}: Ready after {ready_s:.1f} s ({out.strip()}); "
              f"all its pods Ready after {pods_s:.1f} s; pod IPs {ips_before} -> "
              f"{ {n: ips[n] for n in WEB} }")

        # the same pods (a reboot keeps the API objects), in new sandboxes
        assert {n: c._raw(c.core.read_namespaced_pod, n, NS)["metadata"]["uid"] for n in WEB} == uids
        # their containers ended with the node and started again in the new sandbox, once
        assert {n: restart_count(c, n) for n in WEB} == want
        # nothing of the old node lives on
        alive = [pid for pid, start in old.items() if start is not None and _starttime(pid) == start]
        assert not alive, f"processes of the old {NODE} still run: {alive}"
        known = {cfg.node_netns(n) for n in lifecycle.node_list(cfg, json.loads(cfg.state_file.read_text()))}
        known |= {cfg.underlay_netns, cfg.external_netns}
        known |= {p["netns"] for p in lifecycle.read_pods_json(cfg).values() if p.get("netns")}
        entries = topology.list_netns(cfg.netns_prefix)
        assert set(entries) <= known, f"stale /run/netns entries: {set(entries) - known}"
        assert all(netns.exists(e) for e in entries)
        assert not marker.exists(), "the node's /run was not emptied"

        # one reservation per pod of the node, each the pod's IP; no IP twice in the cluster
        everyone = pods_of_cluster(c)
        on_node = {p["status"]["podIP"] for p in everyone if p["spec"].get("nodeName") == NODE
                   and not p["spec"].get("hostNetwork") and p.get("status", {}).get("podIP")}
        held = reservations(cfg)
        assert sorted(held.values()) == sorted(on_node), (held, on_node)
        pod_ips = [p["status"]["podIP"] for p in everyone
                   if not p["spec"].get("hostNetwork") and p.get("status", {}).get("podIP")]
        assert len(pod_ips) == len(set(pod_ips)), sorted(pod_ips)

        # traffic: other nodes' pods to the restarted pods, the external host through the
        # restarted node's NodePort, and the restarted node's pod out to node1
        for src in ("c1", "c2"):
            for n in WEB:
                assert c.wait_answer(src, ips[n], 8080, timeout=20).outcome == CONNECTED
        r = c.wait_answer(EXTERNAL, cfg.node_ip(3), node_port, timeout=20)
        assert r.name in WEB
        assert c.wait_answer("r1", ips["c1"], 8080, timeout=20).outcome == CONNECTED

        status = labk.cli("status").stdout.splitlines()
        row = next(line.split() for line in status if line.split()[:1] == [NODE])
        assert row[1] == "Ready", status
    assert os.path.exists(netns.path(cfg.node_netns(NODE)))
