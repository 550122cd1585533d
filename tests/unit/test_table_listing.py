"""Listing the chains and sets of our table over netlink (proxy/element_codec.py: GETCHAIN and
GETSET dumps) and what a restarted agent makes of it (table_readback.recovered_objects): every
on-demand chain and dynamic set is known, so the first full sync after a restart deletes the
ones nobody wants and plans the UDP conntrack cleanup of affinity endpoints that went away.

The golden payloads were dumped from kernel 6.18 after `nft -f` of:

    table ip kubeweft {
      set aff-abc-def { type ipv4_addr; flags dynamic,timeout; timeout 30s; comment "clients"; }
      map backends-tcp-9 { typeof ip daddr . tcp dport . numgen random mod 9 : ip daddr . tcp dport; }
      set cluster-ips { type ipv4_addr; comment "x"; }
      chain lb-tcp-9 { comment "spread over 9"; dnat ip to ... map @backends-tcp-9; }
      chain aff-abc-def { comment "endpoint 10.244.1.5:53 of ns/svc:dns/UDP cluster";
                          update @aff-abc-def { ip saddr }; ip saddr { 1.2.3.4, 5.6.7.8 } accept; }
    }
"""
from __future__ import annotations

import dataclasses
import struct

from kubeweft.proxy import diff_services as d
from kubeweft.proxy import element_codec as c
from kubeweft.proxy import render_services as r
from kubeweft.proxy import table_readback as tr
from kubeweft.proxy.model import parse_endpoint_slice, parse_service
from kubeweft.proxy.nft_commands import nft_lines

CHAIN_LB = bytes.fromhex(
    "020000030d0001006b75626577656674000000000d0003006c622d7463702d39000000000c0002000000000000000001"
    "080006000000000114000c00000e737072656164206f766572203900")
CHAIN_AFF = bytes.fromhex(
    "020000030d0001006b7562657765667400000000100003006166662d6162632d646566000c000200000000000000000208"
    "0006000000000237000c000031656e64706f696e742031302e3234342e312e353a3533206f66206e732f7376633a646e"
    "732f55445020636c75737465720000")
SET_DYNAMIC = bytes.fromhex(
    "020000030d0001006b7562657765667400000000100002006166662d6162632d646566000c0010000000000000000004"
    "0800030000000030080004000000000708000500000000040c000b00000000000000753014000d000004020000000708"
    "636c69656e7473000c000900080001000000ffff1700130030786666666666666666383235303766343000000800140000000000")
SET_PLAIN = bytes.fromhex(
    "020000030d0001006b756265776566740000000010000200636c75737465722d697073000c0010000000000000000006"
    "080004000000000708000500000000040e000d00000402000000070278000000040009001700130030786666666666666666"
    "383235303766343000000800140000000000")
SET_ANONYMOUS = bytes.fromhex(
    "020000030d0001006b75626577656674000000000b0002005f5f7365743000000c0010000000000000000009080003000000"
    "0003080004000000000708000500000000042000"
    "0d000004020000000314000407000000010c00040c00000001040b0000000c00090008000100000000021700130030786666"
    "666666666666383235303764633000000800140000000002")

CTX = r.NodeContext("node1", cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")
A, B = "10.244.1.5", "10.244.2.5"


# ---- the codec -----------------------------------------------------------------------------------

def header(msg: bytes) -> tuple[int, int, int, int]:
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    return length, mtype, flags, seq


def test_dump_requests():
    for encode, msg, attr in ((c.encode_chain_dump_request, c.NFT_MSG_GETCHAIN, c.NFTA_CHAIN_TABLE),
                              (c.encode_set_dump_request, c.NFT_MSG_GETSET, c.NFTA_SET_TABLE)):
        raw = encode("ip", "kubeweft", 77)
        length, mtype, flags, seq = header(raw)
        assert (length, seq) == (len(raw), 77)
        assert mtype == (c.NFNL_SUBSYS_NFTABLES << 8) | msg
        assert flags & c.NLM_F_DUMP == c.NLM_F_DUMP and flags & c.NLM_F_REQUEST
        assert raw[16] == c.NFPROTO["ip"]
        assert list(c._attrs(raw[20:])) == [(attr, b"kubeweft\0")]
    raw = c.encode_table_request("ip", "kubeweft", 5)
    _, mtype, flags, _ = header(raw)
    assert mtype == (c.NFNL_SUBSYS_NFTABLES << 8) | c.NFT_MSG_GETTABLE and not flags & c.NLM_F_DUMP


def test_chains_decode_with_their_comment():
    assert c.decode_chain(CHAIN_LB, "kubeweft") == ("lb-tcp-9", "spread over 9")
    assert c.decode_chain(CHAIN_AFF, "kubeweft") == ("aff-abc-def", "endpoint 10.244.1.5:53 of ns/svc:dns/UDP cluster")
    # the kernel answers a chain dump with the chains of every table of the family
    assert c.decode_chain(CHAIN_LB, "other") is None


def test_udata_comment():
    assert c.decode_udata_comment(b"\x00\x03hi\x00") == "hi"
    # another TLV first (libnftnl's set udata carries key and data byte orders before it)
    assert c.decode_udata_comment(b"\x01\x04\x00\x00\x00\x01\x00\x02x\x00") == "x"
    assert c.decode_udata_comment(b"") == "" == c.decode_udata_comment(b"\x01\x01\x02")


def test_sets_decode_with_their_flags_and_skip_anonymous_ones():
    name, flags = c.decode_set(SET_DYNAMIC, "kubeweft")
    assert name == "aff-abc-def" and flags & c.NFT_SET_EVAL and flags & c.NFT_SET_TIMEOUT
    assert not flags & c.NFT_SET_MAP
    assert c.decode_set(SET_PLAIN, "kubeweft") == ("cluster-ips", 0)
    assert c.decode_set(SET_ANONYMOUS, "kubeweft") is None      # `{ 1.2.3.4, 5.6.7.8 }` of a rule
    assert c.decode_set(SET_PLAIN, "other") is None


# ---- what a restart knows, and the full sync after it -----------------------------------------------

def service(affinity: bool = True):
    spec = {"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP",
                                                   "targetPort": 5353}]}
    if affinity:
        spec |= {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}
    return parse_service({"metadata": {"namespace": "ns", "name": "dns"}, "spec": spec})


def slices(*ips: str):
    return [parse_endpoint_slice({
        "metadata": {"namespace": "ns", "name": "dns-1", "labels": {"kubernetes.io/service-name": "dns"}},
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [{"addresses": [ip], "nodeName": "node2", "conditions": {"ready": True}} for ip in ips]})]


def kernel_after(mirror: r.Desired, extra_chains=(), extra_sets=()):
    """What ElementLink.chains/.sets list for a table holding `mirror` (plus the fixed chains and
    sets, and anything extra): comments as the kernel keeps them (cut at 120 characters)."""
    base = r.render_base(CTX)
    chains = [(n, "fixed") for n in sorted(tr.fixed_chains(base))]
    chains += [(n, ch.comment[:120]) for n, ch in mirror.chains.items()] + list(extra_chains)
    sets = [(n, 0) for n in r.SETS] + [(n, c.NFT_SET_MAP) for n in r.MAPS]
    sets += [(ch.map, c.NFT_SET_MAP) for ch in mirror.chains.values() if ch.map]
    sets += [(n, c.NFT_SET_EVAL | c.NFT_SET_TIMEOUT) for n in mirror.dynsets] + list(extra_sets)
    return chains, sets


def restarted(mirror: r.Desired, **extra) -> r.Desired:
    """What recover() builds: the listing, the fixed sets and maps, the backends maps read back."""
    chains, dynsets = tr.recovered_objects(*kernel_after(mirror, **extra), tr.fixed_chains(r.render_base(CTX)))
    maps = {n: dict(mirror.maps.get(n, {})) for n in r.MAPS}
    maps.update((ch.map, dict(mirror.maps.get(ch.map, {}))) for ch in chains.values() if ch.map)
    return r.Desired(sets=dict(mirror.sets), maps=maps, chains=chains, dynsets=dynsets)


def full_sync_text(rec: r.Desired, agg: r.Aggregate) -> tuple[list[str], r.Desired]:
    """The first full sync after a restart, as nft text, and the mirror once it landed."""
    cmds, after = d.diff_full(rec, agg, unknown_chains=True)
    return nft_lines(cmds, r.SERVICE_TABLE), after


def applied(svc, eps) -> tuple[r.Aggregate, r.Desired]:
    agg = r.Aggregate()
    agg.put(svc.key, r.render_service(svc, eps, CTX))
    _, mirror = d.diff_full(d.empty_applied(), agg)
    return agg, mirror


def test_fixed_chains_are_render_bases():
    fixed = tr.fixed_chains(r.render_base(CTX))
    assert {"nat-prerouting", "services", "nodeports", "service-check", "reject-chain"} <= fixed
    assert not any(n.startswith(("aff-", "lb-")) for n in fixed)


def test_every_on_demand_chain_and_dynamic_set_is_known():
    _, mirror = applied(service(), slices(A, B))
    rec = restarted(mirror)
    assert set(rec.chains) == set(mirror.chains) and set(rec.dynsets) == set(mirror.dynsets)
    assert len(rec.dynsets) == 2
    # the affinity chain's endpoints are found as in the mirror (what the UDP cleanup compares)
    [aff] = [n for n in mirror.chains if n.count("-") == 1]
    assert d._affinity_endpoints(rec.chains.get, aff) == d._affinity_endpoints(mirror.chains.get, aff) \
        == {f"{A} . 5353", f"{B} . 5353"}
    # placeholders are never taken for what the render wants: the full sync rewrites them
    assert all(rec.chains[n] != mirror.chains[n] for n in mirror.chains)


def test_lb_chains_are_known_exactly_with_their_map():
    agg, mirror = applied(service(affinity=False), slices(A, B))
    rec = restarted(mirror)
    assert rec.chains == mirror.chains == {"lb-udp-2": r.family_chain("lb-udp-2")}
    cmds, _ = d.diff_full(rec, agg, unknown_chains=True)
    assert cmds == []        # nothing to change: the lb chain is not rewritten


def test_gone_affinity_endpoint_after_a_restart_is_planned_and_its_chain_and_set_deleted():
    svc = service()
    agg, mirror = applied(svc, slices(A, B))
    rec = restarted(mirror)
    agg.put(svc.key, r.render_service(svc, slices(A), CTX))      # B went while the agent was down
    assert d.plan_udp_cleanup(rec, agg, d.touched_udp(rec)) == {("10.96.0.10", 53, B)}
    cmds, after = full_sync_text(rec, agg)
    [gone] = set(mirror.dynsets) - set(after.dynsets)
    [kept] = set(after.dynsets)
    assert f"delete chain {r.T} {gone}" in cmds and f"delete set {r.T} {gone}" in cmds
    # flushed before it is deleted (the affinity chain's rewrite drops the goto to it)
    assert cmds.index(f"flush chain {r.T} {gone}") < cmds.index(f"delete chain {r.T} {gone}")
    assert cmds.index(f"delete chain {r.T} {gone}") < cmds.index(f"delete set {r.T} {gone}")
    # the live endpoint's set is left alone (its clients keep their endpoint); chains rewritten
    assert not any(kept in cmd and cmd.startswith(("add set", "delete")) for cmd in cmds)
    assert f"flush chain {r.T} {kept}" in cmds
    assert not any(cmd.startswith(f"add chain {r.T} {kept}") for cmd in cmds)


def test_whole_affinity_service_gone_after_a_restart():
    svc = service()
    agg, mirror = applied(svc, slices(A, B))
    rec = restarted(mirror)
    agg.put(svc.key, None)
    assert d.plan_udp_cleanup(rec, agg, d.touched_udp(rec)) == {("10.96.0.10", 53, A), ("10.96.0.10", 53, B)}
    cmds, after = full_sync_text(rec, agg)
    assert not after.chains and not after.dynsets
    for name in mirror.chains:
        assert f"delete chain {r.T} {name}" in cmds
    for name in mirror.dynsets:
        assert f"delete set {r.T} {name}" in cmds


def test_unreferenced_lb_chain_and_its_map_are_deleted():
    agg, mirror = applied(service(affinity=False), slices(A, B))
    # the agent died between the element transaction and the one deleting lb-tcp-9; plus a
    # chain of a name we do not make any more, and a leaked dynamic set
    rec = restarted(mirror, extra_chains=[("lb-tcp-9", "spread over 9 endpoints in backends-tcp-9"),
                                          ("old-chain", "")],
                    extra_sets=[("backends-tcp-9", c.NFT_SET_MAP),
                                ("aff-xxxxxxxx-yyyyyyyy", c.NFT_SET_EVAL | c.NFT_SET_TIMEOUT)])
    rec.maps["backends-tcp-9"] = {"10.96.0.99 . 80 . 0": "10.244.9.9 . 80"}
    assert rec.chains["lb-tcp-9"] == r.family_chain("lb-tcp-9")
    cmds, after = full_sync_text(rec, agg)
    order = [f"flush chain {r.T} lb-tcp-9", f"delete chain {r.T} lb-tcp-9", f"delete map {r.T} backends-tcp-9"]
    assert all(cmd in cmds for cmd in order)
    assert [cmds.index(cmd) for cmd in order] == sorted(cmds.index(cmd) for cmd in order)
    # its map's elements go with it (deleted first, in the element transaction)
    assert any(cmd.startswith(f"delete element {r.T} backends-tcp-9") for cmd in cmds)
    assert f"delete chain {r.T} old-chain" in cmds
    assert f"delete set {r.T} aff-xxxxxxxx-yyyyyyyy" in cmds
    assert "lb-tcp-9" not in after.chains and "backends-tcp-9" not in after.maps
    # the wanted lb chain is untouched
    assert not any("lb-udp-2" in cmd or "backends-udp-2" in cmd for cmd in cmds)


def test_a_listed_lb_chain_without_its_map_is_not_ours():
    chains, _ = tr.recovered_objects([("lb-tcp-4", "x")], [], set())
    assert chains == {}


def test_fixed_sets_and_maps_are_not_dynamic_sets():
    _, dynsets = tr.recovered_objects([], [("cluster-ips", 0), ("service-ips", c.NFT_SET_MAP),
                                          ("backends-tcp-2", c.NFT_SET_MAP),
                                          ("aff-a-b", c.NFT_SET_EVAL | c.NFT_SET_TIMEOUT)], set())
    assert set(dynsets) == {"aff-a-b"}


def test_ipv6_affinity_endpoints_are_read_back_from_their_comments_and_planned_for_cleanup():
    ctx6 = r.NodeContext("node1", cluster_cidr="fd00:10:244::/56", service_cidr="fd00:10:96::/112", family=6)
    a6, b6 = "fd00:10:244:2::5", "fd00:10:244:3::5"
    svc = parse_service({"metadata": {"namespace": "ns", "name": "dns"}, "spec": {
        "clusterIP": "fd00:10:96::a", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
        "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}})
    v6 = parse_endpoint_slice({
        "metadata": {"namespace": "ns", "name": "dns-1", "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv6", "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [{"addresses": [ip], "nodeName": "node2"} for ip in (a6, b6)]})
    agg = r.Aggregate()
    agg.put(svc.key, r.render_service(svc, [v6], ctx6))
    _, mirror = d.diff_full(d.empty_applied(), agg)
    chains = [(n, ch.comment[:120]) for n, ch in mirror.chains.items()]
    sets = [(n, c.NFT_SET_EVAL | c.NFT_SET_TIMEOUT) for n in mirror.dynsets]
    rec_chains, _ = tr.recovered_objects(chains, sets, set(), "ip6")
    [aff] = [n for n in mirror.chains if n.count("-") == 1]
    assert d._affinity_endpoints(rec_chains.get, aff) == d._affinity_endpoints(mirror.chains.get, aff) \
        == {f"{a6} . 5353", f"{b6} . 5353"}
    rec = r.Desired(sets=dict(mirror.sets), maps={n: dict(mirror.maps.get(n, {})) for n in r.MAPS},
                    chains=rec_chains)
    gone = dataclasses.replace(v6, endpoints=v6.endpoints[:1])          # b6 went while the agent was down
    agg.put(svc.key, r.render_service(svc, [gone], ctx6))
    assert d.plan_udp_cleanup(rec, agg, d.touched_udp(rec)) == {("fd00:10:96::a", 53, b6)}
