"""The pure part of the CNI runtime: config choice and parsing, env, stdin, plugin output."""
import json

import pytest
from kubeweft.lab.cniexec import (
    RUNTIME_ERROR,
    CniError,
    ConfigError,
    NetworkConfig,
    RuntimeConf,
    cache_file_name,
    kubernetes_args,
    parse_network_config,
    parse_plugin_output,
    pick_config_file,
    render_cni_args,
    render_env,
    render_plugin_config,
    version_at_least,
)

CONFLIST = {
    "cniVersion": "1.0.0", "name": "lab",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ],
}


def test_pick_config_file_takes_lexicographically_first_known_suffix():
    assert pick_config_file(["99-x.conf", "10-a.conflist", "05-z.json", "00-notes.txt"]) == "05-z.json"
    assert pick_config_file(["b.conf", "a.conflist"]) == "a.conflist"
    assert pick_config_file(["README", ".hidden.conf"]) is None
    assert pick_config_file([]) is None


def test_conflist_parses_plugins_in_order():
    net = parse_network_config(json.dumps(CONFLIST), "10-lab.conflist")
    assert net.name == "lab" and net.cni_version == "1.0.0"
    assert [p["type"] for p in net.plugins] == ["bridge", "portmap"]


def test_single_conf_becomes_a_one_plugin_list():
    conf = {"cniVersion": "0.4.0", "name": "solo", "type": "bridge", "bridge": "br9"}
    net = parse_network_config(json.dumps(conf), "10-solo.conf")
    assert net.name == "solo" and net.cni_version == "0.4.0"
    assert net.plugins == ({"type": "bridge", "bridge": "br9"},)


@pytest.mark.parametrize("text,source", [
    ("{not json", "a.conflist"),
    (json.dumps({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}), "a.conflist"),      # no name
    (json.dumps({"cniVersion": "1.0.0", "name": "n"}), "a.conflist"),                     # no plugins
    (json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": []}), "a.conflist"),
    (json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [{"bridge": "x"}]}), "a.conflist"),
    ("[1, 2]", "a.json"),
])
def test_bad_configs_are_rejected(text, source):
    with pytest.raises(ConfigError):
        parse_network_config(text, source)


def test_plugin_stdin_carries_name_version_declared_capabilities_and_prev_result():
    net = parse_network_config(json.dumps(CONFLIST), "x.conflist")
    maps = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    rt = RuntimeConf("cid", "/run/netns/p", "eth0",
                     capability_args={"portMappings": maps, "bandwidth": {"ingressRate": 1}})
    first = render_plugin_config(net, net.plugins[0], rt, None)
    assert first["name"] == "lab" and first["cniVersion"] == "1.0.0"
    assert "runtimeConfig" not in first          # bridge declares no capabilities
    assert "prevResult" not in first
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}
    second = render_plugin_config(net, net.plugins[1], rt, prev)
    assert second["runtimeConfig"] == {"portMappings": maps}    # bandwidth not declared: not passed
    assert second["prevResult"] == prev
    assert second["snat"] is True
    assert "name" not in net.plugins[1]          # the parsed config is not mutated


def test_capability_declared_false_or_missing_value_is_not_passed():
    net = NetworkConfig("n", "1.0.0", ({"type": "t", "capabilities": {"mac": False, "ips": True}},))
    rt = RuntimeConf("c", "/x", capability_args={"mac": "aa:bb:cc:dd:ee:ff"})
    assert "runtimeConfig" not in render_plugin_config(net, net.plugins[0], rt, None)


def test_env_sets_cni_variables_and_keeps_the_runtime_environment():
    rt = RuntimeConf("abc", "/run/netns/p", "eth0", kubernetes_args("default", "web", "abc"))
    env = render_env("ADD", rt, "/opt/cni/bin", {"KUBEWEFT_LAB_ID": "kw:t", "PATH": "/usr/bin",
                                                  "CNI_COMMAND": "stale"})
    assert env["KUBEWEFT_LAB_ID"] == "kw:t" and env["PATH"] == "/usr/bin"
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_CONTAINERID"] == "abc"
    assert env["CNI_NETNS"] == "/run/netns/p" and env["CNI_IFNAME"] == "eth0"
    assert env["CNI_PATH"] == "/opt/cni/bin"
    assert env["CNI_ARGS"] == ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
                               "K8S_POD_INFRA_CONTAINER_ID=abc")


def test_env_without_attachment_has_no_container_variables():
    env = render_env("VERSION", None, "/b", {})
    assert env == {"CNI_COMMAND": "VERSION", "CNI_PATH": "/b"}


def test_render_cni_args_empty():
    assert render_cni_args(()) == ""


def test_plugin_error_json_becomes_cni_error_with_code_and_plugin():
    out = json.dumps({"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "why"}).encode()
    with pytest.raises(CniError) as e:
        parse_plugin_output("bridge", 1, out)
    assert (e.value.code, e.value.msg, e.value.details, e.value.plugin) == (7, "bad", "why", "bridge")
    assert "bridge" in str(e.value) and "7" in str(e.value)


def test_plugin_failure_without_json_is_a_runtime_error_with_stderr():
    with pytest.raises(CniError) as e:
        parse_plugin_output("x", 2, b"", b"segfault")
    assert e.value.code == RUNTIME_ERROR and "segfault" in e.value.msg


def test_plugin_success_output():
    assert parse_plugin_output("x", 0, b"") is None
    assert parse_plugin_output("x", 0, b'{"cniVersion": "1.0.0"}\n') == {"cniVersion": "1.0.0"}
    with pytest.raises(CniError):
        parse_plugin_output("x", 0, b"not json")


def test_versions_compare_numerically():
    assert version_at_least("1.1.0", "1.1.0")
    assert version_at_least("0.10.0", "0.4.0")
    assert not version_at_least("0.3.1", "0.4.0")
    assert not version_at_least("1.0.0", "1.1.0")


def test_cache_file_name_is_keyed_by_network_container_and_ifname():
    assert cache_file_name("lab", "c1", "eth0") == "lab-c1-eth0"
    assert cache_file_name("lab", "c1", "eth0") != cache_file_name("lab", "c1", "eth1")
