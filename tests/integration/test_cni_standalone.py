"""`kubeweft install-cni --standalone`: the zipapp the DaemonSet installs on a host, run by the host's
own /usr/bin/python3 with -I (no venv, no PYTHON* variables, no user site; /usr/bin/python3 here has
no pyroute2, grpc or protobuf), in scratch namespaces (prefix h8s):

    h8s<id>-node   the node: the real agent (from the venv) serves the socket here
    h8s<id>-p<n>   one netns per pod

VERSION, ADD and DEL through a running agent, DEL with the agent down (the fallback path on the
vendored pyroute2), and the import budget against the venv script.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from kubeweft.lab import netns as lab_netns

from tests.integration.test_cni_conformance import KUBEWEFT, REFERENCE, ScratchNode, sh

pytestmark = pytest.mark.integration

HOST_PYTHON = "/usr/bin/python3"
HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_ids = itertools.count(1)


class StandaloneNode(ScratchNode):
    """A ScratchNode whose installed executable is the zipapp, run as `/usr/bin/python3 -I exe`
    with the host's PATH (subclasses install and run another form)."""

    python: tuple[str, ...] = (HOST_PYTHON, "-I")

    def install_args(self) -> list[str]:
        return ["--standalone"]

    def argv(self) -> list[str]:
        return [*self.python, str(self.bin_dir / "kubeweft")]

    def __enter__(self):
        super().__enter__()
        try:
            subprocess.run([KUBEWEFT, "install-cni", *self.install_args(), "--bin-dir", str(self.bin_dir),
                            "--conf-dir", str(self.conf_dir), "--socket", str(self.socket)],
                           check=True, timeout=60, capture_output=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def cni(self, command: str, cid: str = "", pod: str | None = None, ifname: str = "eth0",
            conf: dict | bytes | None = None, args: str = "", env: dict | None = None,
            drop: tuple = ()) -> tuple[int, dict | None, str]:
        full = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid,
                "CNI_NETNS": str(lab_netns.path(pod)) if pod else "", "CNI_IFNAME": ifname,
                "CNI_PATH": f"{self.bin_dir}:{REFERENCE}", "CNI_ARGS": args, "PATH": HOST_PATH,
                **(env or {})}
        full = {k: v for k, v in full.items() if v and k not in drop}
        data = conf if isinstance(conf, bytes) else json.dumps(conf or self.conf()).encode()
        proc = subprocess.run(self.argv(), input=data, env=full,
                              capture_output=True, timeout=30, preexec_fn=lab_netns.preexec(self.node),
                              check=False)
        out = proc.stdout.decode()
        return proc.returncode, (json.loads(out) if out.strip() else None), proc.stderr.decode()


def _tag() -> str:
    return f"h8s{os.getpid() % 100000}x{next(_ids)}"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with StandaloneNode(tmp_path_factory.mktemp("h8s-node"), pod_cidr="10.247.1.0/24", bridge="kwz",
                        tag=_tag()) as n:
        yield n


def _host_python_has(module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    proc = subprocess.run([HOST_PYTHON, "-I", "-c", code],
                          env={"PATH": HOST_PATH}, capture_output=True, timeout=30, check=False)
    return proc.returncode == 0


def test_the_standalone_executable_is_a_zipapp_for_the_hosts_python(node):
    exe = node.bin_dir / "kubeweft"
    assert exe.read_bytes().split(b"\n", 1)[0] == b"#!/usr/bin/env python3"
    assert os.access(exe, os.X_OK)
    assert [p.name for p in node.bin_dir.iterdir()] == ["kubeweft"]      # no build leftovers
    with zipfile.ZipFile(exe) as z:
        names = set(z.namelist())
        main = z.read("__main__.py").decode()
    for module in ("shim", "protowire", "spec", "protocols", "errors", "datapath", "ipam", "netns", "nft"):
        assert f"kubeweft/cni/{module}.py" in names and f"kubeweft/cni/{module}.pyc" in names, module
    assert "pyroute2/__init__.py" in names and "pyroute2/iproute/linux.py" in names
    assert not any(n.startswith(("grpc/", "google/", "kubeweft/proto/", "kubernetes/")) for n in names)
    assert "/work/" not in main and ".venv" not in main          # nothing of this machine's paths
    # the conflist: install-cni's default version, which containerd 1.6 and 1.7 accept too
    conf = json.loads((node.conf_dir / "10-kubeweft.conflist").read_text())
    assert conf["cniVersion"] == "1.0.0" and conf["plugins"][0]["socket"] == str(node.socket)


def test_version_with_the_hosts_python3_only(node):
    # run straight from its shebang, as a runtime does: env finds /usr/bin/python3 on the host PATH
    proc = subprocess.run([str(node.bin_dir / "kubeweft")], input=b'{"cniVersion": "0.4.0"}',
                          env={"CNI_COMMAND": "VERSION", "PATH": HOST_PATH}, capture_output=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"cniVersion": "0.4.0",
                                       "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    rc, out, _ = node.cni("VERSION", conf=b'{"cniVersion": "1.1.0"}')
    assert rc == 0 and out["supportedVersions"][-1] == "1.1.0"


def test_add_check_del_through_the_agent(node):
    pod = node.new_pod()
    res = node.add(pod, cid="zip1")
    (ip,) = res["ips"]
    assert res["cniVersion"] == "1.1.0" and ip["gateway"] == "10.247.1.1"
    assert node.pod_addrs(pod) == [ip["address"]]
    assert res["interfaces"][1]["name"] in node.host_veths()
    sh("ping", "-c1", "-W2", "10.247.1.1", netns=pod)
    assert node.cni("CHECK", "zip1", pod, conf=node.conf(prevResult=res))[:2] == (0, None)
    assert node.cni("STATUS")[:2] == (0, None)
    rc, out, err = node.cni("ADD", "zip1b", pod)
    assert rc != 0 and out["code"] == 101, err                 # an error code across the wire
    rc, out, err = node.cni("DEL", "zip1", pod)
    assert (rc, out) == (0, None), err
    assert node.pod_addrs(pod) == [] and "zip1" not in node.reserved().values()
    assert res["interfaces"][1]["name"] not in node.host_veths()


def test_agent_down_add_11_status_50_and_del_on_the_vendored_pyroute2(tmp_path):
    # the point of vendoring: the host's python3 has no pyroute2 of its own
    assert not _host_python_has("pyroute2"), "this test needs a /usr/bin/python3 without pyroute2"
    with StandaloneNode(tmp_path, pod_cidr="10.247.2.0/24", bridge="kwy", tag=_tag()) as n:
        pods = [n.new_pod() for _ in range(2)]
        results = [n.add(p, cid=f"down{i}", runtimeConfig={"portMappings": [
            {"hostPort": 18090 + i, "containerPort": 8080, "protocol": "tcp"}]}) for i, p in enumerate(pods)]
        ips = [r["ips"][0]["address"].split("/")[0] for r in results]

        def hostport_table() -> str:
            return sh("nft", "list", "table", "ip", "kubeweft-cni", netns=n.node)
        assert all(ip in hostport_table() for ip in ips)
        assert n.stop_agent() == 0
        rc, out, err = n.cni("ADD", "late", n.new_pod())
        assert rc != 0 and out["code"] == 11 and "agent" in out["details"], err
        rc, out, _ = n.cni("STATUS")
        assert rc != 0 and out["code"] == 50
        # DEL with the agent down: in-process, with the zipapp's datapath, IPAM and pyroute2
        rc, out, err = n.cni("DEL", "down0", pods[0])
        assert (rc, out) == (0, None), err
        assert "done in-process" in err and "failed" not in err, err
        assert results[0]["interfaces"][1]["name"] not in n.host_veths()
        assert n.pod_addrs(pods[0]) == [] and "down0" not in n.reserved().values()
        assert ips[0] not in hostport_table() and ips[1] in hostport_table()      # python-nftables
        checks = sh("nft", "list", "table", "bridge", "kubeweft-cni", netns=n.node)
        assert results[0]["interfaces"][1]["name"] not in checks           # source checks gone too
        assert results[1]["interfaces"][1]["name"] in checks
        # strictest: not even site-packages (-S): stdlib and the archive only
        n.python = (HOST_PYTHON, "-I", "-S")
        rc, out, err = n.cni("DEL", "down1", pods[1])
        assert (rc, out) == (0, None) and "done in-process" in err and "failed" not in err, err
        assert n.host_veths() == [] and n.reserved() == {}
        assert ips[1] not in hostport_table()                  # without python-nftables: the nft CLI
        assert results[1]["interfaces"][1]["name"] not in sh("nft", "list", "table", "bridge", "kubeweft-cni",
                                                             netns=n.node)
        assert n.cni("DEL", "down1", pods[1])[:2] == (0, None)             # a second DEL: fine


@pytest.mark.parametrize("size", [70_000, 400_000])
def test_configs_beyond_the_flow_control_window_without_grpc(node, size):
    """No grpc library here: the shim's own HTTP/2 client waits for the agent's WINDOW_UPDATEs."""
    assert not _host_python_has("grpc")
    pod = node.new_pod()
    conf = node.conf(padding="x" * size)
    rc, res, err = node.cni("ADD", f"big{size}", pod, conf=conf)
    assert rc == 0, err
    assert node.pod_addrs(pod) == [res["ips"][0]["address"]]
    assert node.cni("DEL", f"big{size}", pod, conf=conf)[:2] == (0, None)
    assert f"big{size}" not in node.reserved().values()


def test_answers_beyond_the_flow_control_window_without_grpc(node):
    """An ADD result past 64 KiB (a long prevResult, appended to): the shim grants the agent a
    window for it, where it used to stall until the deadline and answer 11."""
    pod = node.new_pod()
    prev = {"cniVersion": "1.1.0", "ips": [], "routes": [],
            "interfaces": [{"name": f"chained{i}", "mac": "02:00:00:00:00:01"} for i in range(3000)]}
    conf = node.conf(prevResult=prev)
    rc, res, err = node.cni("ADD", "bigresult", pod, conf=conf)
    assert rc == 0, err
    assert len(json.dumps(res)) > 100_000 and res["interfaces"][:3000] == prev["interfaces"]
    assert res["ips"][0]["interface"] == 3002                 # shifted past the chained interfaces
    assert node.cni("DEL", "bigresult", pod, conf=conf)[:2] == (0, None)


def test_forwarding_path_imports_neither_pyroute2_nor_the_datapath(node):
    # the VERSION and forwarding path loads neither pyroute2 nor the datapath
    # (docs/architecture.md, decision 1)
    proc = subprocess.run([HOST_PYTHON, "-I", "-X", "importtime", str(node.bin_dir / "kubeweft")],
                          input=b'{"cniVersion": "1.1.0"}', env={"CNI_COMMAND": "VERSION"},
                          capture_output=True, timeout=30, check=False)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines() if "|" in line}
    assert "kubeweft.cni.shim" in imported and "kubeweft.cni.spec" in imported
    assert not {"pyroute2", "kubeweft.cni.datapath", "kubeweft.cni.ipam", "grpc", "asyncio"} & imported
    # how fast each starts is bench/cni_add_del.py's business (it times the zipapp too)


def test_zipapp_has_no_path_of_its_build(node):
    """Byte-compiled with archive-relative names: a traceback names kubeweft/cni/shim.py, not a temp dir."""
    with zipfile.ZipFile(node.bin_dir / "kubeweft") as z:
        data = z.read("kubeweft/cni/shim.pyc")
    assert b"kubeweft/cni/shim.py" in data and b".build-" not in data and b"/tmp/" not in data


def test_module_paths_unchanged_for_the_script(tmp_path):
    """The default install stays the venv script (what the lab uses: faster by a few ms)."""
    subprocess.run([KUBEWEFT, "install-cni", "--bin-dir", str(tmp_path / "b"), "--conf-dir",
                    str(tmp_path / "c"), "--socket", str(tmp_path / "s.sock")],
                   check=True, timeout=30, capture_output=True)
    first = (tmp_path / "b" / "kubeweft").read_text().splitlines()[0]
    assert first.startswith("#!") and first.endswith(" -IS") and ".venv" in first
    assert Path(first[2:].split()[0]).exists()
