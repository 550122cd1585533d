"""nft_transaction: how a Transaction is cut into nft text and netlink element transactions, in
order, on the product's Fake (proxy/nft_fake.py), and what a failure stops."""
from __future__ import annotations

import threading

import pytest
from kubeweft.proxy import nft_transaction as nt
from kubeweft.proxy import render_services as r
from kubeweft.proxy.nft_commands import AddChain, AddElements, DeleteChain, DeleteElements
from kubeweft.proxy.nft_fake import FakeNft
from kubeweft.proxy.nft_transaction import Transaction, apply_transaction
from kubeweft.proxy.nftables import NftError

CTX = r.NodeContext("node1")


def tx(commands) -> Transaction:
    return Transaction(r.SERVICE_TABLE, commands)


def test_split_keeps_structure_around_the_elements_and_intervals_as_text():
    cmds = [AddChain("lb-tcp-2", "spread over 2 endpoints in backends-tcp-2"),
            DeleteElements("hairpin", ("1.1.1.1 . 1.1.1.1",)),
            AddElements("firewall-allow", ("198.51.100.1 . tcp . 80 . 203.0.113.0/24",)),
            AddElements("backends-tcp-2", ("10.96.0.1 . 80 . 0 : 10.244.1.2 . 8080",)),
            DeleteElements("firewall-allow", ("198.51.100.2 . tcp . 80 . 203.0.113.0/24",)),
            DeleteChain("lb-tcp-3")]
    pre, ops, post = nt.split(tx(cmds))
    # interval elements (no netlink codec) stay text: added before the others, deleted after
    assert pre == [cmds[0], cmds[2]]
    assert [(v, n, items) for v, n, _, items in ops] == [("delete", "hairpin", ("1.1.1.1 . 1.1.1.1",)),
                                                         ("add", "backends-tcp-2", cmds[3].elements)]
    assert post == [cmds[4], cmds[5]]


def test_chunks_keep_order_and_size():
    ops = [("add", "a", None, [f"a{i}" for i in range(5)]), ("add", "b", None, ["b0"]),
           ("delete", "c", None, [f"c{i}" for i in range(4)])]
    chunks = nt.chunk_ops(ops, 3)
    assert [[(n, items) for _, n, _, items in c] for c in chunks] == [
        [("a", ["a0", "a1", "a2"])], [("a", ["a3", "a4"]), ("b", ["b0"])], [("c", ["c0", "c1", "c2"])],
        [("c", ["c3"])]]
    assert nt.chunk_ops([], 3) == []


class RecordingLink:
    def __init__(self, fail_at: int | None = None) -> None:
        self.prepared: list = []
        self.sent: list = []
        self.threads: set[str] = set()
        self.fail_at = fail_at

    def prepare(self, family, table, ops):
        self.prepared.append(ops)
        return ops

    def send(self, ops):
        self.threads.add(threading.current_thread().name)
        if len(self.sent) == self.fail_at:
            raise NftError("No such file or directory")
        self.sent.append(ops)
        return len(ops)


def test_pipelined_chunks_are_sent_in_order_on_another_thread():
    link = RecordingLink()
    chunks = [[("add", "m", None, [str(i)])] for i in range(6)]
    nt.send_pipelined(link, r.SERVICE_TABLE, chunks)
    assert link.sent == chunks
    assert threading.current_thread().name not in link.threads


def test_a_failed_chunk_stops_the_rest_and_is_raised():
    link = RecordingLink(fail_at=1)
    chunks = [[("add", "m", None, [str(i)])] for i in range(6)]
    with pytest.raises(NftError):
        nt.send_pipelined(link, r.SERVICE_TABLE, chunks)
    assert link.sent == chunks[:1]
    assert len(link.prepared) <= 4          # the queue holds one: no more than two ahead of the failure


def kernel() -> FakeNft:
    """The service table as a fresh agent leaves it, plus an unused chain lb-tcp-3; history
    starts after that."""
    fake = FakeNft()
    fake.run(tx(r.render_base(CTX)).add(AddChain("lb-tcp-3", "spread over 3 endpoints")))
    fake.history.clear()
    return fake


def _elements(n: int) -> AddElements:
    return AddElements("hairpin", tuple(f"10.244.{i // 256}.{i % 256} . 10.244.{i // 256}.{i % 256}"
                                        for i in range(n)))


def test_element_changes_alone_are_one_netlink_transaction():
    nft = kernel()
    apply_transaction(nft, tx([_elements(3)]))
    assert [kind for kind, _ in nft.history] == ["netlink"]


def test_structure_with_few_elements_is_one_nft_transaction():
    nft = kernel()
    cmds = [AddChain("lb-tcp-4", "spread over 4 endpoints"), _elements(5), DeleteChain("lb-tcp-3")]
    apply_transaction(nft, tx(cmds))
    assert nft.history == [("nft", cmds)]


def test_structure_with_many_elements_goes_around_one_netlink_transaction(monkeypatch):
    monkeypatch.setattr(nt, "TEXT_MAX", 4)
    nft = kernel()
    big = _elements(5)
    add, delete = AddChain("lb-tcp-4", "spread over 4 endpoints"), DeleteChain("lb-tcp-3")
    apply_transaction(nft, tx([add, big, delete]))
    assert nft.history == [("nft", [add]), ("netlink", [("add", "hairpin", big.elements)]), ("nft", [delete])]


def test_the_empty_load_adds_cluster_ips_after_the_verdict_maps():
    # a ClusterIP in cluster-ips but not yet in service-ips is refused (service-check), so an
    # address goes into cluster-ips only once its Service is complete
    ops = [("add", n, None, ["x"]) for n in ("backends-tcp-3", "cluster-ips", "hairpin", "service-ips")]
    assert [n for _, n, _, _ in nt.order_for_load(ops, r.SERVICE_TABLE.load_last)] == [
        "backends-tcp-3", "hairpin", "service-ips", "cluster-ips"]


def test_the_empty_load_is_pipelined_in_chunks(monkeypatch):
    monkeypatch.setattr(nt, "LOAD_CHUNK", 4)
    nft = kernel()
    apply_transaction(nft, tx([_elements(10)]), empty=True)
    assert [(kind, [len(items) for *_, items in ops]) for kind, ops in nft.history] == [
        ("netlink", [4]), ("netlink", [4]), ("netlink", [2])]
    assert len(nft.table(r.FAMILY, r.TABLE).sets["hairpin"]) == 10


def test_a_sender_that_never_answers_is_an_error_not_a_success(monkeypatch):
    monkeypatch.setattr(nt, "SEND_TIMEOUT", 0.2)
    release = threading.Event()

    class StuckLink(RecordingLink):
        def send(self, ops):
            release.wait(5)
            return super().send(ops)
    try:
        with pytest.raises(NftError):
            nt.send_pipelined(StuckLink(), r.SERVICE_TABLE, [[("add", "m", None, ["0"])]])
    finally:
        release.set()
