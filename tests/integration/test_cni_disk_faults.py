"""The IPAM store full (ENOSPC) or read-only (EROFS), through the real executable and agent: ADD
fails with the CNI's I/O failure (code 5) naming the fault, leaving no veth and no reservation;
DEL still succeeds; ADD works again once the disk does.

The faults are real: the agent runs under `unshare --mount --propagation slave` with a 64 KiB
tmpfs over its data dir, mounted in that namespace only; the test fills it or remounts it
read-only from inside that namespace (nsenter -m). Slave, not private: the pods' netns bind
mounts made in /run/netns after the agent starts must reach it, and a slave sends nothing back,
so the machine's mounts are never touched.
"""
from __future__ import annotations

import subprocess

import pytest
from kubeweft.lab import netns as lab_netns

from .test_cni_conformance import ScratchNode, sh

pytestmark = pytest.mark.integration

MOUNT_TMPFS = 'mkdir -p "$1" && mount -t tmpfs -o size=64k,mode=0700 kwipam "$1" && shift && exec "$@"'


class FaultyDiskNode(ScratchNode):
    """A ScratchNode whose agent sees its IPAM dir on a small tmpfs in its own mount namespace."""

    def __init__(self, tmp) -> None:
        data_dir = tmp / "run" / "cni" / "data"
        super().__init__(tmp, pod_cidr="10.246.0.0/28", bridge="kwd",
                         agent_prefix=("unshare", "--mount", "--propagation", "slave", "--",
                                       "sh", "-c", MOUNT_TMPFS, "sh", str(data_dir)))

    def in_mounts(self, *argv: str, check: bool = True) -> str:
        """argv in the agent's mount namespace (where the tmpfs is)."""
        proc = subprocess.run(["nsenter", "-t", str(self.agent.pid), "-m", "--", *argv],
                              capture_output=True, text=True, timeout=20, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} -> {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def store(self) -> list[str]:
        """The names in the IPAM dir, as the agent sees it."""
        return sorted(self.in_mounts("ls", "-A", str(self.data_dir)).split())

    def addresses(self) -> list[str]:
        return [n for n in self.store() if n[0].isdigit()]


@pytest.fixture
def disk_node(tmp_path):
    with FaultyDiskNode(tmp_path) as n:
        assert "kwipam" in n.in_mounts("findmnt", "-n", "-o", "SOURCE", str(n.data_dir))
        yield n


def _assert_add_fails_cleanly(node: FaultyDiskNode, pod: str, words: str) -> None:
    before_veths, before_store = node.host_veths(), node.store()
    rc, out, err = node.cni("ADD", pod, pod)
    assert rc != 0 and out is not None, (rc, out, err)
    assert out["code"] == 5 and words in out["msg"], out
    assert node.host_veths() == before_veths                 # no veth
    assert node.store() == before_store                      # no reservation, no temp file
    assert node.pod_addrs(pod) == [] and "eth0" not in sh("ip", "-n", pod, "link")
    rc, out, err = node.cni("DEL", pod, pod)                 # the runtime's DEL after a failed ADD
    assert rc == 0, (out, err)


def test_ipam_dir_full(disk_node):
    node = disk_node
    running, blocked = node.new_pod(), node.new_pod()
    node.add(running)
    node.in_mounts("sh", "-c", f"cat /dev/zero > {node.data_dir}/fill", check=False)
    assert node.in_mounts("df", "--output=avail", str(node.data_dir)).split()[-1] == "0"

    _assert_add_fails_cleanly(node, blocked, "is full (ENOSPC)")

    rc, out, err = node.cni("DEL", running, running)         # freeing needs no space
    assert rc == 0, (out, err)
    assert node.addresses() == [] and node.host_veths() == []

    node.in_mounts("rm", f"{node.data_dir}/fill")
    assert node.add(blocked)["ips"][0]["address"].startswith("10.246.0.")
    assert len(node.addresses()) == 1 and len(node.host_veths()) == 1


def test_ipam_dir_read_only(disk_node):
    node = disk_node
    running, blocked = node.new_pod(), node.new_pod()
    node.add(running)
    held = node.addresses()
    node.in_mounts("mount", "-o", "remount,ro", str(node.data_dir))

    _assert_add_fails_cleanly(node, blocked, "is read-only (EROFS)")

    # DEL succeeds: the veth goes; the address cannot be freed on a read-only disk, and is freed
    # by the next GC once the disk is writable again
    rc, out, err = node.cni("DEL", running, running)
    assert rc == 0, (out, err)
    assert node.host_veths() == [] and node.addresses() == held
    assert "address not freed" in node.agent_log()

    node.in_mounts("mount", "-o", "remount,rw", str(node.data_dir))
    rc, out, err = node.cni("GC", conf=node.conf(**{"cni.dev/valid-attachments": []}))
    assert rc == 0, (out, err)
    assert node.addresses() == []
    assert node.add(blocked)["ips"][0]["address"].startswith("10.246.0.")
    assert lab_netns.exists(blocked)
