"""`kubeweft install-cni --frozen`: the PyInstaller build (kubeweft.cni.freeze, made here from this
venv) that the DaemonSet installs on nodes without python3, run where no Python is visible: each
call goes through `unshare --mount` with tmpfs over /usr/lib/python3 and /usr/lib/python3.11 and
/dev/null over /usr/bin/python3.11, inside that private mount namespace only. Scratch network
namespaces (prefix h12f): the real agent (from the venv) in the node netns, one netns per pod.

VERSION, ADD/CHECK/STATUS/DEL through the agent, and with the agent down ADD 11, STATUS 50 and
DEL in-process on the bundled pyroute2 and python-nftables (the hostPort rule goes too).
"""
from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest
from kubeweft.cni import freeze

from tests.integration.test_cni_conformance import REFERENCE, sh
from tests.integration.test_cni_standalone import HOST_PATH, StandaloneNode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# run "$@" in a mount namespace of its own where the host's Python cannot be found or executed
WITHOUT_PYTHON = ("mount -t tmpfs none /usr/lib/python3 && mount -t tmpfs none /usr/lib/python3.11 && "
                  "mount --bind /dev/null /usr/bin/python3.11 && exec \"$@\"")
_ids = itertools.count(1)


def without_python(*argv: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", WITHOUT_PYTHON, "sh", *argv]


@pytest.fixture(scope="module")
def frozen_build(tmp_path_factory) -> Path:
    return freeze.build(tmp_path_factory.mktemp("h12f-build") / "kubeweft")


class FrozenNode(StandaloneNode):
    """A scratch node whose bin dir holds the frozen install, each call run without Python."""

    def __init__(self, tmp: Path, build: Path, **kw) -> None:
        super().__init__(tmp, **kw)
        self.build = build

    def install_args(self) -> list[str]:
        return ["--frozen", str(self.build), "--loopback", str(REFERENCE / "loopback")]

    def argv(self) -> list[str]:
        return without_python(str(self.bin_dir / "kubeweft"))


def _tag() -> str:
    return f"h12f{os.getpid() % 100000}x{next(_ids)}"


@pytest.fixture(scope="module")
def node(tmp_path_factory, frozen_build):
    with FrozenNode(tmp_path_factory.mktemp("h12f-node"), frozen_build, pod_cidr="10.247.5.0/24",
                    bridge="kwf", tag=_tag()) as n:
        yield n


def test_no_python_is_visible_where_the_calls_run():
    proc = subprocess.run(without_python("python3", "-c", "print(1)"), env={"PATH": HOST_PATH},
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode != 0 and proc.stdout == b""
    # the root mount namespace is untouched
    assert "tmpfs /usr/lib/python3 " not in Path("/proc/self/mounts").read_text()


def test_the_install_is_a_link_into_a_build_folder_with_its_interpreter(node):
    exe = node.bin_dir / "kubeweft"
    target = os.readlink(exe)
    assert exe.is_symlink() and target.startswith("kubeweft.d/") and not os.path.isabs(target)
    assert exe.read_bytes()[:4] == b"\x7fELF"
    internal = exe.resolve().parent / "_internal"
    names = {p.name for p in internal.iterdir()}
    assert {"libpython3.11.so.1.0", "libnftables.so.1", "pyroute2", "nftables"} <= names, names
    assert not {"grpc", "google", "kubernetes", "jsonschema"} & names
    assert {p.name for p in node.bin_dir.iterdir()} >= {"kubeweft", "kubeweft.d", "loopback"}


def test_version_without_python(node):
    rc, out, err = node.cni("VERSION", conf=b'{"cniVersion": "1.0.0"}')
    assert rc == 0, err
    assert out == {"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_add_check_status_del_through_the_agent_without_python(node):
    pod = node.new_pod()
    res = node.add(pod, cid="frz1", version="1.0.0")
    (ip,) = res["ips"]
    assert res["cniVersion"] == "1.0.0" and ip["gateway"] == "10.247.5.1"
    assert node.pod_addrs(pod) == [ip["address"]]
    sh("ping", "-c1", "-W2", "10.247.5.1", netns=pod)
    assert node.cni("CHECK", "frz1", pod, conf=node.conf("1.0.0", prevResult=res))[:2] == (0, None)
    assert node.cni("STATUS")[:2] == (0, None)
    rc, out, err = node.cni("DEL", "frz1", pod, conf=node.conf("1.0.0"))
    assert (rc, out) == (0, None), err
    assert node.pod_addrs(pod) == [] and "frz1" not in node.reserved().values()


def test_agent_down_add_11_status_50_and_del_in_process_on_the_bundled_libraries(tmp_path, frozen_build):
    with FrozenNode(tmp_path, frozen_build, pod_cidr="10.247.6.0/24", bridge="kwg", tag=_tag()) as n:
        pod = n.new_pod()
        res = n.add(pod, cid="down0", runtimeConfig={"portMappings": [
            {"hostPort": 18190, "containerPort": 8080, "protocol": "tcp"}]})
        ip = res["ips"][0]["address"].split("/")[0]
        assert ip in sh("nft", "list", "table", "ip", "kubeweft-cni", netns=n.node)
        assert n.stop_agent() == 0
        rc, out, err = n.cni("ADD", "late", n.new_pod())
        assert rc != 0 and out["code"] == 11 and "agent" in out["details"], err
        rc, out, _ = n.cni("STATUS")
        assert rc != 0 and out["code"] == 50
        rc, out, err = n.cni("DEL", "down0", pod)
        assert (rc, out) == (0, None), err
        assert "done in-process" in err and "failed" not in err, err
        assert n.host_veths() == [] and n.pod_addrs(pod) == [] and n.reserved() == {}
        assert ip not in sh("nft", "list", "table", "ip", "kubeweft-cni", netns=n.node)
