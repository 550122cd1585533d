"""The anti-spoofing sets hold exactly the live pods' elements after churn: DELs whose veth is
already gone (the netns was deleted first), DELs made by the executable in-process while the agent
is down, concurrent ADDs and DELs, and an agent restart, all on a real agent in scratch
namespaces, the sets read from the kernel."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubeweft.cni import antispoof, netns
from kubeweft.cni.datapath import host_veth_name
from kubeweft.cni.plugin import CniPlugin
from kubeweft.lab import netns as lab_netns

from .test_cni_conformance import ScratchNode, sh

pytestmark = pytest.mark.integration


def held_veths(node: ScratchNode) -> dict[str, set[str]]:
    """set name -> the host veths it holds elements for, from the kernel."""
    out = {}
    for name in antispoof.SETS:
        listing = json.loads(sh("ip", "netns", "exec", node.node, "nft", "-j", "list", "set",
                                "bridge", "kubeweft-cni", name))
        elems = next(o["set"] for o in listing["nftables"] if "set" in o).get("elem", [])
        out[name] = {(e["elem"]["val"] if "elem" in e else e)["concat"][0] for e in elems}
    return out


def assert_only(node: ScratchNode, live: list[str]) -> None:
    want = {host_veth_name(p, "eth0") for p in live}
    held = held_veths(node)
    # every pod has a link-local address: the IPv6 sets hold each pod too
    assert held[antispoof.SET_MACS] == want, held
    assert held[antispoof.SET_IPS] == want, held
    assert held[antispoof.SET_IPS6] == want, held


def drop_netns(node: ScratchNode, pod: str) -> None:
    """The runtime removes the sandbox first: the pod's veth goes with it."""
    subprocess.run(["ip", "netns", "del", pod], timeout=20, check=True)
    node.pods.remove(pod)


def test_sets_hold_only_live_pods_after_churn_and_agent_restart(tmp_path):
    with ScratchNode(tmp_path, pod_cidr="10.246.0.0/24", bridge="kwch") as node:
        pods = [node.new_pod() for _ in range(8)]
        for pod in pods:
            node.add(pod)
        assert_only(node, pods)
        # netns gone before the DEL
        for pod in pods[:2]:
            drop_netns(node, pod)
            rc, out, err = node.cni("DEL", pod, None)
            assert rc == 0, (out, err)
        live = pods[2:]
        assert_only(node, live)
        # the agent is down: the executable deletes in-process
        node.stop_agent()
        for pod in live[:2]:
            rc, out, err = node.cni("DEL", pod, pod)
            assert rc == 0, (out, err)
        drop_netns(node, live[1])
        live = live[2:]
        assert_only(node, live)
        node.start_agent()
        # an ADD and a DEL after the restart are one write each against the kernel's state
        rc, out, err = node.cni("DEL", live[0], live[0])
        assert rc == 0, (out, err)
        live = live[1:]
        assert_only(node, live)
        # concurrent churn: new pods added while others are deleted
        new = [node.new_pod() for _ in range(4)]
        with ThreadPoolExecutor(6) as pool:
            adds = [pool.submit(node.cni, "ADD", p, p) for p in new]
            dels = [pool.submit(node.cni, "DEL", p, p) for p in live[:2]]
            assert all(f.result()[0] == 0 for f in adds + dels), [f.result() for f in adds + dels]
        live = live[2:] + new
        assert_only(node, live)


def test_agent_start_drops_elements_of_missing_veths(tmp_path):
    """Elements whose veth no longer exists (written by an earlier agent, the veth removed while
    no agent ran) are dropped when the agent starts; live pods keep theirs."""
    with ScratchNode(tmp_path, pod_cidr="10.246.1.0/24", bridge="kwcr") as node:
        pods = [node.new_pod() for _ in range(3)]
        for pod in pods:
            node.add(pod)
        node.stop_agent()
        sh("ip", "-n", node.node, "link", "del", host_veth_name(pods[0], "eth0"))
        node.start_agent()
        assert_only(node, pods[1:])


class GateHook:
    """A pod hook that holds the ADD until released (a slow policy lookup)."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def pod_added(self, namespace: str, name: str, ips, container_id: str) -> None:
        self.entered.set()
        assert self.release.wait(20)

    def pod_deleted(self, container_id: str) -> None:
        pass


def test_a_del_that_overtakes_its_add_leaves_nothing(tmp_path):
    """The executable gave up on a slow ADD and the runtime sent DEL while the agent still ran
    the ADD: the DEL waits for it, then removes the veth, the source checks and the address."""
    node, pod = f"kwrace-{os.getpid()}", f"kwrace-{os.getpid()}-p"
    for ns in (node, pod):
        sh("ip", "netns", "add", ns)
    try:
        plugin = CniPlugin("10.246.2.0/24", tmp_path / "data", bridge="kwrc", mtu=1500)
        hook = GateHook()
        plugin.pod_hooks.append(hook)
        conf = json.dumps({"cniVersion": "1.1.0", "name": "kubeweft", "type": "kubeweft",
                           "bridge": "kwrc", "dataDir": str(tmp_path / "data")}).encode()

        def call(command: str):
            env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "cid-race", "CNI_IFNAME": "eth0",
                   "CNI_NETNS": str(lab_netns.path(pod)), "CNI_PATH": "/opt/cni/bin"}
            return netns.call_in(lab_netns.path(node), plugin.handle, env, conf, timeout=30)

        with ThreadPoolExecutor(2) as pool:
            add = pool.submit(call, "ADD")
            assert hook.entered.wait(10)
            delete = pool.submit(call, "DEL")
            time.sleep(0.5)
            waited = not delete.done()
            hook.release.set()
            add.result(30)
            delete.result(30)
        assert waited
        assert not plugin.allocator(None).reservations()
        node_links = sh("ip", "-n", node, "-o", "link")
        assert host_veth_name("cid-race", "eth0") not in node_links
        listing = sh("ip", "netns", "exec", node, "nft", "list", "table", "bridge", "kubeweft-cni")
        assert host_veth_name("cid-race", "eth0") not in listing
    finally:
        antispoof.reset()
        for ns in (pod, node):
            subprocess.run(["ip", "netns", "del", ns], timeout=20, check=False)
