"""The transport protocols a Kubernetes port may name (Services, Pods, NetworkPolicies, the CNI's
portMappings), in the API's spelling and in nft's."""
from __future__ import annotations

PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}     # the API's name -> nft's
NFT_PROTOCOLS = tuple(PROTOCOLS.values())
