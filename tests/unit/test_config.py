"""kubeweft.lab.config: names, addresses and paths of a lab (pure)."""
from __future__ import annotations

import dataclasses
import json

import pytest
from kubeweft.lab.config import STATE_ROOT, LabConfig, check_name


def test_default_addresses_follow_the_readme():
    cfg = LabConfig(name="kw")
    assert cfg.control_plane_ip == "192.168.56.1"
    assert [cfg.node_ip(i) for i in (1, 2, 3)] == ["192.168.56.11", "192.168.56.12", "192.168.56.13"]
    assert cfg.external_gateway_ip == "203.0.113.1"
    assert cfg.external_ip == "203.0.113.2"
    assert cfg.api_url_for_nodes == "https://192.168.56.1:6443"


def test_addresses_follow_the_subnets():
    cfg = LabConfig(name="kw", node_subnet="10.0.0.0/24", external_subnet="172.31.0.0/24")
    assert cfg.control_plane_ip == "10.0.0.1" and cfg.node_ip(1) == "10.0.0.11"
    assert cfg.external_ip == "172.31.0.2"


def test_every_netns_carries_the_lab_prefix():
    cfg = LabConfig(name="lab7")
    names = [cfg.underlay_netns, cfg.external_netns, cfg.node_netns("node1"),
             cfg.pod_netns("default", "web", "u1")]
    assert names[:3] == ["lab7-underlay", "lab7-ext", "lab7-node1"]
    assert all(n.startswith(cfg.netns_prefix) for n in names)


def test_pod_netns_is_unique_per_uid_and_bounded():
    cfg = LabConfig(name="kw")
    assert cfg.pod_netns("default", "web", "a") != cfg.pod_netns("default", "web", "b")
    assert cfg.pod_netns("default", "web", "a") == cfg.pod_netns("default", "web", "a")
    assert len(cfg.pod_netns("ns", "x" * 400, "u")) <= 255


def test_paths_live_under_the_state_dir():
    cfg = LabConfig(name="kw")
    assert cfg.state_dir == STATE_ROOT / "kw"
    for p in (cfg.state_file, cfg.kubeconfig, cfg.node_kubeconfig, cfg.log_dir,
              cfg.cni_conf_dir("node1"), cfg.cni_bin_dir("node1"), cfg.cni_data_dir("node1"),
              cfg.agent_socket("node1")):
        assert cfg.state_dir in p.parents
    assert str(cfg.cni_conf_dir("node1")).endswith("nodes/node1/cni/net.d")


def test_config_round_trips_through_state_json():
    cfg = LabConfig(name="kw", nodes=3, cni="kubeweft")
    again = LabConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg
    assert again.nodeport_range == (30000, 32767)
    hash(again)      # a list from JSON would make it unhashable


@pytest.mark.parametrize("name", ["kw", "t123", "h3x1", "a" * 20])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "kw-2", "KW", "a b", "a/b", "a" * 21, "kw_"])
def test_bad_names(name):
    # "-" is out: `down` removes every netns starting with "<name>-"
    with pytest.raises(ValueError):
        check_name(name)
