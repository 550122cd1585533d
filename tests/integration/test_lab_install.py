"""kubeweft on the lab as its users install it (`kubeweft lab up`: nodes without a CNI, then
`kubectl apply -k deploy/lab`), upgraded and uninstalled as they would, on the shared `labk`:

- the DaemonSet is rolled out (the real `kubectl rollout status`), every node is Ready, each
  node's agent is the agent container of the DaemonSet's pod there, its socket is where the
  conflist says as the CNI executable sees the node, the executable is the frozen build;
- the kubelet runs CNI plugins where the machine's python3 is not: a python script plugin
  fails there, the frozen executable answers;
- the kubernetes Service's ClusterIP reaches the API server through kubeweft's rules alone: on
  `lab2` (reference plugins, no service proxy) it reaches nothing;
- `kubectl rollout restart ds/kubeweft` under steady new connections to a ClusterIP from a pod
  and to a NodePort from the external host: none fails, no pod changes address;
- the uninstall: `kubectl delete -k deploy/lab`, then `kubeweft cleanup --datapath` on each
  node (the command deploy/base's docs give; a cleanup DaemonSet would need its own apply,
  wait and delete, and still run this same code) leaves no kubeweft nftables table, kw*
  link, overlay route, conflist or executable; installed again, the lab is as before.
  Last in this file: it takes kubeweft off the shared lab for a moment.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import stat
import sys
import threading
import time

import pytest
from kubeweft.cni import install as cni_install
from kubeweft.lab import cniexec, install, lifecycle, netns
from kubeweft.lab.kubelet import pluginroot, sandbox

from .conftest import KUBEWEFT
from .services_helpers import CONNECTED, EXTERNAL, cluster, web_ports
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

NS = "h12-install"
RATE = 10                   # new connections per second, per stream
ROLLOUT_TIMEOUT = 240


def tcp_connects(ns: str, host: str, port: int, timeout: float = 2.0) -> bool:
    with netns.entered(ns):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return True
        except OSError:
            return False


def node_names(lab) -> list[str]:
    return [lab.cfg.node_name(i) for i in range(1, lab.cfg.nodes + 1)]


def kubeweft_pods(lab) -> dict[str, dict]:
    """node -> the DaemonSet's pod there."""
    items = json.loads(lab.kubectl("get", "pods", "-n", "kube-system", "-l", "app.kubernetes.io/name=kubeweft",
                                   "-o", "json").stdout)["items"]
    return {p["spec"]["nodeName"]: p for p in items}


@pytest.fixture(scope="module")
def c(labk):
    with cluster(labk, NS) as cl:
        cl.start_pods(web={"web-2": "node2", "web-3": "node3"}, clients={"client1": "node1"})
        cl.svc = cl.service("web", web_ports(), selector={"app": "web"}, type_="NodePort")
        cl.wait_endpoints("web", 2)
        cl.wait_answer("client1", cl.svc.ip, 80)
        yield cl


def test_lab_up_installed_kubeweft_with_its_daemonset(labk):
    out = labk.kubectl("rollout", "status", "ds/kubeweft", "-n", "kube-system", "--timeout=10s").stdout
    assert "successfully rolled out" in out, out
    nodes = json.loads(labk.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert all(any(cond["type"] == "Ready" and cond["status"] == "True" for cond in n["status"]["conditions"])
               for n in nodes)
    pods = kubeweft_pods(labk)
    assert sorted(pods) == node_names(labk)
    for node, pod in pods.items():
        # the agent is the container the node's kubelet started for that pod
        pid = lifecycle.find_agent(labk.name, None, node)
        entry = json.loads((labk.cfg.node_dir(node) / "pods.json").read_text())[pod["metadata"]["uid"]]
        assert pid in (entry.get("pids") or [entry.get("pid")]), (pid, entry)
        # the conflist names the node's /run/kubeweft/agent.sock: the hostPath volume's socket
        conf = json.loads((labk.cfg.cni_conf_dir(node) / cni_install.CONFLIST).read_text())
        assert conf["plugins"][0]["socket"] == cni_install.DEFAULT_SOCKET
        assert stat.S_ISSOCK(labk.cfg.agent_socket(node).stat().st_mode)
        exe = labk.cfg.cni_bin_dir(node) / cni_install.EXECUTABLE
        assert os.readlink(exe).startswith(cni_install.FROZEN_DIR + "/") and exe.read_bytes()[:4] == b"\x7fELF"


def test_cni_plugins_run_where_the_machines_python3_is_not(labk, tmp_path):
    node = "node1"
    bin_dir = labk.cfg.cni_bin_dir(node)
    answer = json.dumps({"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]})
    scripts = {"h12-venv-py": sys.executable, "h12-usr-py": "/usr/bin/python3"}
    for name, python in scripts.items():
        (bin_dir / name).write_text(f"#!{python}\nprint({answer!r})\n")
        (bin_dir / name).chmod(0o755)
    inside = netns.preexec(labk.cfg.node_netns(node))
    on_node = cniexec.CniRuntime(bin_dir, tmp_path, timeout=20, preexec_fn=inside,
                                 launcher=sandbox.plugin_launcher(labk.cfg, node), plugin_dir=pluginroot.NODE_BIN)
    on_machine = cniexec.CniRuntime(bin_dir, tmp_path, timeout=20, preexec_fn=inside)
    try:
        for name in scripts:
            assert on_machine.version(name)["supportedVersions"] == ["1.0.0"]     # a valid plugin
            with pytest.raises(cniexec.CniError) as e:
                on_node.version(name)
            print(f"{name} in the node's filesystem: {e.value}")
            assert f"exec {pluginroot.NODE_BIN}/{name}" in str(e.value)
        assert "1.0.0" in on_node.version(cni_install.EXECUTABLE)["supportedVersions"]
    finally:
        for name in scripts:
            (bin_dir / name).unlink(missing_ok=True)


def test_the_kubernetes_service_reaches_the_api_only_through_kubeweft(labk, lab2):
    assert tcp_connects(labk.cfg.node_netns("node1"), "10.96.0.1", 443)
    assert not tcp_connects(lab2.cfg.node_netns("node1"), "10.96.0.1", 443, timeout=1.0)


class Stream:
    """New connections at RATE per second from `ns` to host:port until stopped."""

    def __init__(self, ns: str, host: str, port: int) -> None:
        self.ns, self.host, self.port = ns, host, port
        self.results: list[dict] = []
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        from kubeweft.lab import probe
        futs, t0, i = [], time.monotonic(), 0
        while not self._stop.is_set():
            futs.append(self._pool.submit(probe.probe_once, self.ns, self.host, self.port, timeout=3.0))
            i += 1
            self._stop.wait(max(0.0, t0 + i / RATE - time.monotonic()))
        self.results = [f.result(timeout=30) for f in futs]

    def stop(self) -> list[dict]:
        self._stop.set()
        self._t.join(60)
        self._pool.shutdown()
        return self.results


def pod_addresses(lab) -> dict[str, str]:
    items = json.loads(lab.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["status"].get("podIP")
            for p in items if not p["spec"].get("hostNetwork")}


def test_rollout_restart_under_new_connections_fails_none(c):
    before_pods = kubeweft_pods(c.lab)
    before_addresses = pod_addresses(c.lab)
    np = c.svc.node_ports["http"]
    streams = {"ClusterIP from client1": Stream(c.source_netns("client1"), c.svc.ip, 80),
               "NodePort from the external host": Stream(c.source_netns(EXTERNAL), c.cfg.node_ip(2), np)}
    t0 = time.monotonic()
    try:
        time.sleep(1.0)
        c.lab.kubectl("rollout", "restart", "ds/kubeweft", "-n", "kube-system")
        out = c.lab.kubectl("rollout", "status", "ds/kubeweft", "-n", "kube-system",
                            f"--timeout={ROLLOUT_TIMEOUT}s", timeout=ROLLOUT_TIMEOUT + 30).stdout
        took = time.monotonic() - t0
        time.sleep(1.0)
    finally:
        results = {what: s.stop() for what, s in streams.items()}
    assert "successfully rolled out" in out, out
    after_pods = kubeweft_pods(c.lab)
    # every node has a new pod of the DaemonSet, its agent running
    assert all(after_pods[n]["metadata"]["uid"] != before_pods[n]["metadata"]["uid"] for n in before_pods)
    assert all(lifecycle.find_agent(c.lab.name, None, n) for n in before_pods)
    for what, rs in results.items():
        failed = [r for r in rs if r["outcome"] != CONNECTED]
        print(f"rollout restart ({took:.1f} s): {what}: {len(rs)} new connections tried, {len(failed)} failed")
        assert len(rs) >= RATE * 5, (what, len(rs))
        assert not failed, f"{what}: {len(failed)} of {len(rs)} failed: {failed[:3]}"
    after_addresses = pod_addresses(c.lab)
    assert {k: v for k, v in after_addresses.items() if k in before_addresses} == before_addresses


def node_datapath(lab, node: str) -> dict[str, list[str]]:
    """What of kubeweft is in node's kernel and CNI dirs."""
    ns = lab.cfg.node_netns(node)
    tables = json.loads(lab.run_in(ns, ["nft", "-j", "list", "tables"]).stdout)["nftables"]
    links = json.loads(lab.run_in(ns, ["ip", "-j", "link", "show"]).stdout)
    routes = lab.run_in(ns, ["ip", "-4", "route", "show", "proto", "175"]).stdout.splitlines()
    return {"tables": [t["table"]["name"] for t in tables if "table" in t and t["table"]["name"].startswith("kubeweft")],
            "links": [link["ifname"] for link in links if link["ifname"].startswith("kw")],
            "routes": routes,
            "files": sorted(p.name for d in (lab.cfg.cni_conf_dir(node), lab.cfg.cni_bin_dir(node))
                            for p in d.iterdir() if p.name.startswith(("10-kubeweft", "kubeweft")))}


def test_uninstall_leaves_no_kubeweft_on_any_node_and_it_installs_again(c):
    lab, nodes = c.lab, node_names(c.lab)
    assert all(node_datapath(lab, n)["tables"] and node_datapath(lab, n)["links"] for n in nodes)
    # no workload may keep a veth on kubeweft's bridge: the pods go first (their controllers make
    # them again, wired once kubeweft is back)
    for key in pod_addresses(lab):
        namespace, name = key.split("/")
        lab.kubectl("delete", "pod", "-n", namespace, name, "--wait=true", "--timeout=60s", timeout=90)
    try:
        lab.kubectl("delete", "-k", str(install.OVERLAY), "--wait=true", "--timeout=90s", timeout=120)
        wait_for("every agent gone", lambda: not any(lifecycle.find_agent(lab.name, None, n) for n in nodes), 60)
        for node in nodes:
            proc = lab.cli("node-exec", node, "--", KUBEWEFT, "cleanup", "--datapath",
                           "--bin-dir", str(lab.cfg.cni_bin_dir(node)), "--conf-dir", str(lab.cfg.cni_conf_dir(node)))
            print(f"{node}: {proc.stdout.strip()}")
        left = {n: node_datapath(lab, n) for n in nodes}
        assert all(not any(v.values()) for v in left.values()), left
    finally:
        lifecycle.install_kubeweft(lab.cfg, nodes, {}, time.monotonic() + 180)
    assert all(node_datapath(lab, n)["tables"] for n in nodes)
    ips = c.start_pods(web={"web-again": "node2"}, clients={"client-again": "node1"})
    assert ips["client-again"].startswith("10.244.")
    c.wait_endpoints("web", 1)
    c.wait_answer("client-again", c.svc.ip, 80)

