"""The two IP families of the service proxy, and what differs between them in nftables. Pure.

kube-proxy's nftables mode runs one proxier per family, with tables `ip kube-proxy` and
`ip6 kube-proxy`; kubeweft does the same with `ip kubeweft` and `ip6 kubeweft`. Everything a
renderer writes differently for IPv6 (the table family, the payload selector, the address type,
loopback, host prefix length, how an address and port are joined) is a field here.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class IpFamily:
    version: int        # 4 | 6
    nft: str            # the table family and payload selector: ip | ip6
    addr: str           # nft's address type: ipv4_addr | ipv6_addr
    loopback: str       # never a NodePort address: 127.0.0.0/8 | ::1
    host_len: int       # the prefix length of one address: 32 | 128
    af: int             # socket.AF_INET | AF_INET6
    label: str          # the API's spelling (addressType, ipFamilies) and kube-proxy's ip_family label

    def host_port(self, ip: str, port: int | str) -> str:
        """'10.0.0.1:80' or '[fd00::1]:80': nft's and everyone's spelling of an address with a port."""
        return f"{ip}:{port}" if self.version == 4 else f"[{ip}]:{port}"


IPV4 = IpFamily(4, "ip", "ipv4_addr", "127.0.0.0/8", 32, socket.AF_INET, "IPv4")
IPV6 = IpFamily(6, "ip6", "ipv6_addr", "::1", 128, socket.AF_INET6, "IPv6")
FAMILIES = {4: IPV4, 6: IPV6}


def version_of(address: str) -> int:
    """4 or 6, by the address's spelling alone (IPv6 has colons, IPv4 never)."""
    return 6 if ":" in address else 4
