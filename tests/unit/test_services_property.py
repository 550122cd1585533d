"""Property: any sequence of incremental syncs leaves the same nftables state as one full sync.

The transactions are run through a small model of nft (FakeNft below) that is as strict as the
kernel where it matters to us: adding an element whose key exists with another value, deleting
what is not there, jumping to a chain that does not exist, and deleting a chain or map that is
still referenced all fail. The end state after every random sequence of Service and
EndpointSlice changes must equal what a fresh agent would program for the final objects.
"""
from __future__ import annotations

import re
import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from kubeweft.proxy import diff_services as d
from kubeweft.proxy import element_codec as codec
from kubeweft.proxy import render_services as r
from kubeweft.proxy import service_proxy as sp
from kubeweft.proxy.model import Endpoint, EndpointSlice, Service, ServicePort, SlicePort

CTX = r.NodeContext("node1", zone="zone-a")
PREFIX = f"{r.T} "


class NftModelError(AssertionError):
    pass


class FakeNft:
    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {n: set() for n in r.SETS}
        self.maps: dict[str, dict[str, str]] = {n: {} for n in r.MAPS}
        self.chains: dict[str, list[str]] = {}

    def refs(self) -> set[str]:
        out = set()
        for m in self.maps.values():
            out |= {v.split()[1] for v in m.values() if v.startswith("goto ")}
        for rules in self.chains.values():
            for rule in rules:
                out |= set(re.findall(r"goto ([\w-]+)", rule)) | set(re.findall(r"@([\w-]+)", rule))
        return out

    def run(self, cmds: list[str]) -> None:
        for c in cmds:
            self.one(c)

    def one(self, c: str) -> None:
        verb, _, rest = c.partition(" ")
        kind, _, rest = rest.partition(" ")
        assert rest.startswith(PREFIX), c
        rest = rest[len(PREFIX):]
        name, _, body = rest.partition(" ")
        if kind == "element":
            items = [x for x in body.strip()[1:-1].strip().split(", ") if x]
            for item in items:
                if name in self.sets:
                    s = self.sets[name]
                    if verb == "add":
                        s.add(item)
                    elif item in s:
                        s.discard(item)
                    else:
                        raise NftModelError(f"delete of missing element {item} in {name}")
                elif name in self.maps:
                    m = self.maps[name]
                    if verb == "add":
                        k, _, v = item.partition(" : ")
                        if k in m and m[k] != v:
                            raise NftModelError(f"{name}: {k} exists with {m[k]}, not {v}")
                        if v.startswith("goto ") and v.split()[1] not in self.chains:
                            raise NftModelError(f"goto to missing chain {v}")
                        m[k] = v
                    elif item in m:
                        del m[item]
                    else:
                        raise NftModelError(f"delete of missing key {item} in {name}")
                else:
                    raise NftModelError(f"no set or map {name}")
        elif (verb, kind) == ("add", "map"):
            self.maps.setdefault(name, {})
        elif (verb, kind) == ("add", "set"):
            self.sets.setdefault(name, set())
        elif (verb, kind) == ("add", "chain"):
            self.chains.setdefault(name, [])
        elif (verb, kind) == ("flush", "chain"):
            self.chains[name] = []
        elif (verb, kind) == ("add", "rule"):
            if name not in self.chains:
                raise NftModelError(f"rule in missing chain {name}")
            for target in re.findall(r"goto ([\w-]+)", body) + re.findall(r"@([\w-]+)", body):
                if target not in self.chains and target not in self.maps and target not in self.sets:
                    raise NftModelError(f"rule refers to missing {target}")
            self.chains[name].append(body)
        elif verb == "delete" and kind in ("chain", "map", "set"):
            store = {"chain": self.chains, "map": self.maps, "set": self.sets}[kind]
            if name not in store:
                raise NftModelError(f"delete of missing {kind} {name}")
            if kind == "chain" and store[name]:
                raise NftModelError(f"delete of non-empty chain {name}")
            if name in self.refs():
                raise NftModelError(f"delete of referenced {kind} {name}")
            del store[name]
        else:
            raise NftModelError(f"unknown command {c}")

    def state(self) -> tuple:
        return ({n: frozenset(v) for n, v in self.sets.items() if v},
                {n: dict(v) for n, v in self.maps.items() if v},
                {n: tuple(v) for n, v in self.chains.items()})


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
                   affinity_timeout=draw(st.sampled_from([None, None, 30])))


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
    old_max, sp.TEXT_MAX = sp.TEXT_MAX, text_max
    try:
        _incremental_syncs_equal_one_full_sync(ops, batch)
    finally:
        sp.TEXT_MAX = old_max


def _incremental_syncs_equal_one_full_sync(ops, batch):
    svcs: dict = {}
    sls: dict = {}
    agg = r.Aggregate()
    applied = d.empty_applied()
    kernel = TextNft()
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
        sp.apply_commands(kernel, d.diff_touched(applied, agg, touched))
        d.commit_touched(applied, agg, touched)

    fresh_agg = r.Aggregate()
    for k, s in svcs.items():
        fresh_agg.put(k, r.render_service(s, slices_of(sls, k), CTX))
    fresh = TextNft()
    diff, mirror = d.diff_full(d.empty_applied(), fresh_agg)
    # the first sync of an empty table: elements in small transactions, sent on another thread
    old_chunk, sp.LOAD_CHUNK = sp.LOAD_CHUNK, 3
    try:
        sp.apply_commands(fresh, diff, empty=True)
    finally:
        sp.LOAD_CHUNK = old_chunk
    assert kernel.state() == fresh.state()
    # the in-memory mirror equals the kernel too (it is what the next diff trusts)
    assert {n: frozenset(v) for n, v in applied.sets.items() if v} == kernel.state()[0]
    assert {n: v for n, v in applied.maps.items() if v} == kernel.state()[1]
    assert set(applied.chains) == set(kernel.chains) == set(mirror.chains)
    # and a full re-sync against the mirror has nothing to do
    assert d.diff_full(applied, agg)[0] == []


class TextNft(FakeNft):
    """FakeNft fed as the agent's Nft is: one text transaction per call, and element changes
    through `elements` (the netlink path), each atomic."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def run(self, cmds) -> None:
        text = cmds if isinstance(cmds, str) else "\n".join(cmds)
        with self.lock:
            super().run(text.splitlines())

    @property
    def elements(self) -> NetlinkElements:
        return NetlinkElements(self)


class NetlinkElements:
    """The agent's netlink element path (Nft.elements) in front of the model: every element
    goes through the real encoder and back through the decoder (what the kernel would store),
    then into the model as one atomic transaction."""

    def __init__(self, kernel: TextNft) -> None:
        self.kernel = kernel

    def prepare(self, family: str, table: str, ops) -> tuple:
        return family, table, ops

    def send(self, prepared: tuple) -> int:
        return self.run(*prepared)

    def run(self, family: str, table: str, ops) -> int:
        assert (family, table) == (r.FAMILY, r.TABLE)
        cmds = []
        for verb, name, etype, items in ops:
            dec = codec.ElementDecoder(etype)
            back = []
            for msg in codec.encode_elements(family, table, name, etype, items, delete=verb == "delete"):
                back += [k if v is None or verb == "delete" else f"{k} : {v}" for k, v in dec.decode(msg[16:])]
            assert back == items, (name, items[:3], back[:3])
            cmds.append(d.ElementCommand.make(verb, name, back))
        with self.kernel.lock:
            FakeNft.run(self.kernel, cmds)
        return sum(len(c.items) for c in cmds)
