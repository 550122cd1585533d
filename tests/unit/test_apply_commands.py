"""service_proxy.split_commands / chunk_ops / send_pipelined: how a diff's commands are cut into
nft text and netlink element transactions, in order, and what a failure stops."""
from __future__ import annotations

import threading

import pytest
from kubeweft.proxy import diff_services as d
from kubeweft.proxy import service_proxy as sp
from kubeweft.proxy.nftables import NftError


def test_split_keeps_structure_around_the_elements_and_intervals_as_text():
    cmds = ["add chain ip kubeweft lb-tcp-2",
            d.ElementCommand.make("delete", "hairpin", ["1.1.1.1 . 1.1.1.1"]),
            d.ElementCommand.make("add", "firewall-allow", ["198.51.100.1 . tcp . 80 . 203.0.113.0/24"]),
            d.ElementCommand.make("add", "backends-tcp-2", ["10.96.0.1 . 80 . 0 : 10.244.1.2 . 8080"]),
            d.ElementCommand.make("delete", "firewall-allow", ["198.51.100.2 . tcp . 80 . 203.0.113.0/24"]),
            "delete chain ip kubeweft lb-tcp-3"]
    pre, ops, post = sp.split_commands(cmds)
    # interval elements (no netlink codec) stay text: added before the others, deleted after
    assert pre == [cmds[0], cmds[2]]
    assert [(v, n, items) for v, n, _, items in ops] == [("delete", "hairpin", ["1.1.1.1 . 1.1.1.1"]),
                                                         ("add", "backends-tcp-2", cmds[3].items)]
    assert post == [cmds[4], cmds[5]]


def test_chunks_keep_order_and_size():
    ops = [("add", "a", None, [f"a{i}" for i in range(5)]), ("add", "b", None, ["b0"]),
           ("delete", "c", None, [f"c{i}" for i in range(4)])]
    chunks = sp.chunk_ops(ops, 3)
    assert [[(n, items) for _, n, _, items in c] for c in chunks] == [
        [("a", ["a0", "a1", "a2"])], [("a", ["a3", "a4"]), ("b", ["b0"])], [("c", ["c0", "c1", "c2"])],
        [("c", ["c3"])]]
    assert sp.chunk_ops([], 3) == []


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
    sp.send_pipelined(link, chunks)
    assert link.sent == chunks
    assert threading.current_thread().name not in link.threads


def test_a_failed_chunk_stops_the_rest_and_is_raised():
    link = RecordingLink(fail_at=1)
    chunks = [[("add", "m", None, [str(i)])] for i in range(6)]
    with pytest.raises(NftError):
        sp.send_pipelined(link, chunks)
    assert link.sent == chunks[:1]
    assert len(link.prepared) <= 4          # the queue holds one: no more than two ahead of the failure


class RecordingNft:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.elements = self

    def run(self, *args):
        if len(args) == 1:                   # Nft.run(commands): one libnftables transaction
            self.calls.append(("nft", list(args[0])))
        else:                                # ElementLink.run(family, table, ops)
            self.calls.append(("netlink", [(v, n, items) for v, n, _, items in args[2]]))


def _elements(n: int) -> d.ElementCommand:
    return d.ElementCommand.make("add", "hairpin", [f"10.244.{i // 256}.{i % 256} . 10.244.{i // 256}.{i % 256}"
                                                    for i in range(n)])


def test_element_changes_alone_are_one_netlink_transaction():
    nft = RecordingNft()
    sp.apply_commands(nft, [_elements(3)])
    assert [kind for kind, _ in nft.calls] == ["netlink"]


def test_structure_with_few_elements_is_one_nft_transaction():
    nft = RecordingNft()
    cmds = ["add chain ip kubeweft lb-tcp-4", _elements(5), "delete chain ip kubeweft lb-tcp-3"]
    sp.apply_commands(nft, cmds)
    assert nft.calls == [("nft", cmds)]


def test_structure_with_many_elements_goes_around_one_netlink_transaction(monkeypatch):
    monkeypatch.setattr(sp, "TEXT_MAX", 4)
    nft = RecordingNft()
    big = _elements(5)
    sp.apply_commands(nft, ["add chain ip kubeweft lb-tcp-4", big, "delete chain ip kubeweft lb-tcp-3"])
    assert nft.calls == [("nft", ["add chain ip kubeweft lb-tcp-4"]), ("netlink", [("add", "hairpin", big.items)]),
                         ("nft", ["delete chain ip kubeweft lb-tcp-3"])]


def test_the_empty_load_adds_cluster_ips_after_the_verdict_maps():
    # a ClusterIP in cluster-ips but not yet in service-ips is refused (service-check), so an
    # address goes into cluster-ips only once its Service is complete
    ops = [("add", n, None, ["x"]) for n in ("backends-tcp-3", "cluster-ips", "hairpin", "service-ips")]
    assert [n for _, n, _, _ in sp.order_for_load(ops)] == ["backends-tcp-3", "hairpin", "service-ips",
                                                            "cluster-ips"]


def test_a_sender_that_never_answers_is_an_error_not_a_success(monkeypatch):
    monkeypatch.setattr(sp, "SEND_TIMEOUT", 0.2)
    release = threading.Event()

    class StuckLink(RecordingLink):
        def send(self, ops):
            release.wait(5)
            return super().send(ops)
    try:
        with pytest.raises(NftError):
            sp.send_pipelined(StuckLink(), [[("add", "m", None, ["0"])]])
    finally:
        release.set()
