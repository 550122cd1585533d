"""proxy/nftables.py on the kernel, in a scratch netns: transactions land whole or not at all,
reads name one object, and the context stays in the netns it was made for; the Fake
(proxy/nft_fake.py) refuses what the kernel refuses."""
import os
import subprocess

import pytest
from kubeweft.proxy.nft_commands import AddElements
from kubeweft.proxy.nft_transaction import Transaction
from kubeweft.proxy.nftables import Nft, NftError
from kubeweft.proxy.table_readback import parse_elements

from tests.unit.test_nft_fake import ACCEPTED, REFUSED, T, base

from .netns_helpers import scratch_netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


@pytest.fixture
def scratch():
    with scratch_netns("nftl") as (name,):
        yield name


def test_transactions_are_atomic_and_bound_to_their_netns(scratch):
    nft = Nft(scratch)
    nft.run(['add table ip t { comment "test table"; }',
             ('add map ip t m { typeof ip daddr . meta l4proto . th dport . numgen random mod 2 : '
              'ip daddr . th dport; comment "service port . slot -> endpoint"; }'),
             'add element ip t m { 10.96.0.10 . tcp . 80 . 0 : 10.244.1.2 . 8080 }',
             'add chain ip t lb2 { comment "two endpoints"; }',
             'add rule ip t lb2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @m'])
    with pytest.raises(NftError, match="No such file"):
        nft.run(['add element ip t m { 10.96.0.11 . tcp . 80 . 0 : 10.244.1.3 . 8080 }',
                 'add element ip t absent { 1.2.3.4 }'])
    elems = nft.list("map ip t m")[1]["map"]["elem"]
    assert elems == [[{"concat": ["10.96.0.10", "tcp", 80, 0]}, {"concat": ["10.244.1.2", 8080]}]]
    assert nft.list("map ip t nope") == []
    listed = subprocess.run(["ip", "netns", "exec", scratch, "nft", "list", "table", "ip", "t"],
                            capture_output=True, text=True, check=True, timeout=10).stdout
    assert 'comment "two endpoints"' in listed
    assert Nft().list("table ip t") == []    # a context made here sees the test's own netns, not the scratch one


def test_the_fake_refuses_what_the_kernel_refuses(scratch):
    """Each transaction the Fake (proxy/nft_fake.py) refuses is refused by the kernel too, and
    leaves nothing there either; the transactions it accepts, the kernel accepts."""
    nft = Nft(scratch)

    def fresh() -> None:
        nft.run(f"add table {T.ref}\ndelete table {T.ref}")
        nft.run(Transaction(T, base()))

    def elements(name: str) -> frozenset[str] | dict[str, str]:
        return parse_elements(nft.list(f"{'map' if name == 'vm' else 'set'} {T.ref} {name}"))[1]
    for what, commands in sorted(REFUSED.items()):
        fresh()
        with pytest.raises(NftError):
            nft.run(Transaction(T, [AddElements("s", ("10.0.0.7",)), *commands]))
        assert elements("s") == frozenset() and elements("vm") == {}, what
        assert nft.exists(f"chain {T.ref} lb") and nft.exists(f"set {T.ref} s"), what
    fresh()
    for commands in ACCEPTED:
        nft.run(Transaction(T, commands))
    assert not nft.exists(f"set {T.ref} s") and not nft.exists(f"map {T.ref} vm")
