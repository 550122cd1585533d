"""kubeweft's CNI as the lab runs it: the DaemonSet's install-cni (the frozen executable) and the
agent's conflist, the lab kubelet executing it through lab/cniexec.py in the node's filesystem
(no python3 there), the node agents serving it.

On the shared 3-node kubeweft labs, once per IP family (`klab`: ipv4, ipv6, and dual checked
over its IPv6; our pods in k8s namespace h8cni):
- every pod gets an address per family from its own node's podCIDRs, and the API, the kubelet's records
  (pods.json, the cniexec result cache), the IPAM store and the pod's netns all agree;
- the conflist is the 1.1.0 one the agent wrote (deploy/lab's cni-version), naming the socket and
  IPAM store at their paths on the node, and it is what the kubelet ran;
- a hostPort is reachable from the external host at its node's address of the family;
- deleting a pod frees its address and its veth.
On a fresh 1-node lab of our own (h8...), since it kills an agent:
- STATUS answers 0 with the agent up and 50 with it killed;
- ADD with the agent down fails with 11, the kubelet retries, and the pod becomes Ready once
  the agent is back (held down with lab.lifecycle.hold_agent, then restarted by its kubelet).
"""
from __future__ import annotations

import ipaddress
import json
import os
import time
from pathlib import Path

import pytest
from kubeweft.cni import datapath, install
from kubeweft.lab import cniexec, lifecycle
from kubeweft.lab import netns as lab_netns
from kubeweft.lab.kubelet import pluginroot, sandbox

from .waiting import wait_for

pytestmark = pytest.mark.integration

NS = "h8cni"
HOSTPORT = 19182
BRIDGE = "kw0"
IPAM_DIR = "/var/lib/kubeweft/ipam"       # the DaemonSet agent's --data-dir


def pod_yaml(name: str, node: str, namespace: str = NS, host_port: int | None = None) -> str:
    port = {"containerPort": 8080}
    if host_port:
        port["hostPort"] = host_port
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                       "spec": {"nodeName": node, "containers": [{"name": "app", "image": "lab/workload",
                                                                  "ports": [port]}]}})


def get_pod(lab, name: str, namespace: str = NS) -> dict | None:
    proc = lab.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def ready(pod: dict | None) -> bool:
    conds = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def ready_pods(lab, names, namespace: str = NS) -> dict[str, dict] | None:
    """name -> pod once every named pod is Ready, else None."""
    got = {n: get_pod(lab, n, namespace) for n in names}
    return got if all(ready(p) for p in got.values()) else None


def node_pod_cidr(lab, node: str, version: int | None = None) -> str:
    """node's podCIDR of IP `version` (default: the lab's primary family)."""
    spec = json.loads(lab.kubectl("get", "node", node, "-o", "json").stdout)["spec"]
    return lab.pick(spec["podCIDRs"], version) if version else spec["podCIDR"]


def pod_ips(pod: dict) -> list[str]:
    return [i["ip"] for i in pod["status"]["podIPs"]]


def kubelet_record(lab, node: str, namespace: str, name: str) -> dict | None:
    path = lab.cfg.node_dir(node) / "pods.json"
    try:
        entries = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return None
    return next((e for e in entries.values() if (e["namespace"], e["name"]) == (namespace, name)), None)


def cached_result(lab, node: str, container_id: str) -> dict:
    path = lab.cfg.cni_data_dir(node) / "results" / cniexec.cache_file_name("kubeweft", container_id, "eth0")
    return json.loads(path.read_text())


def node_links(lab, node: str) -> dict[str, dict]:
    out = lab.run_in(lab.cfg.node_netns(node), ["ip", "-j", "link", "show"]).stdout
    return {link["ifname"]: link for link in json.loads(out or "[]")}


def pod_addresses(lab, netns_name: str, version: int = 4) -> list[str]:
    """eth0's global addresses of IP `version` (not IPv6's link-local one)."""
    out = lab.run_in(netns_name, ["ip", "-j", f"-{version}", "addr", "show", "dev", "eth0", "scope", "global"]).stdout
    # `ip -j` keeps an empty entry for each address its filter left out
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out or "[]") for a in link["addr_info"]
            if "local" in a]


def node_ip(lab, index: int) -> str:
    """Node `index`'s underlay address of the family the test sends over."""
    return lab.cfg.node_ip6(index) if lab.version == 6 else lab.cfg.node_ip(index)


def ipam_dir(lab, node: str) -> Path:
    """The agent's IPAM store on the node (the DaemonSet's --data-dir, on its hostPath)."""
    return lab.cfg.node_host_dir(node) / IPAM_DIR.lstrip("/")


def reservation(lab, node: str, ip: str) -> str | None:
    """The container ID holding ip in node's IPAM store, or None."""
    try:
        return (ipam_dir(lab, node) / ip).read_text().split("\n")[0]
    except FileNotFoundError:
        return None


# --- on the shared 3-node lab ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def pods(klab):
    """One pod per node (the one on node2 with a hostPort), Ready; removed afterwards."""
    nodes = [klab.cfg.node_name(i) for i in range(1, klab.cfg.nodes + 1)]
    placement = {f"p{i}": n for i, n in enumerate(nodes, 1)}
    klab.kubectl("create", "namespace", NS, check=False)
    try:
        for name, node in placement.items():
            klab.kubectl("apply", "-f", "-", input=pod_yaml(name, node, host_port=HOSTPORT if node == nodes[1]
                                                            else None))
        got = wait_for("pods Ready", lambda: ready_pods(klab, placement), 90, interval=0.5)
        yield klab, placement, got
    finally:
        klab.kubectl("delete", "pod", "-n", NS, "--all", "--wait=false", check=False)
        klab.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_the_installed_conflist_is_1_1_0_and_the_kubelet_runs_it(pods):
    lab, placement, _ = pods
    for node in placement.values():
        conf_dir = lab.cfg.cni_conf_dir(node)
        assert [p.name for p in conf_dir.iterdir()] == [install.CONFLIST]
        written = json.loads((conf_dir / install.CONFLIST).read_text())
        assert written == install.render_conflist(install.DEFAULT_SOCKET, IPAM_DIR, version="1.1.0")
        assert lab.cfg.agent_socket(node).is_socket()      # where the node's /run/kubeweft is
        net = cniexec.load_network_config(conf_dir)
        assert (net.name, net.cni_version, net.plugins[0]["type"]) == ("kubeweft", "1.1.0", "kubeweft")
        # the executable is install-cni --frozen's: a link to the PyInstaller build (an ELF)
        exe = lab.cfg.cni_bin_dir(node) / "kubeweft"
        assert exe.is_symlink() and os.readlink(exe).startswith(install.FROZEN_DIR + "/")
        assert exe.read_bytes()[:4] == b"\x7fELF"
        assert (lab.cfg.cni_bin_dir(node) / "loopback").is_file()


def test_pods_get_their_nodes_podcidr_and_every_record_agrees(pods):
    lab, placement, got = pods
    seen = set()
    for name, node in placement.items():
        pod = got[name]
        ips = pod_ips(pod)
        # one address per family of the lab, the primary first, as pod.status.podIP
        assert [ipaddress.ip_address(i).version for i in ips] == list(lab.cfg.families), ips
        assert ips[0] == pod["status"]["podIP"]
        ip = lab.pick(ips)
        cidr = ipaddress.ip_network(node_pod_cidr(lab, node, lab.version))
        assert pod["spec"]["nodeName"] == node
        assert ipaddress.ip_address(ip) in cidr, (name, ip)
        assert ip not in seen
        seen.add(ip)
        rec = kubelet_record(lab, node, NS, name)
        assert rec and rec["ips"] == ips, rec
        cid = rec["containerID"]
        entry = cached_result(lab, node, cid)
        result = entry["result"]
        # what the kubelet recorded is the 1.1.0 result of the conflist's plugin
        assert entry["networkName"] == "kubeweft" and result["cniVersion"] == "1.1.0"
        assert entry["netns"] == str(lab_netns.path(rec["netns"]))
        bridge, host, inner = result["interfaces"]
        assert bridge["name"] == BRIDGE and inner["name"] == "eth0" and inner["sandbox"] == entry["netns"]
        assert host["name"] == datapath.host_veth_name(cid, "eth0")
        assert [a["address"].split("/")[0] for a in result["ips"]] == ips
        (addr,) = [a for a in result["ips"] if a["address"].split("/")[0] == ip]
        assert addr["gateway"] == str(cidr[1])
        # ... and it is what the kernel and the IPAM store hold
        assert pod_addresses(lab, rec["netns"], lab.version) == [addr["address"]]
        assert all(reservation(lab, node, i) == cid for i in ips)
        link = node_links(lab, node)[host["name"]]
        assert link.get("master") == BRIDGE and "UP" in link["flags"]


def test_hostport_is_reachable_from_the_external_host(pods):
    lab, placement, _ = pods
    node = lab.cfg.node_name(2)
    name = next(n for n, where in placement.items() if where == node)

    def probe():
        proc = lab.cli("probe", "--from", "external", "--json", "--timeout", "3",
                       lab.hostport(node_ip(lab, 2), HOSTPORT), check=False)
        r = json.loads(proc.stdout.splitlines()[0])
        return r if r["outcome"] == "connected" else None
    r = wait_for("the hostPort to answer", probe, 20, interval=1)
    assert r["pod"] == f"{NS}/{name}", r
    # another node's address does not carry it
    proc = lab.cli("probe", "--from", "external", "--json", "--timeout", "2",
                   lab.hostport(node_ip(lab, 1), HOSTPORT), check=False)
    assert json.loads(proc.stdout.splitlines()[0])["outcome"] != "connected"


def test_deleting_a_pod_frees_its_address_and_veth(pods):
    lab, placement, got = pods
    name, node = "p3", placement["p3"]
    ips = pod_ips(got[name])
    rec = kubelet_record(lab, node, NS, name)
    veth = datapath.host_veth_name(rec["containerID"], "eth0")
    assert all(reservation(lab, node, ip) for ip in ips) and veth in node_links(lab, node)
    lab.kubectl("delete", "pod", "-n", NS, name, "--wait=false")
    wait_for(f"{ips} and {veth} to be freed",
             lambda: not any(reservation(lab, node, ip) for ip in ips) and veth not in node_links(lab, node),
             60, interval=0.5)
    wait_for("the kubelet to forget the pod", lambda: kubelet_record(lab, node, NS, name) is None, 30,
             interval=0.5)
    assert not lab_netns.exists(rec["netns"])


# --- a lab of our own: the agent is killed ----------------------------------------------------------

def _status(lab, node: str) -> int:
    """The CNI STATUS of node through cniexec and the installed conflist: 0 or the error code."""
    runtime = cniexec.CniRuntime(lab.cfg.cni_bin_dir(node), lab.cfg.state_dir / "h8-status-cache",
                                 timeout=20, preexec_fn=lab_netns.preexec(lab.cfg.node_netns(node)),
                                 launcher=sandbox.plugin_launcher(lab.cfg, node), plugin_dir=pluginroot.NODE_BIN)
    try:
        runtime.status(cniexec.load_network_config(lab.cfg.cni_conf_dir(node)))
    except cniexec.CniError as e:
        return e.code
    return 0


def test_agent_down_status_50_add_11_and_the_kubelet_retries_until_it_is_back(lab_factory):
    lab = lab_factory(nodes=1, cni="kubeweft", prefix="h8")
    node = lab.cfg.node_name(1)
    sock = lab.cfg.agent_socket(node)
    wait_for("STATUS 0 from a running agent", lambda: _status(lab, node) == 0, 60, interval=0.5)
    pid = lifecycle.hold_agent(lab.name, node)         # SIGKILL; its kubelet waits to restart it
    assert sock.exists()                                # a stale socket: nobody answers on it
    assert _status(lab, node) == 50

    def reservations() -> set[str]:
        return {f.name for f in ipam_dir(lab, node).iterdir() if f.name[0].isdigit() and f.name != "last_reserved_ip"}

    def bridged() -> set[str]:
        return {n for n, link in node_links(lab, node).items() if link.get("master") == BRIDGE}
    held, wired = reservations(), bridged()           # the cluster DNS's pods
    lab.kubectl("apply", "-f", "-", input=pod_yaml("late", node, namespace="default"))

    def failing():
        conds = ((get_pod(lab, "late", "default") or {}).get("status") or {}).get("conditions") or []
        msg = next((c.get("message", "") for c in conds if c["type"] == "Ready"), "")
        return msg if "CNI error 11" in msg else None
    msg = wait_for("the pod to report ADD's error 11", failing, 30, interval=0.5)
    assert "Try again later" in msg and "kubeweft" in msg
    # nothing of the refused ADD is left: no new reservation, no new veth on the bridge
    assert reservations() == held
    assert bridged() == wired
    time.sleep(2)                                        # a retry or two, still refused
    assert not ready(get_pod(lab, "late", "default"))

    agent = lifecycle.release_agent(lab.name, node, pid)
    pod = wait_for("the pod to become Ready after the agent is back",
                   lambda: ready_pods(lab, ["late"], "default"), 60, interval=0.5)["late"]
    ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(node_pod_cidr(lab, node))
    assert reservation(lab, node, ip) == kubelet_record(lab, node, "default", "late")["containerID"]
    assert _status(lab, node) == 0
    assert lifecycle.find_agent(lab.name, None, node) == agent
