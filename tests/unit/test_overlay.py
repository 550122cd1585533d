"""The overlay plan and its diff: what each Node becomes, and a safe order of changes."""
from hypothesis import given, settings
from hypothesis import strategies as st
from kubeweft.proxy.overlay import plan as ov
from kubeweft.proxy.overlay.hostgw import HostGwBackend
from kubeweft.proxy.overlay.vxlan import VxlanBackend

UNDERLAY = ov.Underlay("eth0", "192.168.56.11", 1500, ("192.168.56.0/24",))
VXLAN = VxlanBackend(UNDERLAY)


def node(i: int, mac: str | None = "auto", cidr: str | None = "auto", addr: str | None = None):
    return ov.NodeInfo(name=f"node{i}", address=addr or f"192.168.56.{10 + i}",
                       pod_cidr=f"10.244.{i}.0/24" if cidr == "auto" else cidr,
                       vtep_mac=f"0e:00:00:00:00:{i:02x}" if mac == "auto" else mac)


def plan_vxlan(self_name: str, nodes) -> ov.OverlayState:
    return ov.plan_overlay(VXLAN, self_name, nodes)


def test_vxlan_plan_is_flannels_shape():
    plan = plan_vxlan("node1", [node(1), node(2)])
    assert plan.routes == {ov.Route("10.244.2.0/24", "10.244.2.0", "kw.1", onlink=True)}
    assert plan.neighbours == {ov.Neighbour("10.244.2.0", "0e:00:00:00:00:02", "kw.1")}
    assert plan.fdb == {ov.FdbEntry("0e:00:00:00:00:02", "192.168.56.12", "kw.1")}


def test_nodes_without_podcidr_or_vtep_are_skipped():
    plan = plan_vxlan("node1", [node(1), node(2, mac=None), node(3, cidr=None), node(4)])
    assert {r.dst for r in plan.routes} == {"10.244.4.0/24"}


def test_mtu_per_backend():
    assert VxlanBackend(UNDERLAY).pod_mtu == 1450
    assert HostGwBackend(UNDERLAY).pod_mtu == 1500


def test_nothing_to_do_when_already_right():
    plan = plan_vxlan("node1", [node(1), node(2), node(3)])
    assert ov.diff_overlay(plan, plan) == []


def test_address_change_replaces_fdb_only():
    before = plan_vxlan("node1", [node(1), node(2)])
    after = plan_vxlan("node1", [node(1), node(2, addr="192.168.56.99")])
    ops = ov.diff_overlay(before, after)
    assert [(o.action, type(o.item).__name__) for o in ops] == [("replace", "FdbEntry")]


def test_node_from_object_prefers_annotation():
    obj = {"metadata": {"name": "n", "annotations": {ov.ANNOTATION_VTEP_MAC: "0E:00:00:00:00:AA"}},
           "spec": {"podCIDR": "10.244.7.0/24"},
           "status": {"addresses": [{"type": "Hostname", "address": "n"},
                                    {"type": "InternalIP", "address": "192.168.56.17"}]}}
    info = ov.node_info_from_object(obj)
    assert (info.address, info.pod_cidr, info.vtep_mac) == ("192.168.56.17", "10.244.7.0/24",
                                                           "0E:00:00:00:00:AA")


# --- properties ---------------------------------------------------------------------------
node_sets = st.lists(
    st.builds(lambda i, m, a: node(i, mac=f"0e:00:00:00:{m:02x}:{i:02x}", addr=f"192.168.56.{a}"),
              st.integers(1, 12), st.integers(0, 3), st.integers(2, 250)),
    max_size=8, unique_by=lambda n: n.name)


def consistent(state: ov.OverlayState) -> bool:
    """Every route has its neighbour, and every neighbour's MAC has an FDB entry."""
    neigh = {(n.ip, n.dev): n.mac for n in state.neighbours}
    fdb = {(f.mac, f.dev) for f in state.fdb}
    return all((r.gateway, r.dev) in neigh and (neigh[(r.gateway, r.dev)], r.dev) in fdb
               for r in state.routes)


@settings(max_examples=300, deadline=None)
@given(node_sets, node_sets)
def test_diff_reaches_desired_and_every_step_is_consistent(before_nodes, after_nodes):
    current = plan_vxlan("node1", before_nodes)
    desired = plan_vxlan("node1", after_nodes)
    ops = ov.diff_overlay(current, desired)
    state = current
    for op in ops:
        state = ov.apply_ops_to_state(state, [op])
        assert consistent(state), f"inconsistent after {op}"
    assert state == desired
    assert ov.diff_overlay(state, desired) == []
