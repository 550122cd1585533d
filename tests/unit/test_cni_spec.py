"""cni.spec and cni.errors: the CNI protocol's parsing and result schemas, pure."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubeweft.cni import spec
from kubeweft.cni.errors import CniError

ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"}


def conf(**kw) -> bytes:
    return json.dumps({"cniVersion": "1.1.0", "name": "kubeweft", "type": "kubeweft", **kw}).encode()


def code_of(fn, *args) -> int:
    with pytest.raises(CniError) as ei:
        fn(*args)
    return ei.value.code


# --- environment --------------------------------------------------------------------------------

def test_env_parses_every_variable():
    inv = spec.parse_env({**ADD_ENV, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;"
                                                 "K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c0ffee;X=y=z"})
    assert (inv.command, inv.container_id, inv.netns, inv.ifname) == ("ADD", "c0ffee", "/run/netns/x", "eth0")
    assert inv.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert inv.k8s_pod == {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0",
                           "K8S_POD_INFRA_CONTAINER_ID": "c0ffee"}
    assert inv.args["X"] == "y=z"          # split on the first '=' only
    assert spec.parse_env(spec.render_env(inv)) == inv


@pytest.mark.parametrize("missing", ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"])
def test_add_without_a_required_variable_is_code_4(missing):
    env = {k: v for k, v in ADD_ENV.items() if k != missing}
    with pytest.raises(CniError) as ei:
        spec.parse_env(env)
    assert ei.value.code == 4 and missing in ei.value.details


def test_del_needs_no_netns_and_status_needs_nothing():
    env = {k: v for k, v in ADD_ENV.items() if k != "CNI_NETNS"}
    assert spec.parse_env({**env, "CNI_COMMAND": "DEL"}).netns == ""
    assert spec.parse_env({"CNI_COMMAND": "STATUS"}).command == "STATUS"
    assert spec.parse_env({"CNI_COMMAND": "GC"}).command == "GC"


@pytest.mark.parametrize("env", [
    {**ADD_ENV, "CNI_COMMAND": "FROB"},
    {**ADD_ENV, "CNI_IFNAME": "a-very-long-ifname"},
    {**ADD_ENV, "CNI_IFNAME": "eth/0"},
    {**ADD_ENV, "CNI_IFNAME": ".."},
    {**ADD_ENV, "CNI_CONTAINERID": "-bad id"},
    {**ADD_ENV, "CNI_ARGS": "K8S_POD_NAME"},
])
def test_bad_environment_is_code_4(env):
    assert code_of(spec.parse_env, env) == 4


@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                       st.from_regex(r"[A-Za-z0-9_./-]{0,12}", fullmatch=True), max_size=6))
def test_cni_args_round_trip(d):
    raw = ";".join(f"{k}={v}" for k, v in d.items())
    assert spec.parse_args(raw) == d


# --- configuration ------------------------------------------------------------------------------

def test_config_fields_and_defaults():
    c = spec.parse_config(conf(socket="/s.sock", dataDir="/d", mtu=1400))
    assert (c.cni_version, c.name, c.type, c.socket, c.data_dir, c.bridge, c.mtu) == \
        ("1.1.0", "kubeweft", "kubeweft", "/s.sock", "/d", "kw0", 1400)
    assert spec.parse_config(conf()).socket == spec.DEFAULT_SOCKET


@pytest.mark.parametrize("data,code", [
    (b"{not json", 6),
    (b"[1,2]", 6),
    (json.dumps({"name": "n", "type": "kubeweft"}).encode(), 1),
    (conf(cniVersion="0.2.0"), 1),
    (conf(cniVersion="2.0.0"), 1),
    (json.dumps({"cniVersion": "1.0.0", "type": "kubeweft"}).encode(), 7),
    (json.dumps({"cniVersion": "1.0.0", "name": "n"}).encode(), 7),
    (conf(mtu="big"), 7),
    (conf(runtimeConfig=[1]), 7),
    (conf(bridge="a-bridge-name-too-long"), 7),
    (conf(prevResult="x"), 6),
])
def test_bad_config_codes(data, code):
    assert code_of(spec.parse_config, data) == code


@pytest.mark.parametrize("command,version,ok", [
    ("CHECK", "0.3.1", False), ("CHECK", "0.4.0", True), ("STATUS", "1.0.0", False),
    ("STATUS", "1.1.0", True), ("GC", "1.0.0", False), ("GC", "1.1.0", True), ("ADD", "0.3.0", True),
])
def test_commands_need_a_recent_enough_version(command, version, ok):
    data = conf(cniVersion=version)
    if ok:
        assert spec.parse_config(data, command).cni_version == version
    else:
        assert code_of(spec.parse_config, data, command) == 1


def test_capabilities():
    c = spec.parse_config(conf(runtimeConfig={
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
                         {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "1.2.3.4"}],
        "mac": "0A:58:0A:F4:01:05", "ips": ["10.244.1.9/24"],
        "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000}}))
    assert c.port_mappings == [spec.PortMapping(8080, 80, "tcp"), spec.PortMapping(5353, 53, "udp", "1.2.3.4")]
    assert c.mac == "0a:58:0a:f4:01:05" and c.ips == ["10.244.1.9"]
    assert c.bandwidth == {"ingressRate": 1000000, "ingressBurst": 100000}


@pytest.mark.parametrize("rc", [
    {"portMappings": [{"hostPort": 0, "containerPort": 80}]},
    {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]},
    {"mac": "zz:zz"}, {"mac": "01:00:5e:00:00:01"}, {"ips": ["fd00::1", "fd00::2"]}, {"ips": "10.0.0.1"},
    {"bandwidth": {"ingressRate": -1}},
])
def test_bad_capabilities_are_code_7(rc):
    c = spec.parse_config(conf(runtimeConfig=rc))
    with pytest.raises(CniError) as ei:
        c.port_mappings, c.mac, c.ips, c.bandwidth  # noqa: B018 - validated on access
    assert ei.value.code == 7


def test_valid_attachments_old_and_new_keys():
    new = spec.parse_config(conf(**{"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}), "GC")
    old = spec.parse_config(conf(**{"cni.dev/attachments": [{"containerID": "b", "ifname": "net1"}]}), "GC")
    null = spec.parse_config(conf(**{"cni.dev/valid-attachments": None}), "GC")
    assert spec.parse_valid_attachments(new) == {("a", "eth0")}
    assert spec.parse_valid_attachments(old) == {("b", "net1")}
    assert spec.parse_valid_attachments(null) == set()
    assert code_of(spec.parse_valid_attachments, spec.parse_config(conf(), "GC")) == 7


# --- results ------------------------------------------------------------------------------------

FULL = {
    "interfaces": [{"name": "kw0", "mac": "aa:aa:aa:aa:aa:aa"},
                   {"name": "kw1234", "mac": "bb:bb:bb:bb:bb:bb"},
                   {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "mtu": 1450, "sandbox": "/run/netns/p"}],
    "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1400}],
    "dns": {},
}


def test_result_1_1_0_keeps_mtu_and_has_no_ip_version():
    r = spec.convert_result(FULL, "1.1.0")
    assert r["cniVersion"] == "1.1.0" and r["interfaces"][2]["mtu"] == 1450
    assert r["ips"] == [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}]
    assert r["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1400}]


def test_result_1_0_0_drops_1_1_fields():
    r = spec.convert_result(FULL, "1.0.0")
    assert "mtu" not in r["interfaces"][2] and r["interfaces"][2]["sandbox"] == "/run/netns/p"
    assert "version" not in r["ips"][0] and r["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_result_0_x_has_ip_version_4(version):
    r = spec.convert_result(FULL, version)
    assert r["cniVersion"] == version
    assert r["ips"] == [{"version": "4", "address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}]
    assert set(r["interfaces"][2]) == {"name", "mac", "sandbox"}


@pytest.mark.parametrize("version", spec.SUPPORTED_VERSIONS)
def test_any_version_parses_back_to_the_same_1_1_core(version):
    back = spec.parse_result(spec.convert_result(FULL, version))
    assert back["ips"] == FULL["ips"]
    assert [i["name"] for i in back["interfaces"]] == ["kw0", "kw1234", "eth0"]


def test_render_result_appends_to_prev_result_with_shifted_indexes():
    prev = spec.parse_result({"cniVersion": "0.4.0", "interfaces": [{"name": "lo0"}],
                              "ips": [{"version": "4", "address": "192.0.2.1/32", "interface": 0}]})
    r = spec.render_result("1.0.0", FULL["interfaces"], FULL["ips"], FULL["routes"], {}, prev)
    assert [i["name"] for i in r["interfaces"]] == ["lo0", "kw0", "kw1234", "eth0"]
    assert [ip["interface"] for ip in r["ips"]] == [0, 3]


def test_version_info():
    assert spec.render_version_info("0.4.0") == {"cniVersion": "0.4.0",
                                                 "supportedVersions": list(spec.SUPPORTED_VERSIONS)}
    assert spec.render_version_info(None)["cniVersion"] == "1.1.0"
    assert spec.render_version_info("9.9.9")["cniVersion"] == "1.1.0"


def test_error_json():
    e = CniError(7, "Invalid network config", "missing name")
    assert json.loads(e.to_json("0.4.0")) == {"cniVersion": "0.4.0", "code": 7,
                                              "msg": "Invalid network config", "details": "missing name"}
    assert json.loads(CniError(11).to_json()) == {"cniVersion": "1.1.0", "code": 11, "msg": "Try again later"}


# --- CHECK --------------------------------------------------------------------------------------

OBSERVED = {"mac": "CC:CC:CC:CC:CC:CC", "addresses": ["10.244.1.5/24"],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}, {"dst": "10.244.1.0/24", "gw": ""}]}


def test_check_passes_on_the_live_state():
    assert spec.diff_check(spec.parse_result(FULL), "/run/netns/p", "eth0", OBSERVED) == []


@pytest.mark.parametrize("change,word", [
    ({"mac": "dd:dd:dd:dd:dd:dd"}, "mac"),
    ({"addresses": ["10.244.1.6/24"]}, "address"),
    ({"routes": []}, "route"),
])
def test_check_reports_each_difference(change, word):
    problems = spec.diff_check(spec.parse_result(FULL), "/run/netns/p", "eth0", {**OBSERVED, **change})
    assert len(problems) == 1 and word in problems[0]


def test_check_wants_the_interface_in_that_sandbox():
    assert spec.diff_check(spec.parse_result(FULL), "/run/netns/other", "eth0", OBSERVED)


# --- the shim's stdlib gRPC codec, against the real protobuf stubs --------------------------------

def test_shim_request_encoding_matches_protobuf():
    from kubeweft.cni import shim
    from kubeweft.proto import kubeweft_pb2

    fields = ("ADD", "c0ffee", "/run/netns/x", "eth0", "K8S_POD_NAME=p", "/opt/cni/bin", b'{"a": 1}' * 40)
    req = kubeweft_pb2.CniRequest.FromString(shim.encode_request(*fields))
    assert (req.command, req.container_id, req.netns, req.ifname, req.args, req.path, req.config) == fields
    assert shim.encode_request("STATUS", "", "", "", "", "", b"") == \
        kubeweft_pb2.CniRequest(command="STATUS").SerializeToString()


@given(st.binary(max_size=300), st.integers(1, 2**31), st.text(max_size=50), st.text(max_size=300))
def test_shim_response_decoding_matches_protobuf(result, code, msg, details):
    from kubeweft.cni import shim
    from kubeweft.proto import kubeweft_pb2

    ok = kubeweft_pb2.CniResponse(result=result).SerializeToString()
    assert shim.decode_response(ok) == (None, "", "", result)
    err = kubeweft_pb2.CniResponse(error=kubeweft_pb2.CniError(code=code, msg=msg, details=details))
    assert shim.decode_response(err.SerializeToString()) == (code, msg, details, b"")


def test_shim_hpack_integers():
    from kubeweft.cni.shim import _hpack_int
    # RFC 7541 C.1: 10 and 1337 with a 5-bit prefix, 42 with an 8-bit one
    assert _hpack_int(10, 5) == bytes([0b01010])
    assert _hpack_int(1337, 5) == bytes([0b11111, 0b10011010, 0b00001010])
    assert _hpack_int(42, 8) == bytes([42])


# --- install-cni's renderings -------------------------------------------------------------------

def test_install_renders_a_fast_script_and_the_conflist():
    from kubeweft.cni import install

    script = install.render_script("/venv/bin/python3", ["/repo", "/usr/lib/python3.11"],
                                   ["/repo/kubeweft", "/repo"])
    assert script.startswith("#!/venv/bin/python3 -IS\n")      # no site.py: tens of ms per pod
    assert "from kubeweft.cni.shim import main" in script and "'/repo'" in script
    assert "kubeweft.__path__[:] = ['/repo/kubeweft', '/repo']" in script
    conf = install.render_conflist("/run/kw/agent.sock", "/var/lib/kw/ipam")
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == "kubeweft"           # containerd 1.6/1.7 take it
    (plugin,) = conf["plugins"]
    assert plugin == {"type": "kubeweft", "socket": "/run/kw/agent.sock", "dataDir": "/var/lib/kw/ipam",
                      "bridge": "kw0", "capabilities": {"portMappings": True, "mac": True, "ips": True,
                                                        "bandwidth": True}}
    # what the runtime sends the plugin parses back into the same settings
    net = spec.parse_config(json.dumps({"cniVersion": "1.1.0", "name": "kubeweft", **plugin}))
    assert (net.socket, net.data_dir, net.bridge) == ("/run/kw/agent.sock", "/var/lib/kw/ipam", "kw0")


def test_the_shim_path_imports_neither_grpc_nor_protobuf_nor_pyroute2():
    import subprocess
    import sys

    code = (
        "import sys, io, os, json\n"
        "os.environ.update(CNI_COMMAND='STATUS')\n"
        "sys.stdin = io.TextIOWrapper(io.BytesIO(json.dumps({'cniVersion': '1.1.0', 'name': 'n', "
        "'type': 'kubeweft', 'socket': '/nonexistent/agent.sock'}).encode()))\n"
        "from kubeweft.cni import shim\n"
        "rc = shim.main()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'pyroute2', 'dataclasses'))\n"
        "print('\\n' + json.dumps({'rc': rc, 'heavy': heavy}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert '"code": 50' in proc.stdout                      # STATUS, agent down: plugin not available
    assert last == {"rc": 1, "heavy": []}


def test_a_delegated_ipam_section_is_unsupported_on_add_but_never_blocks_del():
    conf = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "kubeweft",
                       "ipam": {"type": "host-local"}}).encode()
    with pytest.raises(CniError) as e:
        spec.parse_config(conf, "ADD")
    assert e.value.code == 2 and '"host-local"' in e.value.details
    assert spec.parse_config(conf, "DEL").name == "n"
