"""Property: any sequence of incremental syncs leaves the same nftables state as one full sync.

The transactions go through apply_transaction into the product's Fake (proxy/nft_fake.py), as
strict as the kernel where it matters to us: adding a map key that holds another value,
deleting what is not there, jumping to a chain that does not exist, and deleting a chain, set
or map that is still referenced all fail. Element changes go the netlink way (encoded by the
codec, decoded by the Fake with each set's type). The end state after every random sequence of
Service and EndpointSlice changes must equal what a fresh agent would program for the final
objects.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kubeweft.proxy import diff_services as d
from kubeweft.proxy import nft_transaction as nt
from kubeweft.proxy import render_services as r
from kubeweft.proxy.model import Endpoint, EndpointSlice, Service, ServicePort, SlicePort
from kubeweft.proxy.nft_fake import FakeNft
from kubeweft.proxy.nft_transaction import Transaction, apply_transaction
from kubeweft.proxy.table_readback import fixed_chains

CTX = r.NodeContext("node1", zone="zone-a", maglev_slots=13)     # Maglev's table small: fewer elements, same paths


def new_kernel() -> FakeNft:
    """A Fake holding the service table as a fresh agent's first transaction leaves it."""
    fake = FakeNft()
    fake.run(Transaction(r.SERVICE_TABLE, r.render_base(CTX)))
    return fake


# ---- a small universe of objects ---------------------------------------------------------------
NAMES = ["a", "b", "c"]
IPS = [f"10.244.{n}.{h}" for n in (1, 2) for h in (2, 3, 4)]


@st.composite
def services(draw, name):
    kind = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
    protos = draw(st.lists(st.sampled_from(["tcp", "udp", "sctp"]), min_size=1, max_size=2, unique=True))
    ports = tuple(ServicePort(f"p{p}", p, 80 + i, 30000 + 10 * NAMES.index(name) + i if kind != "ClusterIP" else None)
                  for i, p in enumerate(protos))
    local = kind != "ClusterIP" and draw(st.booleans())
    return Service("ns", name, (f"10.96.0.{NAMES.index(name) + 10}",), ports, kind,
                   # a small pool: two Services may claim one externalIP:port (the first name wins)
                   external_ips=(draw(st.sampled_from(["192.168.56.200", "192.168.56.201"])),)
                   if draw(st.booleans()) else (),
                   lb_ips=(f"198.51.100.{NAMES.index(name) + 1}",) if kind == "LoadBalancer" else (),
                   lb_source_ranges=("203.0.113.0/24",) if kind == "LoadBalancer" and draw(st.booleans()) else (),
                   external_local=local, internal_local=draw(st.booleans()),
                   health_check_node_port=32000 + NAMES.index(name) if local and kind == "LoadBalancer" else None,
                   affinity_timeout=draw(st.sampled_from([None, None, 30])),
                   scheduler=draw(st.sampled_from(["", "", "rr", "sh", "maglev"])))


@st.composite
def slices(draw, name, idx):
    eps = tuple(Endpoint(ip, ready=draw(st.booleans()), serving=True, terminating=draw(st.booleans()),
                         node_name=draw(st.sampled_from(["node1", "node2"])),
                         hint_zones=draw(st.sampled_from([None, ("zone-a",), ("zone-b",)])))
                for ip in draw(st.lists(st.sampled_from(IPS), max_size=4, unique=True)))
    ports = tuple(SlicePort(f"p{p}", p, 8080 + i) for i, p in enumerate(["tcp", "udp", "sctp"]))
    return EndpointSlice("ns", f"{name}-{idx}", name, ports, eps)


@st.composite
def operations(draw):
    ops = []
    for _ in range(draw(st.integers(1, 12))):
        name = draw(st.sampled_from(NAMES))
        what = draw(st.sampled_from(["svc", "svc-del", "slice", "slice-del"]))
        if what == "svc":
            ops.append(("svc", name, draw(services(name))))
        elif what == "slice":
            idx = draw(st.integers(0, 1))
            ops.append(("slice", f"{name}-{idx}", draw(slices(name, idx))))
        else:
            ops.append((what, name if what == "svc-del" else f"{name}-{draw(st.integers(0, 1))}", None))
    return ops


def slices_of(all_slices: dict, key) -> list:
    return [s for s in all_slices.values() if s.service_key == key]


@settings(max_examples=150, deadline=None)
@given(operations(), st.integers(1, 4), st.sampled_from([0, 2000]))
def test_incremental_syncs_equal_one_full_sync(ops, batch, text_max):
    """text_max 0: every sync with structure is cut into structure, elements, structure (each a
    transaction of its own: the model rejects any order that leaves a dangling reference);
    2000: such syncs are one nft transaction."""
    old_max, nt.TEXT_MAX = nt.TEXT_MAX, text_max
    try:
        _incremental_syncs_equal_one_full_sync(ops, batch)
    finally:
        nt.TEXT_MAX = old_max


def _incremental_syncs_equal_one_full_sync(ops, batch):
    svcs: dict = {}
    sls: dict = {}
    agg = r.Aggregate()
    applied = d.empty_applied()
    kernel = new_kernel()
    pending: set = set()
    for i, (what, key, obj) in enumerate(ops):
        if what == "svc":
            svcs[("ns", key)] = obj
            pending.add(("ns", key))
        elif what == "svc-del":
            svcs.pop(("ns", key), None)
            pending.add(("ns", key))
        elif what == "slice":
            sls[key] = obj
            pending.add(obj.service_key)
        else:
            old = sls.pop(key, None)
            if old:
                pending.add(old.service_key)
        if (i + 1) % batch and i + 1 < len(ops):
            continue                           # several changes coalesced into one sync
        touched = r.Touched()
        for k in pending:
            s = svcs.get(k)
            touched.merge(agg.put(k, r.render_service(s, slices_of(sls, k), CTX) if s else None))
        pending.clear()
        # as the agent applies them: structure as text, elements over netlink (encoded, decoded)
        apply_transaction(kernel, Transaction(r.SERVICE_TABLE, d.diff_touched(applied, agg, touched)))
        d.commit_touched(applied, agg, touched)

    fresh_agg = r.Aggregate()
    for k, s in svcs.items():
        fresh_agg.put(k, r.render_service(s, slices_of(sls, k), CTX))
    fresh = new_kernel()
    diff, mirror = d.diff_full(d.empty_applied(), fresh_agg)
    # the first sync of an empty table: elements in small transactions, sent on another thread
    old_chunk, nt.LOAD_CHUNK = nt.LOAD_CHUNK, 3
    try:
        apply_transaction(fresh, Transaction(r.SERVICE_TABLE, diff), empty=True)
    finally:
        nt.LOAD_CHUNK = old_chunk
    table, fresh_table = kernel.table(r.FAMILY, r.TABLE), fresh.table(r.FAMILY, r.TABLE)
    assert table.state() == fresh_table.state()
    # the in-memory mirror equals the kernel too (it is what the next diff trusts)
    assert {n: frozenset(v) for n, v in applied.sets.items() if v} == table.state()[0]
    assert {n: v for n, v in applied.maps.items() if v} == table.state()[1]
    on_demand = set(table.chains) - fixed_chains(r.render_base(CTX))
    assert set(applied.chains) == on_demand == set(mirror.chains)
    # and a full re-sync against the mirror has nothing to do
    assert d.diff_full(applied, agg)[0] == []
