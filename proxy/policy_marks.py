"""The packet-mark bits the NetworkPolicy table and the ClusterNetworkPolicy table pass a new
connection's first packet between them, as it crosses their base chains in priority order
(Admin tier at filter - 10, NetworkPolicy at filter, Baseline tier at filter + 10). A base
chain's accept ends only that chain; the next one at the hook still sees the packet, so the
tiers' decisions travel in the mark. Bits clear of the service table's 0x4000 and the CNI's
hostPort 0x2000; every writer ORs its bit in, none overwrites the mark."""
from __future__ import annotations

ADMIN_EGRESS = 0x1000        # an Admin rule accepted the source's egress: NetworkPolicy and Baseline skip it
ADMIN_INGRESS = 0x0800       # an Admin rule accepted the destination's ingress
NP_EGRESS = 0x0400           # NetworkPolicy isolates the source for egress and decided it: Baseline skips it
NP_INGRESS = 0x0200          # NetworkPolicy isolates the destination for ingress and decided it


def mark_test(bits: int) -> str:
    """The expression of a match on some of these bits (nft: `meta mark & 0x1400 == 0`)."""
    return f"meta mark & {bits:#x}"
