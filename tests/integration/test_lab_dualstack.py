"""The lab in IPv6 and dual-stack: `lab up --ip-family`, with the reference plugins, on real
kernels. One 2-node `--cni reference` lab per family (module-scoped): Node addresses, pod podIPs
and hostIPs, pod to pod across nodes over each family with the true client address, the
external host over IPv6, `lab probe` with [ADDR]:PORT, UDP answers from the address a datagram
was sent to, `lab status --json`, `lab matrix`. And a short check that a kubeweft lab comes up
dual-stack with pods holding both addresses.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest
from kubeweft.lab.probe import probe_once
from kubeweft.lab.workload import render_peer

from .conftest import KUBEWEFT, fresh_lab, unique_lab_name

NS = "default"
HOST_PORT = 8081            # the hostNetwork pod's port on node2


def pod_doc(name: str, node: str, port: int, host_network: bool = False) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
                       "spec": {"nodeName": node, "hostNetwork": host_network,
                                "containers": [{"name": "app", "image": "any",
                                                "ports": [{"containerPort": port, "protocol": "TCP"},
                                                          {"containerPort": port, "protocol": "UDP"}]}]}})


@pytest.fixture(scope="module", params=["ipv6", "dual"])
def dlab(request):
    """A 2-node reference lab of the parameter's family with pods a (node1), b (node2) and the
    hostNetwork pod h (node2), all Ready."""
    with fresh_lab(unique_lab_name(), nodes=2, cni="reference", timeout=120, ip_family=request.param) as lab:
        nodes = json.loads(lab.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        have = [[ipaddress.ip_network(c).version for c in n["spec"].get("podCIDRs") or []] for n in nodes]
        if any(v != list(lab.cfg.families) for v in have):
            pytest.fail(f"the node IPAM controller gave podCIDRs of versions {have}, not one per family "
                        f"{list(lab.cfg.families)}: the API stand-in's node IPAM is not dual-stack")
        for name, node, port, host in (("a", "node1", 80, False), ("b", "node2", 80, False),
                                       ("h", "node2", HOST_PORT, True)):
            lab.kubectl("apply", "-f", "-", input=pod_doc(name, node, port, host))
        lab.kubectl("wait", "--for=condition=Ready", "pod/a", "pod/b", "pod/h", "--timeout=60s", timeout=70)
        yield lab


def pod_status(lab, name: str) -> dict:
    return json.loads(lab.kubectl("get", "pod", name, "-o", "json").stdout)["status"]


def ips_of(lab, name: str) -> list[str]:
    return [i["ip"] for i in pod_status(lab, name)["podIPs"]]


def by_family(ips: list[str], version: int) -> str:
    return next(ip for ip in ips if ipaddress.ip_address(ip).version == version)


def probe(lab, source_netns: str, host: str, port: int, udp: bool = False) -> dict:
    import concurrent.futures
    # a worker thread enters the netns (probe_once's contract): the test's thread stays in the root one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(probe_once, source_netns, host, port, udp=udp, timeout=3.0).result()


def test_nodes_report_an_internal_ip_per_family_and_podcidrs_per_family(dlab):
    nodes = json.loads(dlab.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    for node in nodes:
        index = int(node["metadata"]["name"].removeprefix("node"))
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == list(dlab.cfg.node_internal_ips(index))
        versions = [ipaddress.ip_network(c).version for c in node["spec"]["podCIDRs"]]
        assert versions == list(dlab.cfg.families), node["spec"]


def test_pods_get_one_address_per_family_primary_first(dlab):
    fam = list(dlab.cfg.families)
    for name in ("a", "b"):
        st = pod_status(dlab, name)
        ips = [i["ip"] for i in st["podIPs"]]
        assert [ipaddress.ip_address(ip).version for ip in ips] == fam
        assert st["podIP"] == ips[0]
        assert [i["ip"] for i in st["hostIPs"]] == list(dlab.cfg.node_internal_ips(1 if name == "a" else 2))
    # a hostNetwork pod has its node's addresses
    assert ips_of(dlab, "h") == list(dlab.cfg.node_internal_ips(2))


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_pod_to_pod_across_nodes_in_every_family_with_the_true_client(dlab, proto):
    a_ips, b_ips = ips_of(dlab, "a"), ips_of(dlab, "b")
    a_netns = dlab.status()["pods"]
    a_netns = next(p["netns"] for p in a_netns if p["name"] == "a")
    for version in dlab.cfg.families:
        r = probe(dlab, a_netns, by_family(b_ips, version), 80, udp=proto == "udp")
        assert r["outcome"] == "connected" and r["pod"] == f"{NS}/b", r
        host, _, _ = r["client"].rpartition(":")
        assert host == (f"[{by_family(a_ips, version)}]" if version == 6 else by_family(a_ips, version)), r


def test_external_host_reaches_a_node_and_a_pod_over_ipv6(dlab):
    cfg = dlab.cfg
    r = probe(dlab, cfg.external_netns, cfg.node_ip6(2), HOST_PORT)
    assert r["outcome"] == "connected" and r["pod"] == f"{NS}/h", r
    assert r["client"].startswith(f"[{cfg.external_ip6}]:"), r
    r = probe(dlab, cfg.external_netns, by_family(ips_of(dlab, "b"), 6), 80)
    assert r["outcome"] == "connected" and r["pod"] == f"{NS}/b", r
    assert r["client"].startswith(f"[{cfg.external_ip6}]:"), r      # routed, not masqueraded


def test_lab_probe_takes_and_reports_ipv6_in_brackets(dlab):
    b6, a6 = by_family(ips_of(dlab, "b"), 6), by_family(ips_of(dlab, "a"), 6)
    out = dlab.cli("probe", "--from", f"{NS}/a", f"[{b6}]:80", "--json").stdout
    r = json.loads(out.splitlines()[-1])
    assert r["target"] == f"[{b6}]:80" and r["client"].startswith(f"[{a6}]:"), r
    bad = dlab.cli("probe", "--from", f"{NS}/a", f"{b6}:80", check=False)
    assert bad.returncode == 2 and "[IPV6]:PORT" in bad.stderr


@pytest.mark.parametrize("version", [4, 6])
def test_udp_answers_from_the_secondary_address_it_was_sent_to(dlab, version):
    """A second address on node2's eth0: the kernel would answer from the first one, which a
    connected client socket drops; the workload answers from the one the datagram was sent to."""
    cfg = dlab.cfg
    if version == 6 and not cfg.has_ipv6:
        pytest.skip("no IPv6 in this lab")
    extra = "192.168.56.112/24" if version == 4 else "2001:db8:56::112/64"
    node2 = cfg.node_netns("node2")
    add = ["ip", "-n", node2, "addr", "add", extra, "dev", "eth0"] + (["nodad"] if version == 6 else [])
    subprocess.run(add, check=True, timeout=10)
    try:
        host = extra.split("/")[0]
        r = probe(dlab, cfg.node_netns("node1"), host, HOST_PORT, udp=True)
        assert r["outcome"] == "connected" and r["pod"] == f"{NS}/h", r
        source = cfg.node_ip(1) if version == 4 else cfg.node_ip6(1)
        assert r["client"].rpartition(":")[0] == render_peer(source, 0).rpartition(":")[0], r
    finally:
        subprocess.run(["ip", "-n", node2, "addr", "del", extra, "dev", "eth0"], check=False, timeout=10)


def test_status_json_gives_node_addresses_and_pod_ips(dlab):
    doc = dlab.status()
    cfg = dlab.cfg
    node2 = next(n for n in doc["nodes"] if n["name"] == "node2")
    assert node2["addresses"] == ["192.168.56.12/24", "2001:db8:56::12/64"]
    assert node2["address"] == cfg.node_internal_ips(2)[0]                      # the key kept
    pods = {p["name"]: p for p in doc["pods"]}
    assert pods["a"]["ips"] == ips_of(dlab, "a") and pods["a"]["ip"] == pods["a"]["ips"][0]
    assert len(pods["b"]["ips"]) == len(cfg.families)


def test_status_table_shows_every_address_of_nodes_and_pods(dlab):
    node_table, pod_table = dlab.cli("status").stdout.strip().split("\n\n")
    nodes = {row.split()[0]: row.split() for row in node_table.splitlines()[1:]}
    pods = {row.split()[1]: row.split() for row in pod_table.splitlines()[1:]}
    cfg = dlab.cfg
    internal = list(cfg.node_internal_ips(2))           # the Node's own, primary first
    underlay = [cfg.node_ip(2), cfg.node_ip6(2)]        # an ipv6 lab's underlay keeps IPv4
    assert nodes["node2"][2] == ",".join(internal + [a for a in underlay if a not in internal]), nodes
    node2 = json.loads(dlab.kubectl("get", "node", "node2", "-o", "json").stdout)
    assert nodes["node2"][3] == ",".join(node2["spec"]["podCIDRs"]), nodes
    for name in ("a", "b"):
        assert pods[name][3] == ",".join(ips_of(dlab, name)), pods


def test_matrix_probes_every_family_all_green(dlab):
    proc = dlab.cli("matrix", "-n", NS, "--json", check=False, timeout=90)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0, [r for r in doc["results"] if r["outcome"] != "connected"]
    probed = {(r["from"], r["to"], r["proto"], 6 if r["target"].startswith("[") else 4) for r in doc["results"]}
    families = {f for *_, f in probed}
    assert families == set(dlab.cfg.families)
    assert (f"{NS}/a", f"{NS}/b", "UDP", dlab.cfg.families[-1]) in probed


def test_a_bad_ip_family_is_refused_and_builds_nothing():
    name = unique_lab_name()
    proc = subprocess.run([KUBEWEFT, "lab", "--name", name, "up", "--ip-family", "ipv5"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode != 0 and "invalid ip family 'ipv5'" in proc.stderr
    from kubeweft.lab.config import LabConfig
    from kubeweft.lab.topology import list_netns
    cfg = LabConfig(name=name)
    assert not cfg.state_dir.exists() and list_netns(cfg.netns_prefix) == []


def test_kubeweft_dual_lab_comes_up_and_pods_get_both_addresses(lab_factory):
    lab = lab_factory(nodes=2, cni="kubeweft", ip_family="dual", prefix="k")
    lab.kubectl("apply", "-f", "-", input=pod_doc("p", "node1", 80))
    lab.kubectl("wait", "--for=condition=Ready", "pod/p", "--timeout=60s", timeout=70)
    ips = ips_of(lab, "p")
    assert [ipaddress.ip_address(ip).version for ip in ips] == [4, 6]
    node1 = next(n for n in lab.status()["nodes"] if n["name"] == "node1")
    assert [ipaddress.ip_network(c).version for c in node1["podCIDRs"]] == [4, 6]
    assert any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for ip in ips[1:] for c in node1["podCIDRs"])


def test_kubectl_logs_and_exec_reach_the_kubelet_on_the_nodes_first_address(dlab):
    """The API server dials the kubelet on the Node's first InternalIP (IPv6 in an ipv6 lab)."""
    assert "listening on 80" in dlab.kubectl("logs", "a").stdout + dlab.kubectl("logs", "a").stderr
    out = dlab.kubectl("exec", "a", "--", "cat", "/etc/hostname", timeout=30).stdout
    assert out.strip() == "a"
