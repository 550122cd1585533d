"""Source checks on pod veths: a pod sends only with its own MAC and addresses, like Calico's
and Cilium's. Everything else is dropped and counted before any Service or policy rule sees it.

    table bridge kubeweft-cni
      set pod_macs        ifname . ether_addr   a pod's host veth . its MAC
      set pod_ips         ifname . ipv4_addr    a pod's host veth . its IPv4 address
      set pod_ips6        ifname . ipv6_addr    a pod's host veth . its IPv6 addresses (link-local too)
      set pod_nd_targets  ifname . 128 bits     the same IPv6 addresses, typed as the raw bytes of
                                                a neighbour advertisement's target (nft has no
                                                selector for it, and a set holds one type)
      counter spoofed_<reason>                  one per reason (REASONS), read by the agent's metrics
      chain prerouting   filter hook prerouting priority -300: frames of kw* ports to pod_source
      chain pod_source   the MAC, then a verdict map on the ethertype to pod_source_{ipv4,arp,ipv6}
                         (each ends in accept), any other ethertype dropped

Why the bridge family: every pod veth is a port of the node's bridge, so one chain sees every
frame a pod sends, routed (to the gateway) or bridged (to a pod), at the bridge's first hook.
br_netfilter hands bridged IPv4 to the ip hooks (conntrack, Services, policy) from the same
bridge prerouting hook at priority 0, so -300 runs first. A netdev ingress chain per veth would
be as early but needs its chain rewritten (device list) at every ADD and DEL; here an ADD or DEL
is two set elements.

Fail closed: the chain checks every port named like a host veth (kw*), so a pod's frames are
dropped from the moment its veth exists until its ADD has added its elements (ADD returns only
after), and a veth whose elements are missing sends nothing.

What a pod may send: IPv4 and ARP from its own MAC and address (ARP with a 0.0.0.0 sender, the
RFC 5227 probe, is dropped: Linux sends none by itself and pods have no DHCP); IPv6 from its own
addresses: its IPv6 pod address if it has one, its link-local address (EUI-64 from its MAC: the
CNI gives the pod's interface addr_gen_mode 0) and :: (MLD before the link-local address
exists); neighbour advertisements only for those addresses, and no router advertisement or
redirect (a pod is no router: either would steer other pods' traffic); no other ethertype (an
802.1Q tag would hide the inner header from these checks).

Standard library only, as the rest of the CNI's node side.
"""
from __future__ import annotations

import contextlib
import ipaddress
import threading

from kubeweft.cni import netns, nft
from kubeweft.cni.datapath import HOST_VETH_PREFIX, link_local
from kubeweft.cni.errors import DATAPATH_FAILURE, CniError

FAMILY = "bridge"
TABLE = "kubeweft-cni"
SET_MACS = "pod_macs"
SET_IPS = "pod_ips"
SET_IPS6 = "pod_ips6"
SET_ND = "pod_nd_targets"
STALE_ATTEMPTS = 5      # reads of the sets when a concurrent DEL changes them under a clean-up
SETS = (SET_MACS, SET_IPS, SET_IPS6, SET_ND)
COUNTER_PREFIX = "spoofed_"
# reason -> family label of kubeweft_spoofed_packets_total
REASONS = {"mac": "ethernet", "ipv4": "ipv4", "arp": "arp", "ipv6": "ipv6", "ndp": "ipv6",
           "ethertype": "ethernet"}
# The checks of one frame: its MAC, then one chain per ethertype picked by a verdict map, so an
# IPv4 frame crosses 5 rules and one port-name match where one flat chain took 8 of each.
CHAIN_POD = "pod_source"
CHAIN_IPV4 = "pod_source_ipv4"
CHAIN_ARP = "pod_source_arp"
CHAIN_IPV6 = "pod_source_ipv6"
CHECK_CHAINS = {CHAIN_POD: "a pod's frame: its MAC, then the checks of its ethertype; any other ethertype dropped",
                CHAIN_IPV4: "IPv4 from the pod's address", CHAIN_ARP: "ARP from the pod's address and MAC",
                CHAIN_IPV6: "IPv6 from the pod's addresses; its neighbour advertisements; no RA or redirect"}
# an ICMPv6 neighbour advertisement's target address: bytes 8-23 of the ICMPv6 header (RFC 4861)
ND_TARGET = "@th,64,128"


# ---- pure core ---------------------------------------------------------------------------

def render_base() -> str:
    """The table, sets, counters and the chain, as nft commands (idempotent: add + flush)."""
    t = f"{FAMILY} {TABLE}"
    port = f'iifname "{HOST_VETH_PREFIX}*"'
    lines = [
        f'add table {t} {{ comment "kubeweft CNI: pods send only from their own MAC and address"; }}',
        f'add set {t} {SET_MACS} {{ type ifname . ether_addr; comment "pod host veth . pod MAC"; }}',
        f'add set {t} {SET_IPS} {{ type ifname . ipv4_addr; comment "pod host veth . pod IPv4"; }}',
        (f'add set {t} {SET_IPS6} {{ type ifname . ipv6_addr; '
         f'comment "pod host veth . pod IPv6, link-local included"; }}'),
        (f'add set {t} {SET_ND} {{ typeof iifname . {ND_TARGET}; '
         f'comment "pod host veth . an IPv6 address the pod may advertise (as raw bytes)"; }}'),
        *(f'add counter {t} {COUNTER_PREFIX}{r} {{ comment "frames from pods dropped: {r}"; }}'
          for r in REASONS),
        (f'add chain {t} prerouting {{ comment "source checks of frames from pod veths"; '
         f"type filter hook prerouting priority -300; policy accept; }}"),
        *(f'add chain {t} {name} {{ comment "{what}"; }}' for name, what in CHECK_CHAINS.items()),
        f"flush chain {t} prerouting",
        *(f"flush chain {t} {name}" for name in CHECK_CHAINS),
        f"add rule {t} prerouting {port} jump {CHAIN_POD}",
        (f'add rule {t} {CHAIN_POD} iifname . ether saddr != @{SET_MACS} '
         f'counter name "{COUNTER_PREFIX}mac" drop'),
        (f"add rule {t} {CHAIN_POD} ether type vmap {{ ip : jump {CHAIN_IPV4}, arp : jump {CHAIN_ARP}, "
        f"ip6 : jump {CHAIN_IPV6} }}"),
        f'add rule {t} {CHAIN_POD} counter name "{COUNTER_PREFIX}ethertype" drop',
        (f'add rule {t} {CHAIN_IPV4} iifname . ip saddr != @{SET_IPS} '
         f'counter name "{COUNTER_PREFIX}ipv4" drop'),
        f"add rule {t} {CHAIN_IPV4} accept",
        (f'add rule {t} {CHAIN_ARP} iifname . arp saddr ip != @{SET_IPS} '
         f'counter name "{COUNTER_PREFIX}arp" drop'),
        (f'add rule {t} {CHAIN_ARP} iifname . arp saddr ether != @{SET_MACS} '
         f'counter name "{COUNTER_PREFIX}arp" drop'),
        f"add rule {t} {CHAIN_ARP} accept",
        (f'add rule {t} {CHAIN_IPV6} ip6 saddr != ::/128 iifname . ip6 saddr != @{SET_IPS6} '
         f'counter name "{COUNTER_PREFIX}ipv6" drop'),
        (f'add rule {t} {CHAIN_IPV6} icmpv6 type nd-neighbor-advert iifname . {ND_TARGET} != @{SET_ND} '
         f'counter name "{COUNTER_PREFIX}ndp" drop'),
        (f'add rule {t} {CHAIN_IPV6} icmpv6 type {{ nd-router-advert, nd-redirect }} '
         f'counter name "{COUNTER_PREFIX}ndp" drop'),
        f"add rule {t} {CHAIN_IPV6} accept",
    ]
    return "\n".join(lines) + "\n"


def render_pod_elements(host_veth: str, mac: str, ips) -> dict[str, list]:
    """set name -> the pod's elements (JSON): its MAC, its IPv4 address, its IPv6 addresses and
    its link-local one. `ips`: the pod's addresses (one or a list, either family)."""
    addrs = [ipaddress.ip_address(str(a).split("/")[0]) for a in (ips if isinstance(ips, (list, tuple)) else [ips])]
    v6 = [a for a in addrs if a.version == 6] + [link_local(mac)]
    return {SET_MACS: [{"concat": [host_veth, mac.lower()]}],
            SET_IPS: [{"concat": [host_veth, str(a)]} for a in addrs if a.version == 4],
            SET_IPS6: [{"concat": [host_veth, str(a)]} for a in v6],
            SET_ND: [{"concat": [host_veth, f"0x{int(a):032x}"]} for a in v6]}


def parse_held(listing: dict) -> dict[str, dict[str, list]]:
    """host veth -> set name -> its elements, from a JSON listing of the sets. Pure."""
    out: dict[str, dict[str, list]] = {}
    for obj in listing.get("nftables", []):
        s = obj.get("set")
        if not s or s.get("name") not in SETS:
            continue
        for e in s.get("elem", []):
            val = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
            if isinstance(val, dict) and val.get("concat"):
                out.setdefault(val["concat"][0], {}).setdefault(s["name"], []).append(val)
    return out


def plan_stale(held: dict[str, dict[str, list]], live) -> dict[str, list]:
    """set name -> the elements of every host veth in `held` that is not in `live`. Pure."""
    out: dict[str, list] = {}
    for veth, sets in held.items():
        if veth not in live:
            for name, elems in sets.items():
                out.setdefault(name, []).extend(elems)
    return out


def render_ops(delete: dict[str, list], add: dict[str, list]) -> dict:
    cmds = []
    for verb, what in (("delete", delete), ("add", add)):
        for name, elems in what.items():
            if elems:
                cmds.append({verb: {"element": {"family": FAMILY, "table": TABLE, "name": name,
                                                "elem": elems}}})
    return {"nftables": cmds}


def parse_counters(listing: dict) -> dict[str, int]:
    """reason -> packets dropped, from a JSON listing of the table. Pure."""
    out = {}
    for obj in listing.get("nftables", []):
        c = obj.get("counter")
        if c and c.get("table") == TABLE and c["name"].startswith(COUNTER_PREFIX):
            out[c["name"][len(COUNTER_PREFIX):]] = c.get("packets", 0)
    return out


# ---- the shell ---------------------------------------------------------------------------

def ensure_base() -> None:
    nft.run_text(render_base())


class _Held:
    """What the sets hold per host veth in one netns, read from the kernel once and then kept in
    step with each transaction, so that an ADD or a DEL is one request (listing the four sets
    costs ~1 ms more per call here). Any failed write reads the sets again and retries once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_veth: dict[str, dict[str, list]] | None = None

    def load(self) -> dict[str, dict[str, list]]:
        # one set per request: nft 1.0.6 fails a JSON request holding two list commands (ENOENT)
        listed = [obj for n in SETS for obj in nft.run_json(
            {"nftables": [{"list": {"set": {"family": FAMILY, "table": TABLE, "name": n}}}]}).get("nftables", [])]
        self.by_veth = parse_held({"nftables": listed})
        return self.by_veth

    def replace(self, host_veth: str, new: dict[str, list]) -> None:
        """Make the veth's elements `new` ({} removes them) in one transaction."""
        with self.lock:
            for attempt in (1, 2):
                try:
                    held = self.by_veth if self.by_veth is not None else self.load()
                    stale = held.get(host_veth, {})
                    if not stale and not new:
                        return
                    nft.run_json(render_ops(stale, new))
                    break
                except CniError:
                    if attempt == 2:
                        raise
                    if new:
                        ensure_base()      # first use in this netns, or the table was removed
                    self.by_veth = None
                    with contextlib.suppress(CniError):
                        self.load()
                    if self.by_veth is None:
                        if not new:
                            return         # no table: nothing to forget
                        self.by_veth = {}
            if new:
                held[host_veth] = new
            else:
                held.pop(host_veth, None)

    def keep_only(self, list_live) -> list[str]:
        """Read the sets from the kernel and remove, in one transaction, the elements of every
        host veth not in list_live(); the veths whose elements went. The links are listed after
        the sets are read: an ADD writes its elements only once its veth exists, so no live
        pod's elements can be taken for stale."""
        with self.lock:
            for _ in range(STALE_ATTEMPTS):
                try:
                    held = self.load()
                except CniError:
                    self.by_veth = None
                    return []           # no table: nothing held
                live = set(list_live())
                stale = sorted(set(held) - set(live))
                if not stale:
                    return []
                try:
                    nft.run_json(render_ops(plan_stale(held, live), {}))
                except CniError:
                    # a DEL run by the executable without the agent removed some of them
                    # meanwhile (the whole transaction fails on one missing element): read again
                    continue
                for veth in stale:
                    held.pop(veth)
                return stale
            self.by_veth = None         # read again on next use
            raise CniError(DATAPATH_FAILURE, "source checks of missing veths not removed",
                           f"the sets changed under {STALE_ATTEMPTS} attempts")


_held: dict[int, _Held] = {}
_held_lock = threading.Lock()


def _state() -> _Held:
    """The sets' state of the calling thread's netns (made on first use there)."""
    ino = netns.current_inode()
    with _held_lock:
        return _held.setdefault(ino, _Held())


def allow_pod(host_veth: str, mac: str, ips) -> None:
    """Let the pod behind host_veth send from mac and its addresses `ips` (one or a list) only,
    replacing what it had: one transaction."""
    _state().replace(host_veth, render_pod_elements(host_veth, mac, ips))


def forget_pod(host_veth: str) -> None:
    """Remove the pod's elements; none (or no table) is fine."""
    _state().replace(host_veth, {})


def forget_missing(list_live) -> list[str]:
    """Remove the elements of every interface not in list_live() (veths removed while no agent
    kept the sets: a DEL made without the agent, a crash); the veths whose elements went."""
    return _state().keep_only(list_live)


def reset() -> None:
    """Forget what was read from every netns (for tests that delete namespaces)."""
    with _held_lock:
        _held.clear()


def read_counters() -> dict[str, int]:
    """reason -> packets dropped in this netns ({} without the table)."""
    try:
        return parse_counters(nft.run_json({"nftables": [{"list": {"table": {"family": FAMILY,
                                                                             "name": TABLE}}}]}))
    except CniError:
        return {}
