"""The CNI's own nftables tables in the node netns, one per IP family: pod masquerade and hostPort
DNAT.

    table ip kubeweft-cni          (IPv4; table ip6 kubeweft-cni, the same for IPv6, is made only
                                    once the node has an IPv6 cluster range or an IPv6 hostPort)
      map hostports      l4proto . port               -> pod ip . port   (hostPort, any node address)
      map hostip_ports   node ip . l4proto . port     -> pod ip . port   (hostPort with a hostIP)
      chain hostports_dnat   the two DNAT lookups
      chain prerouting   nat hook, dstnat: packets to a local address -> hostports_dnat
      chain output       nat hook, dstnat: the node's own connections to a local address -> same
      chain postrouting  nat hook, srcnat: pod CIDR leaving the cluster CIDR -> masquerade

One table per family rather than one inet table: the IPv4 table stays what it was on IPv4-only
nodes, and a map's value type is one family's address anyway. A hostPort without a hostIP is
DNATed in each family the pod has an address of; one with a hostIP only in that address's
family ("0.0.0.0": every IPv4 address, "::": every IPv6 one).

Every hostPort element carries its container ID as comment, so a DEL finds its elements even in
a fresh process (the shim's fallback) by reading only our maps; the agent keeps them in
memory and re-reads the maps only on its first use in a netns and to recover from a failed
write. The whole ruleset is never listed.

The table, chains and rules are written as nft commands, the elements as JSON: nft 1.0.6's
JSON parser drops table and chain comments, and every chain must carry one. Each public call
is one transaction. The context binds to the netns of the thread that first uses it there.

Through libnftables (Debian's python3-nftables), which the agent requires (`require_libnftables`
at its start). Only a process without it, the standalone shim's DEL on a host's python3, runs the
nft binary instead.
"""
from __future__ import annotations

import ipaddress
import json
import re
import threading
from dataclasses import dataclass

from kubeweft.cni import netns
from kubeweft.cni.errors import DATAPATH_FAILURE, INVALID_NETWORK_CONFIG, CniError
from kubeweft.cni.protocols import NFT_PROTOCOLS

try:
    import nftables  # Debian's python3-nftables (docs/architecture.md)
except ImportError:
    nftables = None

LIBNFTABLES_PACKAGE = "python3-nftables"

FAMILY = "ip"
FAMILIES = {4: "ip", 6: "ip6"}               # IP version -> nftables table family
_SELECTOR = {"ip": "ip", "ip6": "ip6"}       # the address selector of a table family: ip saddr, ip6 saddr
_ADDR_TYPE = {"ip": "ipv4_addr", "ip6": "ipv6_addr"}
TABLE = "kubeweft-cni"
MAP_ANY = "hostports"
MAP_IP = "hostip_ports"
# A packet mark bit: set in prerouting/output on pod traffic that a hostPort DNAT sends back to a
# pod (hairpin: the answer would otherwise go pod-to-pod and miss the conntrack reversal), and
# masqueraded in postrouting. kube-proxy uses 0x4000 and 0x8000; the proxy must not use this bit.
HAIRPIN_MARK = 0x2000
_SAFE_COMMENT = re.compile(r"[^A-Za-z0-9_.:@/-]")


@dataclass(frozen=True)
class HostPort:
    protocol: str
    host_port: int
    host_ip: str | None          # None: every local address of the node (in pod_ip's family)
    pod_ip: str
    container_port: int

    @property
    def map(self) -> str:
        return MAP_IP if self.host_ip else MAP_ANY

    @property
    def family(self) -> str:
        return FAMILIES[6 if ":" in self.pod_ip else 4]

    def key(self) -> dict:
        parts = [self.host_ip, self.protocol, self.host_port] if self.host_ip else \
            [self.protocol, self.host_port]
        return {"concat": parts}


# ---- pure core ---------------------------------------------------------------------------

def render_base(cluster_cidr: str | None = None, family: str = FAMILY) -> str:
    """The table of `family` (ip, ip6): maps, chains and hostPort rules, as nft commands
    (idempotent: add + flush). With the family's cluster CIDR known, pod traffic to a hostPort is
    marked for hairpin masquerade."""
    t = f"{family} {TABLE}"
    ip, addr = _SELECTOR[family], _ADDR_TYPE[family]
    if cluster_cidr:
        net = _network(cluster_cidr, family)
        mark = [f"add rule {t} hostports_dnat {ip} saddr {net} meta mark set meta mark or {HAIRPIN_MARK:#x}"]
        unmark = [(f"add rule {t} hostports_dnat {ip} saddr {net} meta mark set meta mark and "
                   f'{~HAIRPIN_MARK & 0xffffffff:#x} comment "no hostPort matched: no hairpin"')]
    else:
        mark = unmark = []
    lines = [
        f'add table {t} {{ comment "kubeweft CNI: pod masquerade and hostPort DNAT"; }}',
        (f"add map {t} {MAP_ANY} {{ type inet_proto . inet_service : {addr} . inet_service; "
         f'comment "hostPorts on every node address: l4proto . port -> pod ip . port, '
         f'comment = container ID"; }}'),
        (f"add map {t} {MAP_IP} {{ type {addr} . inet_proto . inet_service : {addr} . inet_service; "
         f'comment "hostPorts with a hostIP: node ip . l4proto . port -> pod ip . port, '
         f'comment = container ID"; }}'),
        f'add chain {t} hostports_dnat {{ comment "DNAT of hostPorts to their pods"; }}',
        (f'add chain {t} prerouting {{ comment "hostPorts: packets arriving for a local address"; '
         f"type nat hook prerouting priority dstnat; policy accept; }}"),
        (f'add chain {t} output {{ comment "hostPorts: the node\'s own connections to a local address"; '
         f"type nat hook output priority -100; policy accept; }}"),
        (f'add chain {t} postrouting {{ comment "masquerade of pod traffic leaving the cluster CIDR"; '
         f"type nat hook postrouting priority srcnat; policy accept; }}"),
        f"flush chain {t} hostports_dnat",
        *mark,
        f"add rule {t} hostports_dnat dnat {ip} to {ip} daddr . meta l4proto . th dport map @{MAP_IP}",
        f"add rule {t} hostports_dnat dnat {ip} to meta l4proto . th dport map @{MAP_ANY}",
        *unmark,
        f"flush chain {t} prerouting",
        f"add rule {t} prerouting fib daddr type local jump hostports_dnat",
        f"flush chain {t} output",
        f"add rule {t} output fib daddr type local jump hostports_dnat",
    ]
    return "\n".join(lines) + "\n"


def _network(cidr: str, family: str = FAMILY):
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as e:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid cluster CIDR {cidr!r}", str(e)) from None
    if FAMILIES[net.version] != family:
        raise CniError(INVALID_NETWORK_CONFIG, f"cluster CIDR {cidr!r} is not of family {family}")
    return net


def plan_cluster_cidrs(cluster_cidr: str) -> dict[str, str]:
    """"10.244.0.0/16,fd00:10:244::/56" -> table family -> CIDR (one per family)."""
    out: dict[str, str] = {}
    for cidr in (c.strip() for c in cluster_cidr.split(",") if c.strip()):
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError as e:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid cluster CIDR {cidr!r}", str(e)) from None
        if FAMILIES[net.version] in out:
            raise CniError(INVALID_NETWORK_CONFIG, f"cluster CIDRs {cluster_cidr!r}: two of one family")
        out[FAMILIES[net.version]] = str(net)
    return out


def render_masquerade(cluster_cidr: str, family: str = FAMILY) -> str:
    net = _network(cluster_cidr, family)
    t = f"{family} {TABLE}"
    ip = _SELECTOR[family]
    return (f"flush chain {t} postrouting\n"
            f"add rule {t} postrouting {ip} saddr {net} {ip} daddr != {net} masquerade "
            f'comment "pods to outside the cluster: the node\'s address"\n'
            f"add rule {t} postrouting meta mark and {HAIRPIN_MARK:#x} == {HAIRPIN_MARK:#x} masquerade "
            f'comment "pods to a hostPort of this node (hairpin)"\n')


def plan_hostports(mappings: list[dict], pod_ips) -> list[HostPort]:
    """The runtime's portMappings ({hostPort, containerPort, protocol, hostIP}) as map entries,
    for the pod's addresses `pod_ips` (one or a list, either family). "" means every address of
    each family the pod has; 0.0.0.0 and :: every address of theirs; a hostIP of a family the pod
    has no address of is skipped."""
    try:
        pods = [ipaddress.ip_address(p) for p in (pod_ips if isinstance(pod_ips, (list, tuple)) else [pod_ips])]
    except ValueError as e:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid pod IP {pod_ips!r}", str(e)) from None
    out = []
    for m in mappings:
        try:
            proto = str(m.get("protocol") or "tcp").lower()
            host_port, container_port = int(m["hostPort"]), int(m["containerPort"])
            host_ip = str(m.get("hostIP") or "")
        except (KeyError, TypeError, ValueError) as e:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid port mapping {m!r}", str(e)) from None
        if proto not in NFT_PROTOCOLS or not (0 < host_port < 65536 and 0 < container_port < 65536):
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid port mapping {m!r}")
        addr = None
        if host_ip:
            try:
                addr = ipaddress.ip_address(host_ip)
            except ValueError as e:
                raise CniError(INVALID_NETWORK_CONFIG, f"invalid hostIP in {m!r}", str(e)) from None
        for pod in pods:
            if addr is not None and addr.version != pod.version:
                continue
            hip = None if addr is None or addr.is_unspecified else str(addr)
            out.append(HostPort(proto, host_port, hip, str(pod), container_port))
    return list(dict.fromkeys(out))


def render_comment(container_id: str) -> str:
    return _SAFE_COMMENT.sub("_", container_id)[:128]


def render_element(hp: HostPort, container_id: str) -> list:
    return [{"elem": {"val": hp.key(), "comment": render_comment(container_id)}},
            {"concat": [hp.pod_ip, hp.container_port]}]


Held = tuple[str, str, dict]         # (table family, map name, key) of one element


def render_element_ops(container_id: str, old: list[Held], new: list[HostPort]) -> dict:
    """One JSON transaction: delete the container's old elements, add the new ones."""
    cmds = []
    for family in FAMILIES.values():
        for map_name in (MAP_ANY, MAP_IP):
            gone = [k for f, m, k in old if (f, m) == (family, map_name)]
            if gone:
                cmds.append({"delete": {"element": {"family": family, "table": TABLE, "name": map_name,
                                                    "elem": gone}}})
    for family in FAMILIES.values():
        for map_name in (MAP_ANY, MAP_IP):
            add = [render_element(hp, container_id) for hp in new if (hp.family, hp.map) == (family, map_name)]
            if add:
                cmds.append({"add": {"element": {"family": family, "table": TABLE, "name": map_name,
                                                 "elem": add}}})
    return {"nftables": cmds}


def parse_map_elements(listing: dict, map_name: str, family: str = FAMILY) -> dict[str, list[Held]]:
    """container ID (comment) -> [(family, map, key)] from a `list map` JSON answer."""
    out: dict[str, list[Held]] = {}
    for obj in listing.get("nftables", []):
        m = obj.get("map")
        if not m or m.get("name") != map_name:
            continue
        for pair in m.get("elem", []):
            key = pair[0]
            if isinstance(key, dict) and "elem" in key:
                comment = key["elem"].get("comment", "")
                out.setdefault(comment, []).append((family, map_name, key["elem"]["val"]))
    return out


# ---- the shell: one context and the applied state per netns -------------------------------

class _NftCli:
    """The `nft` binary behind python-nftables' interface (cmd, json_cmd): for a python without
    python3-nftables, i.e. a host's python3 running the standalone shim's DEL fallback."""

    def __init__(self) -> None:
        import shutil
        self.exe = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
        if self.exe is None:
            raise CniError(DATAPATH_FAILURE, "nftables is not installed",
                           f"neither the python module nftables ({LIBNFTABLES_PACKAGE}) nor the nft binary: "
                           "apt-get install nftables")

    def _run(self, args: list[str], data: str) -> tuple[int, str, str]:
        import subprocess
        proc = subprocess.run([self.exe, *args, "-f", "-"], input=data, capture_output=True, text=True,
                              timeout=20, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def cmd(self, text: str) -> tuple[int, str, str]:
        return self._run([], text)

    def json_cmd(self, cmds: dict) -> tuple[int, dict, str]:
        rc, out, err = self._run(["-j"], json.dumps(cmds))
        return rc, (json.loads(out) if out.strip() else {}), err


class _Table:
    def __init__(self) -> None:
        if nftables is None:
            self.nft = _NftCli()
        else:
            self.nft = nftables.Nftables()
            self.nft.set_json_output(True)
        self.lock = threading.Lock()
        self.based: set[str] = set()              # table families whose base is written
        self.cluster: dict[str, str] = {}         # table family -> cluster CIDR
        self.held: dict[str, list[Held]] | None = None    # comment -> elements

    def run_text(self, text: str) -> None:
        rc, _, err = self.nft.cmd(text)
        if rc != 0:
            raise CniError(DATAPATH_FAILURE, "nftables write failed", err.strip())

    def run_json(self, cmds: dict) -> dict:
        rc, out, err = self.nft.json_cmd(cmds)
        if rc != 0:
            raise CniError(DATAPATH_FAILURE, "nftables write failed", str(err).strip())
        return out if isinstance(out, dict) else (json.loads(out) if out else {})

    def ensure_base(self, family: str = FAMILY, extra: str = "", force: bool = False) -> None:
        if family not in self.based or extra or force:
            cluster = self.cluster.get(family)
            masq = render_masquerade(cluster, family) if cluster and not extra else ""
            self.run_text(render_base(cluster, family) + extra + masq)
            self.based.add(family)

    def load(self) -> dict[str, list[Held]]:
        """Read our maps (only them) to learn which elements belong to which container. A
        family without its table holds nothing; CniError if neither table exists."""
        held: dict[str, list[Held]] = {}
        found = False
        for family in FAMILIES.values():
            for map_name in (MAP_ANY, MAP_IP):
                try:
                    listing = self.run_json({"nftables": [{"list": {"map": {"family": family, "table": TABLE,
                                                                            "name": map_name}}}]})
                except CniError:
                    continue
                found = True
                for cid, elems in parse_map_elements(listing, map_name, family).items():
                    held.setdefault(cid, []).extend(elems)
        if not found:
            raise CniError(DATAPATH_FAILURE, "no kubeweft-cni table in this network namespace")
        self.held = held
        return held


_tables: dict[int, _Table] = {}
_tables_lock = threading.Lock()


def _table() -> _Table:
    """The context of the calling thread's netns (made on first use there)."""
    ino = netns.current_inode()
    with _tables_lock:
        tbl = _tables.get(ino)
        if tbl is None:
            tbl = _tables[ino] = _Table()
        return tbl


# ---- the interface -----------------------------------------------------------------------

def require_libnftables() -> None:
    """ModuleNotFoundError, naming the package to install, unless libnftables' python module is
    there: the agent must not fall back to the nft binary (a process per hostPort change)."""
    if nftables is None:
        raise ModuleNotFoundError(f"No module named 'nftables': apt-get install {LIBNFTABLES_PACKAGE}",
                                  name="nftables")


def ensure_masquerade(cluster_cidr: str) -> None:
    """The table of each family of cluster_cidr ("10.244.0.0/16", "fd00:10:244::/56" or both,
    comma-separated), its chains, and masquerade of pod traffic leaving the cluster range.
    Idempotent."""
    cidrs = plan_cluster_cidrs(cluster_cidr)
    tbl = _table()
    with tbl.lock:
        for family, cidr in cidrs.items():
            tbl.cluster[family] = cidr
            tbl.ensure_base(family, render_masquerade(cidr, family))


def set_hostports(container_id: str, mappings: list[dict], pod_ips) -> None:
    """Make the container's hostPorts exactly `mappings`, pointing at pod_ips (one or a list:
    the pod's addresses; one transaction). A hostPort held by another container is an error."""
    new = plan_hostports(mappings, pod_ips)
    cid = render_comment(container_id)
    tbl = _table()
    with tbl.lock:
        for family in sorted({hp.family for hp in new} | {FAMILY}):
            tbl.ensure_base(family)
        held = tbl.held if tbl.held is not None else tbl.load()
        for attempt in (1, 2):
            taken = {(f, m, json.dumps(k)) for c, els in held.items() if c != cid for f, m, k in els}
            clash = [hp for hp in new if (hp.family, hp.map, json.dumps(hp.key())) in taken]
            if clash:
                hp = clash[0]
                raise CniError(DATAPATH_FAILURE, f"hostPort {hp.host_port}/{hp.protocol} is in use",
                               f"held by another container (hostIP {hp.host_ip or 'any'})")
            try:
                tbl.run_json(render_element_ops(cid, held.get(cid, []), new))
                break
            except CniError:
                if attempt == 2:
                    raise
                for family in sorted({hp.family for hp in new} | {FAMILY}):
                    tbl.ensure_base(family, force=True)      # recover: the table may have been removed
                held = tbl.load()
        held[cid] = [(hp.family, hp.map, hp.key()) for hp in new]
        if not new:
            held.pop(cid, None)


def clear_hostports(container_id: str) -> None:
    """Remove the container's hostPorts; nothing to remove (or no table) is fine."""
    cid = render_comment(container_id)
    tbl = _table()
    with tbl.lock:
        try:
            held = tbl.held if tbl.held is not None else tbl.load()
        except CniError:
            return                                   # no table in this netns: nothing to clear
        if not held.get(cid):
            return
        try:
            tbl.run_json(render_element_ops(cid, held[cid], []))
        except CniError:
            held = tbl.load()                        # recover from what the kernel has
            if held.get(cid):
                tbl.run_json(render_element_ops(cid, held[cid], []))
        held.pop(cid, None)


def reset() -> None:
    """Drop every cached context and what it remembered (each keeps its netns alive while it
    lives); for tests that delete namespaces, and harmless otherwise."""
    with _tables_lock:
        _tables.clear()


def run_text(text: str) -> None:
    """nft commands as one transaction, through this netns' context (for the CNI's other tables)."""
    tbl = _table()
    with tbl.lock:
        tbl.run_text(text)


def run_json(cmds: dict) -> dict:
    """A JSON command list as one transaction, through this netns' context; the answer."""
    tbl = _table()
    with tbl.lock:
        return tbl.run_json(cmds)
