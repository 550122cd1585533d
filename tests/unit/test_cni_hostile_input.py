"""cni.spec against hostile input: one regression test for each hole the CNI fuzzer
(tests/integration/test_cni_fuzz.py) or its oracle found. Pure parsing, no process."""
from __future__ import annotations

import json

import pytest
from kubeweft.cni import spec
from kubeweft.cni.errors import CniError

ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}


def conf(**kw) -> dict:
    return {"cniVersion": "1.1.0", "name": "kubeweft", "type": "kubeweft", **kw}


def code(fn, *args) -> int:
    with pytest.raises(CniError) as ei:
        fn(*args)
    return ei.value.code


# --- stdin --------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_json_is_a_decoding_failure_not_a_crash(depth):
    # the C decoder raises RecursionError past ~1,000 levels: the shim printed a traceback, no JSON
    deep = "[" * depth + "]" * depth
    data = json.dumps(conf(x="DEEP")).replace('"DEEP"', deep).encode()
    assert code(spec.parse_config, data) == 6
    assert spec.peek_version(data) is None
    assert spec.peek_version(deep.encode()) is None


@pytest.mark.parametrize("data", [
    json.dumps(conf()).encode("utf-16"),                 # json.loads(bytes) alone takes UTF-16
    json.dumps(conf()).encode("utf-32"),
    b"\xef\xbb\xbf" + json.dumps(conf()).encode(),        # a UTF-8 BOM
    json.dumps(conf()).replace("kubeweft", "kubeweft\xe9").encode("latin-1"),
    json.dumps(conf()).encode() + b" {}",
])
def test_stdin_is_one_json_value_in_utf8(data):
    assert code(spec.parse_config, data) == 6


# --- the environment ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,value", [("CNI_COMMAND", "ADD\udcff"), ("CNI_CONTAINERID", "c0ffee\udcff"),
                                        ("CNI_NETNS", "/run/netns/x\udcff"), ("CNI_IFNAME", "eth\udcff"),
                                        ("CNI_ARGS", "A=\udcff"), ("CNI_PATH", "/opt/cni\udcff")])
def test_a_variable_that_is_not_utf8_is_code_4(name, value):
    # os.environ keeps such bytes as lone surrogates; encoding them for the agent raised
    # UnicodeEncodeError: an internal error (100) instead of 4
    with pytest.raises(CniError) as ei:
        spec.parse_env({**ADD_ENV, name: value})
    assert ei.value.code == 4 and f"{name} is not valid UTF-8" in ei.value.details


@pytest.mark.parametrize("cid", ["c0ffee\n", "abc\n"])
def test_a_container_id_with_a_trailing_newline_is_refused(cid):
    # "$" matched before a final newline; the IPAM record "cid\n\nifname" was then unreadable
    assert code(spec.parse_env, {**ADD_ENV, "CNI_CONTAINERID": cid}) == 4


def test_a_network_name_with_a_trailing_newline_is_refused():
    assert code(spec.parse_config, json.dumps(conf(name="kubeweft\n"))) == 7


@pytest.mark.parametrize("ifname", ["\u00e9" * 8, "\u4e2d" * 6, "a\u00e0", "eth\u00a00"])
def test_interface_names_are_checked_in_bytes_as_the_kernel_does(ifname):
    # 8 characters but 16 bytes; "à" is c3 a0, and the kernel's isspace() takes 0xa0
    assert code(spec.parse_env, {**ADD_ENV, "CNI_IFNAME": ifname}) == 4
    assert code(spec.parse_config, json.dumps(conf(bridge=ifname))) == 7


def test_interface_names_the_kernel_takes_still_pass():
    for ifname in ("eth0", "a" * 15, "\u00e9" * 7, "net-1.2_x"):
        assert spec.parse_env({**ADD_ENV, "CNI_IFNAME": ifname}).ifname == ifname


# --- configuration fields -----------------------------------------------------------------------

@pytest.mark.parametrize("key", ["socket", "dataDir", "logFile"])
@pytest.mark.parametrize("value", ["relative/path", "./x", "/tmp/nul\u0000byte", "/tmp/lone\ud800"])
def test_paths_of_the_plugin_are_absolute_utf8_and_nul_free(key, value):
    # relative paths meant the shim's and the agent's working directories; a NUL or a lone
    # surrogate raised ValueError out of open() and connect(): an internal error
    assert code(spec.parse_config, json.dumps(conf(**{key: value}))) == 7


def test_a_socket_path_longer_than_sun_path_is_refused():
    # connect() failed with "AF_UNIX path too long", which the shim answered with 11, try again
    assert code(spec.parse_config, json.dumps(conf(socket="/" + "s" * 107))) == 7
    assert spec.parse_config(json.dumps(conf(socket="/" + "s" * 106))).socket == "/" + "s" * 106


@pytest.mark.parametrize("prev", [
    {"interfaces": [{"name": 5}]},
    {"interfaces": [{"name": "eth0", "mac": ["x"]}]},
    {"interfaces": [{"name": "eth0", "mtu": "1500"}]},
    {"interfaces": [{"name": "eth0", "mtu": True}]},
    {"ips": [{"address": "10.0.0.5"}]},                   # not a CIDR
    {"ips": [{"address": "10.0.0.5/33"}]},
    {"ips": [{"address": "10.0.0.5/24", "gateway": "nope"}]},
    {"ips": [{"address": "10.0.0.5/24", "interface": "0"}]},
    {"routes": [{"dst": "nope"}]},
    {"routes": [{"dst": "0.0.0.0/0", "gw": 5}]},
    {"routes": [{"dst": "0.0.0.0/0", "table": 1.5}]},
    {"dns": {"nameservers": "10.0.0.10"}},
    {"dns": ["x"]},
    {"interfaces": {}},
])
def test_prev_result_is_typed_as_libcni_decodes_it(prev):
    # CHECK compared prevResult's mac with .lower(), and ADD passed the garbage on in its result
    assert code(spec.parse_config, json.dumps(conf(prevResult={"cniVersion": "1.1.0", **prev}))) == 6


def test_a_typed_prev_result_still_parses_with_nulls_and_unknown_fields():
    prev = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "mac": None, "x": 1}],
            "ips": [{"version": "4", "address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.0.0.10"]}}
    res = spec.parse_config(json.dumps(conf(prevResult=prev))).prev_result
    assert res["interfaces"] == [{"name": "eth0", "x": 1}]
    assert res["ips"] == [{"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0}]


# --- capabilities and CNI_ARGS ------------------------------------------------------------------

@pytest.mark.parametrize("mapping", [
    {"hostPort": 80, "containerPort": 80, "protocol": 6},
    {"hostPort": 80, "containerPort": 80, "protocol": ["tcp"]},
    {"hostPort": 80, "containerPort": 80, "hostIP": "garbage"},
    {"hostPort": 80, "containerPort": 80, "hostIP": 5},
    {"hostPort": True, "containerPort": 80},
])
def test_port_mappings_are_checked_before_anything_is_claimed(mapping):
    assert code(spec.parse_port_mappings, [mapping]) == 7


def test_port_mappings_keep_the_kubelet_defaults():
    got = spec.parse_port_mappings([{"hostPort": 80, "containerPort": 8080, "protocol": None, "hostIP": ""},
                                    {"hostPort": 81, "containerPort": 81, "protocol": "UDP", "hostIP": "::1"}])
    assert got == [spec.PortMapping(80, 8080, "tcp", ""), spec.PortMapping(81, 81, "udp", "::1")]


@pytest.mark.parametrize("ips", [["10.0.0.5/garbage"], ["10.0.0.5/33"], ["\u0661\u0660.0.0.1"], ["fd00::5/129"],
                                 ["10.0.0.5", "10.0.0.6"], ["fd00::5", "fd00::6"]])
def test_runtime_config_ips_are_addresses_one_per_family(ips):
    assert code(spec.parse_ips, ips) == 7


def test_runtime_config_ips_take_one_address_of_each_family():
    assert spec.parse_ips(["10.0.0.5/24", "fd00::5/64"]) == ["10.0.0.5", "fd00::5"]


@pytest.mark.parametrize("bandwidth", [{"ingressRate": True}, {"egressBurst": 2**35}, {"ingressRate": 10**30},
                                       {"egressRate": 1.5}])
def test_bandwidth_values_are_integers_tbf_can_hold(bandwidth):
    # a burst of 10**30 bits reached pyroute2's struct packing after the veth was made
    assert code(spec.parse_bandwidth, bandwidth) == 7


@pytest.mark.parametrize("args", [{"IP": "garbage"}, {"IP": "10.0.0.1,10.0.0.2"}, {"IP": "10.0.0.1,"},
                                  {"MAC": "zz"}, {"MAC": "01:00:00:00:00:00"}])
def test_cni_args_ip_and_mac_are_checked_even_when_runtime_config_wins(args):
    # runtimeConfig.ips and mac took precedence, so a malformed CNI_ARGS IP or MAC went unseen
    c = spec.parse_config(json.dumps(conf(runtimeConfig={"ips": ["10.0.0.5"], "mac": "02:00:00:00:00:01"})))
    assert code(spec.parse_requested, c, spec.Invocation(command="ADD", args=args)) == 7


def test_requested_address_and_mac_precedence():
    c = spec.parse_config(json.dumps(conf(runtimeConfig={"ips": ["10.0.0.5/24"]})))
    inv = spec.Invocation(command="ADD", args={"IP": "10.0.0.6", "MAC": "02:00:00:00:00:02"})
    assert spec.parse_requested(c, inv) == (["10.0.0.5"], "02:00:00:00:00:02")
    assert spec.parse_requested(spec.parse_config(json.dumps(conf())), inv) == (["10.0.0.6"], "02:00:00:00:00:02")
    dual = spec.Invocation(command="ADD", args={"IP": "10.0.0.6,fd00::6"})      # host-local's list form
    assert spec.parse_requested(spec.parse_config(json.dumps(conf())), dual) == (["10.0.0.6", "fd00::6"], None)


@pytest.mark.parametrize("mac", ["02:42:ac:11:00:02\n", " 02:42:ac:11:00:02"])
def test_a_mac_with_a_trailing_newline_or_space_is_refused(mac):
    assert code(spec.parse_mac, mac) == 7


@pytest.mark.parametrize("value", [0, False, {}, ""])
def test_gc_refuses_valid_attachments_that_are_not_a_list(value):
    # `or []` made 0, false, {} and "" an empty list: GC would have freed every address
    c = spec.parse_config(json.dumps(conf(**{"cni.dev/valid-attachments": value})), "GC")
    assert code(spec.parse_valid_attachments, c) == 7


def test_gc_takes_null_valid_attachments_as_an_empty_list_as_libcni_does():
    c = spec.parse_config(json.dumps(conf(**{"cni.dev/valid-attachments": None})), "GC")
    assert spec.parse_valid_attachments(c) == set()


def test_error_text_that_quotes_huge_input_is_cut():
    # a 43 KB CNI_NETNS came back twice in the error (msg and details): a 90 KB answer
    err = CniError(3, f"cannot enter network namespace {'a' * 100_000}", "b" * 100_000)
    assert len(err.to_json()) < 9_000 and "(100031 characters in all)" in err.msg
    with pytest.raises(CniError) as ei:
        spec.parse_env({**ADD_ENV, "CNI_IFNAME": "i" * 200_000})
    assert len(ei.value.to_json()) < 9_000
