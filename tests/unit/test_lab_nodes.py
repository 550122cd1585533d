"""Nodes joining a running lab, the pure parts: names and the commands that wire one node."""
from kubeweft.lab.config import LabConfig
from kubeweft.lab.lifecycle import node_list, plan_new_nodes
from kubeweft.lab.topology import plan_add_node, plan_build

CFG = LabConfig(name="kw", nodes=3)


def test_new_nodes_are_numbered_after_the_highest_ever_used():
    assert plan_new_nodes(["node1", "node2", "node3"], 2) == [(4, "node4"), (5, "node5")]
    # node2 left: its name and address are not reused
    assert plan_new_nodes(["node1", "node3"], 1) == [(4, "node4")]
    assert plan_new_nodes([], 1) == [(1, "node1")]


def test_node_list_comes_from_state_once_nodes_joined_or_left():
    assert node_list(CFG, {}) == ["node1", "node2", "node3"]
    assert node_list(CFG, {"nodes": ["node1", "node4"]}) == ["node1", "node4"]


def test_an_added_node_is_wired_exactly_as_up_wires_it():
    add = plan_add_node(CFG, 3, "node3")
    assert add[0].argv == ("ip", "netns", "add", "kw-node3")
    built = plan_build(CFG)
    # up's steps for node3 (all but the netns creation) appear, in order, in the build
    node3 = [s for s in built if "kw-node3" in s.argv or s.inside == "kw-node3" or "veth-node3" in s.argv]
    assert [s for s in node3 if s.argv[:2] != ("ip", "netns")] == add[1:]
    assert ("ip", "-n", "kw-node3", "addr", "add", "192.168.56.13/24", "dev", "eth0") in [s.argv for s in add]
