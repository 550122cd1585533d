"""The CNI runtime against the real Debian reference plugins in scratch namespaces (prefix h4),
and its sequencing (order, prevResult, cache, GC, STATUS, timeout) against recording plugins."""
import ipaddress
import json
import os
import secrets
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from kubeweft.lab import netns
from kubeweft.lab.cniexec import CniError, CniRuntime, RuntimeConf, kubernetes_args, load_network_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REFERENCE_BIN = "/usr/lib/cni"
SUBNET = "10.199.7.0/24"
GATEWAY = "10.199.7.1"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


@pytest.fixture
def scratch():
    """A node netns and a pod netns of our own, removed whatever happens."""
    tag = secrets.token_hex(3)
    node, pod = f"h4-node-{tag}", f"h4-pod-{tag}"
    made = []
    try:
        for name in (node, pod):
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        yield node, pod
    finally:
        for name in made:
            _ip("netns", "del", name, check=False)


def _write_conflist(conf_dir: Path, data_dir: Path, cni_version: str = "1.0.0") -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = {"cniVersion": cni_version, "name": "h4net", "plugins": [
        {"type": "bridge", "bridge": "h4br0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "mtu": 1500,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(data_dir / "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ]}
    (conf_dir / "10-h4.conflist").write_text(json.dumps(conf))


def _reference_network(tmp_path: Path, node: str, cni_version: str = "1.0.0") -> tuple:
    """The bridge + portmap network loaded from its conflist, and a runtime that runs the
    reference plugins inside `node`."""
    _write_conflist(tmp_path / "net.d", tmp_path / "data", cni_version)
    net = load_network_config(tmp_path / "net.d")
    return net, CniRuntime(REFERENCE_BIN, tmp_path / "data", timeout=20, preexec_fn=netns.preexec(node))


def _icmp_echo(target: str, timeout: float = 2.0) -> bool:
    """One ICMP echo over a raw socket (no ping binary here); call it inside the pod's netns."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    try:
        ident, payload = os.getpid() & 0xFFFF, b"h4-echo!"            # even length: no padding
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        total = sum(struct.unpack(f"!{len(header + payload) // 2}H", header + payload))
        total = (total >> 16) + (total & 0xFFFF)
        checksum = ~(total + (total >> 16)) & 0xFFFF
        s.sendto(struct.pack("!BBHHH", 8, 0, checksum, ident, 1) + payload, (target, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data, (src, _) = s.recvfrom(1024)
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if src == target and kind == 0 and rid == ident:
                return True
        return False
    except OSError:                 # timeout, or no route (after DEL)
        return False
    finally:
        s.close()


def _in_netns(name: str, fn, *args):
    """Run fn on a helper thread that sits in netns `name` (sockets stay there)."""
    out = {}

    def body():
        with netns.entered(name):
            out["v"] = fn(*args)
    t = threading.Thread(target=body)
    t.start()
    t.join(15)
    return out.get("v")


def _nat_rules(node: str) -> str:
    return subprocess.run(["iptables-save", "-t", "nat"], check=False, capture_output=True, text=True, timeout=10,
                          preexec_fn=netns.preexec(node)).stdout


def test_add_check_del_with_reference_plugins(scratch, tmp_path):
    node, pod = scratch
    net, rt_env = _reference_network(tmp_path, node)
    cid = "h4" + secrets.token_hex(8)
    rt = RuntimeConf(cid, str(netns.path(pod)), "eth0", kubernetes_args("default", "web-0", cid))

    result = rt_env.add(net, rt)

    addr = ipaddress.ip_interface(result["ips"][0]["address"])
    assert addr.ip in ipaddress.ip_network(SUBNET) and str(addr.ip) != GATEWAY
    assert result["ips"][0]["gateway"] == GATEWAY
    names = {i["name"] for i in result["interfaces"]}
    assert "h4br0" in names and "eth0" in names
    # the pod side: the address on eth0, a default route via the gateway, the gateway answers
    pod_addrs = json.loads(_ip("-n", pod, "-j", "addr", "show", "eth0").stdout)
    assert str(addr.ip) in [a["local"] for a in pod_addrs[0]["addr_info"]]
    routes = json.loads(_ip("-n", pod, "-j", "route", "show", "default").stdout)
    assert routes and routes[0]["gateway"] == GATEWAY
    assert _in_netns(pod, _icmp_echo, GATEWAY) is True
    assert rt_env.cached_result(net, rt) == result         # cached for CHECK and DEL

    rt_env.check(net, rt)

    rt_env.delete(net, rt)
    assert _ip("-n", pod, "link", "show", "eth0", check=False).returncode != 0
    assert rt_env.cached_result(net, rt) is None
    assert not list((tmp_path / "data" / "ipam").glob(f"*/{addr.ip}"))      # address released
    assert _in_netns(pod, _icmp_echo, GATEWAY, 0.5) is not True

    rt_env.delete(net, rt)          # a second DEL (no cache, nothing there) succeeds
    with pytest.raises(CniError):   # CHECK without a cached result is an error
        rt_env.check(net, rt)


def test_port_mappings_reach_portmap_and_del_removes_them(scratch, tmp_path):
    node, pod = scratch
    net, rt_env = _reference_network(tmp_path, node)
    cid = "h4" + secrets.token_hex(8)
    rt = RuntimeConf(cid, str(netns.path(pod)), "eth0", kubernetes_args("default", "web-1", cid),
                     {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]})
    rt_env.add(net, rt)
    assert "18080" in _nat_rules(node)      # portmap got its runtimeConfig: a DNAT for the hostPort
    # (no CHECK here: portmap 1.1.1's CHECK looks for an ipv6 DNAT chain it never made)
    rt_env.delete(net, rt)
    assert "18080" not in _nat_rules(node)


def test_plugin_error_becomes_cni_error_with_the_plugins_code(scratch, tmp_path):
    node, pod = scratch
    net, rt_env = _reference_network(tmp_path, node, cni_version="9.9.9")
    rt = RuntimeConf("h4bad", str(netns.path(pod)), "eth0", kubernetes_args("default", "bad", "h4bad"))
    with pytest.raises(CniError) as e:
        rt_env.add(net, rt)
    assert e.value.code == 1 and e.value.plugin == "bridge"      # 1: incompatible CNI version
    assert "9.9.9" in e.value.details
    assert rt_env.cached_result(net, rt) is None


def test_missing_plugin_and_version(tmp_path):
    rt_env = CniRuntime(REFERENCE_BIN, tmp_path / "data", timeout=10)
    assert "1.0.0" in rt_env.version("bridge")["supportedVersions"]
    with pytest.raises(CniError) as e:
        rt_env.version("no-such-plugin")
    assert e.value.plugin == "no-such-plugin" and "failed to find plugin" in e.value.msg


# --- sequencing, against recording plugins (no network changes) ---------------------------------
RECORDER = """#!/usr/bin/env python3
import json, os, sys, time
conf = json.load(sys.stdin)
me = os.path.basename(sys.argv[0])
log = os.environ["H4_LOG"]
with open(log, "a") as f:
    f.write(json.dumps({"plugin": me, "command": os.environ["CNI_COMMAND"],
                        "env": {k: v for k, v in os.environ.items() if k.startswith(("CNI_", "H4_"))},
                        "conf": conf}) + "\\n")
if conf.get("failWith"):
    print(json.dumps({"cniVersion": conf["cniVersion"], "code": conf["failWith"], "msg": "told to fail",
                      "details": me}))
    sys.exit(1)
if conf.get("sleep"):
    time.sleep(conf["sleep"])
if os.environ["CNI_COMMAND"] == "ADD":
    res = conf.get("prevResult") or {"cniVersion": conf["cniVersion"], "ips": []}
    res = dict(res, ips=res["ips"] + [{"address": "10.0.0.%d/24" % (len(res["ips"]) + 2)}])
    print(json.dumps(res))
"""


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("rec-a", "rec-b"):
        p = bindir / name
        p.write_text(RECORDER)
        p.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.touch()

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()]
    return CniRuntime(bindir, tmp_path / "data", timeout=5, env={**os.environ, "H4_LOG": str(log)}), calls


def _net(tmp_path: Path, version: str = "1.1.0", **b_extra):
    d = tmp_path / "net.d"
    d.mkdir(exist_ok=True)
    (d / "10-rec.conflist").write_text(json.dumps({"cniVersion": version, "name": "rec", "plugins": [
        {"type": "rec-a", "capabilities": {"portMappings": True}},
        {"type": "rec-b", "capabilities": {"mac": True}, **b_extra}]}))
    (d / "20-later.conf").write_text(json.dumps({"cniVersion": version, "name": "later", "type": "rec-a"}))
    return load_network_config(d)


def test_add_chains_prev_result_and_del_runs_in_reverse_with_cache(recorder, tmp_path):
    rt_env, calls = recorder
    net = _net(tmp_path)
    assert net.name == "rec"
    rt = RuntimeConf("c1", "/run/netns/none", "eth0", kubernetes_args("ns1", "p1", "c1"),
                     {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}]})
    result = rt_env.add(net, rt)
    assert [ip["address"] for ip in result["ips"]] == ["10.0.0.2/24", "10.0.0.3/24"]
    a, b = calls()
    assert (a["plugin"], b["plugin"]) == ("rec-a", "rec-b")
    assert "prevResult" not in a["conf"] and b["conf"]["prevResult"]["ips"] == [{"address": "10.0.0.2/24"}]
    assert a["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 1, "containerPort": 2,
                                                             "protocol": "tcp"}]}
    assert "runtimeConfig" not in b["conf"]            # declares mac, which the runtime did not give
    assert a["env"]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1;" \
                                   "K8S_POD_INFRA_CONTAINER_ID=c1"
    assert a["env"]["CNI_PATH"] == str(tmp_path / "bin") and a["env"]["CNI_IFNAME"] == "eth0"

    rt_env.check(net, rt)
    rt_env.delete(net, rt)
    seq = [(c["plugin"], c["command"]) for c in calls()[2:]]
    assert seq == [("rec-a", "CHECK"), ("rec-b", "CHECK"), ("rec-b", "DEL"), ("rec-a", "DEL")]
    assert all(c["conf"]["prevResult"] == result for c in calls()[2:])

    rt_env.delete(net, rt)          # no cache any more: DEL still runs, without prevResult
    assert all("prevResult" not in c["conf"] for c in calls()[6:])


def test_plugin_error_code_and_details_and_timeout(recorder, tmp_path):
    rt_env, _ = recorder
    net = _net(tmp_path, failWith=7)
    with pytest.raises(CniError) as e:
        rt_env.add(net, RuntimeConf("c2", "/x"))
    assert (e.value.code, e.value.msg, e.value.details, e.value.plugin) == (7, "told to fail", "rec-b", "rec-b")
    slow = _net(tmp_path, sleep=30)
    t0 = time.monotonic()
    with pytest.raises(CniError) as e:
        rt_env.add(slow, RuntimeConf("c3", "/x"))
    assert time.monotonic() - t0 < 15 and "timed out" in e.value.msg and e.value.plugin == "rec-b"


def test_gc_dels_stale_attachments_and_passes_valid_ones_and_status(recorder, tmp_path):
    rt_env, calls = recorder
    net = _net(tmp_path)
    for cid in ("keep", "stale"):
        rt_env.add(net, RuntimeConf(cid, "/x", "eth0"))
    n = len(calls())
    rt_env.gc(net, [("keep", "eth0")])
    seen = calls()[n:]
    dels = [(c["plugin"], c["env"]["CNI_CONTAINERID"]) for c in seen if c["command"] == "DEL"]
    assert dels == [("rec-b", "stale"), ("rec-a", "stale")]
    gcs = [c for c in seen if c["command"] == "GC"]
    assert [c["plugin"] for c in gcs] == ["rec-a", "rec-b"]
    assert gcs[0]["conf"]["cni.dev/valid-attachments"] == [{"containerID": "keep", "ifname": "eth0"}]
    assert rt_env.cached_result(net, RuntimeConf("stale", "/x")) is None
    assert rt_env.cached_result(net, RuntimeConf("keep", "/x")) is not None

    n = len(calls())
    rt_env.status(net)
    assert [(c["plugin"], c["command"]) for c in calls()[n:]] == [("rec-a", "STATUS"), ("rec-b", "STATUS")]
    old = _net(tmp_path, version="1.0.0")
    n = len(calls())
    rt_env.status(old)                                   # STATUS does not exist before 1.1.0
    assert calls()[n:] == []
