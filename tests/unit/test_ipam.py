"""IPAM: the pure planning functions, and the file store in a temporary directory."""
from __future__ import annotations

import ipaddress
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeweft.cni import ipam
from kubeweft.cni.errors import ADDRESS_UNAVAILABLE, INVALID_NETWORK_CONFIG, CniError
from kubeweft.cni.ipam import Allocator

A = ipaddress.IPv4Address


A6 = ipaddress.IPv6Address
NET = ipaddress.IPv4Network("10.0.0.0/29")


def test_candidates_exclude_network_gateway_broadcast():
    assert list(ipam.plan_candidates(NET, A("10.0.0.1"), None)) == [A(f"10.0.0.{i}") for i in range(2, 7)]
    assert ipam.count_usable(NET) == 5
    # IPv6: no broadcast, only the network (Subnet-Router anycast) address and the gateway
    net6 = ipaddress.IPv6Network("fd00::/126")
    assert list(ipam.plan_candidates(net6, A6("fd00::1"), None)) == [A6("fd00::2"), A6("fd00::3")]
    assert ipam.count_usable(net6) == 2


def test_candidates_start_after_cursor_and_wrap():
    assert list(ipam.plan_candidates(NET, A("10.0.0.1"), A("10.0.0.4"))) == [
        A("10.0.0.5"), A("10.0.0.6"), A("10.0.0.2"), A("10.0.0.3"), A("10.0.0.4")]
    assert next(iter(ipam.plan_candidates(NET, A("10.0.0.1"), A("10.0.0.6")))) == A("10.0.0.2")
    assert next(iter(ipam.plan_candidates(NET, A("10.0.0.1"), None))) == A("10.0.0.2")


def test_candidates_of_a_slash_64_are_lazy():
    net = ipaddress.IPv6Network("fd00:10:244:1::/64")
    it = ipam.plan_candidates(net, A6("fd00:10:244:1::1"), A6("fd00:10:244:1:ffff:ffff:ffff:fffe"))
    assert [next(it), next(it)] == [A6("fd00:10:244:1:ffff:ffff:ffff:ffff"), A6("fd00:10:244:1::2")]


def test_record_round_trip_and_garbage():
    assert ipam.parse_record(ipam.render_record("abc", "eth1")) == ("abc", "eth1")
    assert ipam.parse_record(b"abc\n") == ("abc", "eth0")      # host-local's old format
    assert ipam.parse_record(b"") is None
    assert ipam.parse_record(b"\xff\xfe") is None
    assert ipam.parse_record(b"a\nb\nc") is None


def test_gateway_default_and_validation(tmp_path):
    assert Allocator(tmp_path, "10.244.3.0/24").gateway == ipaddress.IPv4Interface("10.244.3.1/24")
    assert Allocator(tmp_path, "10.244.3.0/24", "10.244.3.254").gateway.ip == A("10.244.3.254")
    assert Allocator(tmp_path, "fd00:10:244:3::/64").gateway == ipaddress.IPv6Interface("fd00:10:244:3::1/64")
    for bad in [("10.244.3.0/24", "10.244.4.1"), ("10.244.3.0/24", "10.244.3.255"), ("nonsense", None),
                ("10.0.0.0/31", None), ("fd00::/127", None), ("fd00::/64", "10.0.0.1"), ("fd00::/64", "fd00::")]:
        with pytest.raises(CniError) as e:
            Allocator(tmp_path, *bad)
        assert e.value.code == INVALID_NETWORK_CONFIG


def test_reserve_is_idempotent_and_never_hands_out_reserved_addresses(tmp_path):
    a = Allocator(tmp_path, "10.0.0.0/29")        # .2-.6 usable, .1 gateway
    got = [a.reserve(f"c{i}", "eth0") for i in range(5)]
    assert sorted(g.ip for g in got) == [A(f"10.0.0.{i}") for i in range(2, 7)]
    assert all(g.network.prefixlen == 29 for g in got)
    assert a.reserve("c3", "eth0") == got[3]
    assert a.free_count() == 0
    with pytest.raises(CniError) as e:
        a.reserve("c9", "eth0")
    assert e.value.code == ADDRESS_UNAVAILABLE


def test_released_address_is_not_reused_at_once(tmp_path):
    a = Allocator(tmp_path, "10.0.0.0/28")
    first = a.reserve("c1", "eth0")
    a.release("c1", "eth0")
    assert a.reserve("c2", "eth0") != first


def test_same_container_two_interfaces(tmp_path):
    a = Allocator(tmp_path, "10.0.0.0/28")
    e0, e1 = a.reserve("c1", "eth0"), a.reserve("c1", "net1")
    assert e0 != e1
    assert a.release("c1", "eth0") == [e0]
    assert a.lookup("c1", "net1") == e1 and a.lookup("c1", "eth0") is None


def test_requested_ip(tmp_path):
    a = Allocator(tmp_path, "10.0.0.0/28")
    assert a.reserve("c1", "eth0", "10.0.0.9").ip == A("10.0.0.9")
    assert a.reserve("c1", "eth0", "10.0.0.9/28").ip == A("10.0.0.9")     # idempotent
    for taken in ["10.0.0.9", "10.0.0.1", "10.0.0.0", "10.0.0.15", "10.0.1.5"]:
        with pytest.raises(CniError) as e:
            a.reserve("c2", "eth0", taken)
        assert e.value.code == ADDRESS_UNAVAILABLE
    with pytest.raises(CniError):
        a.reserve("c1", "eth0", "10.0.0.10")       # c1/eth0 already holds .9
    with pytest.raises(CniError) as e:
        a.reserve("c2", "eth0", "not-an-ip")
    assert e.value.code == INVALID_NETWORK_CONFIG


def test_persistence_across_instances_and_gc(tmp_path):
    a = Allocator(tmp_path, "10.0.0.0/24")
    held = {(f"c{i}", "eth0"): a.reserve(f"c{i}", "eth0") for i in range(10)}
    b = Allocator(tmp_path, "10.0.0.0/24")
    assert b.reservations() == held
    assert b.lookup("c4", "eth0") == held[("c4", "eth0")]
    valid = {("c1", "eth0"), ("c2", "eth0"), ("nobody", "eth0")}
    freed = b.gc(valid)
    assert {k for k, _ in freed} == set(held) - valid
    assert {addr for _, addr in freed} == {held[k] for k in set(held) - valid}
    assert set(Allocator(tmp_path, "10.0.0.0/24").reservations()) == {("c1", "eth0"), ("c2", "eth0")}
    # the cursor survives too: the next address follows the last one handed out
    assert b.reserve("next", "eth0").ip == max(v.ip for v in held.values()) + 1


def test_store_ignores_foreign_files_and_removes_crash_leftovers(tmp_path):
    a = Allocator(tmp_path, "10.0.0.0/28")
    (tmp_path / ".tmp-123-456").write_text("c9\neth0")      # a writer died before link()
    (tmp_path / "README").write_text("x")
    (tmp_path / "10.0.0.7").write_text("")                    # not a record: not a reservation
    a.reserve("c1", "eth0")
    assert not (tmp_path / ".tmp-123-456").exists()
    assert (tmp_path / "README").exists()
    assert set(a.reservations()) == {("c1", "eth0")}


def test_claim_says_whether_it_reserved(tmp_path):
    a = Allocator(tmp_path, "10.0.0.0/29")
    first, new = a.claim("c1", "eth0")
    assert new and a.claim("c1", "eth0") == (first, False)
    assert a.reserve("c1", "eth0") == first


def test_torn_records_are_skipped_then_removed_by_gc(tmp_path):
    """A power loss may leave an address file with no record (nothing is fsync'ed): it is never
    handed out while there, and gc/reconcile remove it."""
    a = Allocator(tmp_path, "10.0.0.0/29")
    (tmp_path / "10.0.0.2").write_bytes(b"")
    assert a.reserve("c1", "eth0").ip == A("10.0.0.3")
    assert a.reservations() == {("c1", "eth0"): a.lookup("c1", "eth0")}
    assert a.gc({("c1", "eth0")}) == []
    assert not (tmp_path / "10.0.0.2").exists()
    assert a.reserve("c2", "eth0").ip == A("10.0.0.4")    # cursor order; .2 is free again
    assert a.free_count() == 3


def test_threads_never_share_an_address(tmp_path):
    a = Allocator(tmp_path, "10.0.0.0/24")
    b = Allocator(tmp_path, "10.0.0.0/24")       # a second handle on the same dir: flock excludes
    out: dict = {}

    def work(n: int) -> None:
        alloc = a if n % 2 else b
        for i in range(20):
            out[(f"t{n}-{i}", "eth0")] = alloc.reserve(f"t{n}-{i}", "eth0")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(out) == 160
    assert len({v for v in out.values()}) == 160
    assert a.reservations() == out


ops = st.lists(st.tuples(st.sampled_from(["reserve", "release", "gc", "reopen"]),
                         st.integers(0, 9), st.sampled_from(["eth0", "net1"])), max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_model_random_sequences(seq):
    """Against a dict model: one address per key, no address twice, never gateway/network/broadcast,
    and exhaustion exactly when the model is full."""
    d = Path(tempfile.mkdtemp(prefix="h6b-ipam-"))
    try:
        a = Allocator(d, "10.1.0.0/29")           # 5 usable addresses, 20 possible keys
        model: dict[tuple[str, str], ipaddress.IPv4Interface] = {}
        forbidden = {A("10.1.0.0"), A("10.1.0.1"), A("10.1.0.7")}
        for op, n, ifname in seq:
            key = (f"c{n}", ifname)
            if op == "reserve":
                try:
                    got = a.reserve(*key)
                except CniError as e:
                    assert e.code == ADDRESS_UNAVAILABLE and key not in model and len(model) == 5
                    continue
                if key in model:
                    assert got == model[key]
                assert got.ip not in forbidden
                assert got not in {v for k, v in model.items() if k != key}
                model[key] = got
            elif op == "release":
                assert a.release(*key) == ([model.pop(key)] if key in model else [])
            elif op == "gc":
                valid = {k for k in model if hash(k) % 2}
                freed = a.gc(valid)
                assert {k for k, _ in freed} == set(model) - valid
                model = {k: v for k, v in model.items() if k in valid}
            else:
                a = Allocator(d, "10.1.0.0/29")
            assert a.reservations() == model
            assert a.free_count() == 5 - len(model)
    finally:
        shutil.rmtree(d)


# ---- both families: one store, a Pool of one Allocator per range -------------------------------

def test_pool_reserves_one_address_per_family_in_one_store(tmp_path):
    p = ipam.Pool(tmp_path, "10.0.0.0/29,fd00::/120")
    got, new = p.claim("c1", "eth0")
    assert new and got == [ipaddress.IPv4Interface("10.0.0.2/29"), ipaddress.IPv6Interface("fd00::2/120")]
    assert p.claim("c1", "eth0") == (got, False)                # idempotent
    assert p.gateways == [ipaddress.IPv4Interface("10.0.0.1/29"), ipaddress.IPv6Interface("fd00::1/120")]
    assert {f.name for f in tmp_path.iterdir()} >= {"10.0.0.2", "fd00::2", "last_reserved_ip",
                                                    "last_reserved_ip.ipv6"}
    assert p.reservations() == {("c1", "eth0"): got} and p.lookup("c1", "eth0") == got
    # each family's Allocator sees only its own files in the shared directory
    assert Allocator(tmp_path, "10.0.0.0/29").reservations() == {("c1", "eth0"): got[0]}
    assert p.release("c1", "eth0") == got and p.lookup("c1", "eth0") == []
    # the ranges' order is the result's: an IPv6-primary node lists IPv6 first
    assert [a.version for a in ipam.Pool(tmp_path, ["fd00::/120", "10.0.0.0/29"]).ranges] == [6, 4]


def test_pool_requested_addresses_per_family(tmp_path):
    p = ipam.Pool(tmp_path, ["10.0.0.0/29", "fd00::/120"])
    assert p.claim("c1", "eth0", ["fd00::9"])[0] == [ipaddress.IPv4Interface("10.0.0.2/29"),
                                                     ipaddress.IPv6Interface("fd00::9/120")]
    # taken in IPv6: the IPv4 address this call reserved is freed again
    with pytest.raises(CniError) as e:
        p.claim("c2", "eth0", ["10.0.0.5", "fd00::9"])
    assert e.value.code == ADDRESS_UNAVAILABLE and p.lookup("c2", "eth0") == []
    v4_only = ipam.Pool(tmp_path / "v4", "10.0.0.0/29")
    with pytest.raises(CniError) as e:
        v4_only.claim("c3", "eth0", ["fd00::5"])                # no IPv6 range on this node
    assert e.value.code == ADDRESS_UNAVAILABLE
    for bad in (["10.0.0.0/29", "10.1.0.0/29"], [], "garbage"):
        with pytest.raises(CniError) as e:
            ipam.Pool(tmp_path / "bad", bad)
        assert e.value.code == INVALID_NETWORK_CONFIG


def test_pool_exhaustion_and_gc_across_families(tmp_path):
    p = ipam.Pool(tmp_path, ["10.0.0.0/29", "fd00::/120"])       # 5 IPv4 addresses, 253 IPv6
    for i in range(5):
        p.claim(f"c{i}", "eth0")
    assert p.free_count() == 0
    with pytest.raises(CniError) as e:
        p.claim("c9", "eth0")
    assert e.value.code == ADDRESS_UNAVAILABLE
    assert not [f for f in tmp_path.iterdir() if f.name.startswith("fd00") and
                ipam.parse_record(f.read_bytes())[0] == "c9"]   # the IPv6 claim did not stay
    freed = p.gc({("c0", "eth0")})
    assert sorted({k for k, _ in freed}) == [(f"c{i}", "eth0") for i in range(1, 5)] and len(freed) == 8
    assert p.free_count() == 4
