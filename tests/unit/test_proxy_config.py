"""proxy/proxy_config.py: the KubeProxyConfiguration the agent reads (strict, as kube-proxy's),
and the agent's choice between the file, the flags and the defaults."""
from __future__ import annotations

import pytest
from kubeweft.proxy import agent
from kubeweft.proxy.proxy_config import (
    ConfigError,
    ConntrackConfig,
    ProxyConfig,
    parse_duration,
    parse_proxy_config,
)

FULL = """
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
ipvs: {scheduler: mh, syncPeriod: 30s}
nodePortAddresses: [192.168.56.0/24, 10.0.0.0/8]
conntrack:
  maxPerCore: 0
  min: 65536
  tcpEstablishedTimeout: 2h30m
  tcpCloseWaitTimeout: 90s
  udpTimeout: 30s
  udpStreamTimeout: 2m0s
  tcpBeLiberal: true
metricsBindAddress: 0.0.0.0:10249
healthzBindAddress: ""
clusterCIDR: 10.244.0.0/16
iptables: {masqueradeAll: false}
"""


def test_every_field_is_read():
    cfg = parse_proxy_config(FULL)
    assert cfg.mode == "nftables" and cfg.scheduler == "maglev"
    assert cfg.nodeport_addresses == ("192.168.56.0/24", "10.0.0.0/8")
    assert cfg.conntrack == ConntrackConfig(max_per_core=0, min=65536, tcp_established=9000,
                                            tcp_close_wait=90, udp=30,
                                            udp_stream=120, tcp_be_liberal=True)
    assert cfg.metrics_bind_address == "0.0.0.0:10249" and cfg.healthz_bind_address == ""
    assert cfg.ignored == ("clusterCIDR", "iptables")


def test_empty_means_kube_proxys_defaults():
    for text in ("", "{}", "kind: KubeProxyConfiguration\nipvs: {scheduler: ''}\nmode: ''\n"):
        assert parse_proxy_config(text) == ProxyConfig()
    c = ProxyConfig().conntrack
    assert (c.max_per_core, c.min, c.tcp_established, c.tcp_close_wait) == (32768, 131072, 86400, 3600)


@pytest.mark.parametrize("text, says", [
    ("mode: ipvs", "kubeweft programs the Linux kernel's nftables only"),
    ("mode: iptables", "mode 'iptables' is not supported"),
    ("ipvs: {scheduler: wlc}", "ipvs.scheduler 'wlc'"),
    ("conntrack: {maxPerCore: -1}", "conntrack.maxPerCore"),
    ("conntrack: {min: '5'}", "conntrack.min"),
    ("conntrack: {tcpEstablishedTimeout: 24 hours}", "conntrack.tcpEstablishedTimeout"),
    ("conntrack: {tcpEstablishedTimeout: -1h}", "conntrack.tcpEstablishedTimeout"),
    ("conntrack: {tcpBeLiberal: 'yes'}", "conntrack.tcpBeLiberal"),
    ("conntrack: {udpTimout: 1s}", "unknown field 'udpTimout'"),
    ("schedulr: rr", "unknown field 'schedulr'"),
    ("nodePortAddresses: [nodes]", "nodePortAddresses: 'nodes'"),
    ("nodePortAddresses: 10.0.0.0/8", "not a list"),
    ("metricsBindAddress: localhost", "metricsBindAddress"),
    ("healthzBindAddress: 0.0.0.0:70000", "healthzBindAddress"),
    ("apiVersion: v1\nkind: ConfigMap", "expected kubeproxy.config.k8s.io/v1alpha1/KubeProxyConfiguration"),
    ("[1, 2]", "not a mapping"),
    ("a: [", "not YAML"),
])
def test_what_is_refused_says_why(text, says):
    with pytest.raises(ConfigError) as e:
        parse_proxy_config(text)
    assert says in str(e.value)


@pytest.mark.parametrize("text, seconds", [("0", 0), ("0s", 0), ("24h0m0s", 86400), ("1.5h", 5400),
                                           ("300ms", 0.3), ("1m30s", 90)])
def test_go_durations(text, seconds):
    assert parse_duration(text, "x") == pytest.approx(seconds)


def test_the_agent_stops_on_a_bad_file_and_reads_a_good_one(tmp_path):
    good = tmp_path / "config.conf"
    good.write_text("ipvs: {scheduler: rr}\n")
    assert agent.read_config_file(str(good)).scheduler == "rr"
    bad = tmp_path / "bad.conf"
    bad.write_text("mode: ipvs\n")
    with pytest.raises(SystemExit, match="mode 'ipvs' is not supported"):
        agent.read_config_file(str(bad))
    with pytest.raises(SystemExit, match="No such file"):
        agent.read_config_file(str(tmp_path / "none"))


def test_nodeport_flag_wins_over_the_configuration():
    cfg = parse_proxy_config("nodePortAddresses: [10.0.0.0/8, 192.168.0.0/16]")
    assert agent.nodeport_choice(None, cfg) == "10.0.0.0/8,192.168.0.0/16"
    assert agent.nodeport_choice("192.168.0.0/16", cfg) == "192.168.0.0/16"
    assert agent.nodeport_choice(None, ProxyConfig()) == "primary"
    assert agent.nodeport_choice(None, parse_proxy_config("nodePortAddresses: [primary]")) == "primary"
    with pytest.raises(ConfigError, match="cannot be mixed"):
        parse_proxy_config("nodePortAddresses: [10.0.0.0/8, primary]")
