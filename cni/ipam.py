"""IPAM: addresses of one node's pod ranges (one per IP family), reserved per (container ID,
ifname), crash-safe.

The store is a directory, like the reference host-local plugin's, shared by both families:

    <data_dir>/10.244.0.5        one file per reserved address, holding "container_id\\nifname"
    <data_dir>/fd00:10:244::5    (an IPv6 address's file: its compressed text form)
    <data_dir>/last_reserved_ip  the IPv4 cursor, so that a released address is not handed out at
                                 once (last_reserved_ip.ipv6: the IPv6 one)
    <data_dir>/.lock             flock()ed around every operation (the agent and the shim's
                                 fallback DEL may both touch the store)

An address is claimed by writing the record to a temporary file and hard-linking it to the
address's name: link() is atomic and fails if the name exists, so a kill -9 at any instant
leaves either no claim or a complete one, never a half-written file and never two owners.
Temporary files a crash leaves behind are removed under the lock. Nothing is fsync'ed (nor does
host-local): a reservation means something only while the node runs, since after a reboot no
pod veth is left and the agent's start-up reconcile frees every reservation; and a claim is
visible only once complete, so only a power loss can leave a torn record, which gc/reconcile
remove. Two fsyncs per ADD cost 5-15 ms on this machine's disk for nothing.

A store that cannot be written (ENOSPC, EROFS, EDQUOT, EIO) makes claim() raise the CNI's I/O
failure (code 5, not 11 "try again later": a full or read-only disk does not clear up by itself)
and leaves no reservation; lookups still work on a read-only store (the lock file is then opened
read-only: flock needs no write access).

A dual-stack attachment holds one address per family: `Pool` claims them one after the other
under each family's Allocator. A crash between the two claims leaves a reservation without a
veth, which the agent's start-up reconcile frees, as it frees a single-family one.

The pure part (candidate order, record format) is in the plan_/parse_/render_ functions.
"""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from kubeweft.cni.errors import ADDRESS_UNAVAILABLE, INVALID_NETWORK_CONFIG, IO_FAILURE, CniError

Key = tuple[str, str]          # (container_id, ifname)

CURSOR = "last_reserved_ip"
CURSOR_FILE = {4: CURSOR, 6: f"{CURSOR}.ipv6"}
LOCK = ".lock"
TMP_PREFIX = ".tmp-"


# ---- pure core ---------------------------------------------------------------------------

def render_record(container_id: str, ifname: str) -> bytes:
    return f"{container_id}\n{ifname}".encode()


def parse_record(data: bytes) -> Key | None:
    """The key a reservation file holds, or None if it is not one of ours."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    parts = text.rstrip("\n").split("\n")
    # host-local writes only the container ID in old versions; ifname then defaults to eth0
    if len(parts) == 1 and parts[0]:
        return parts[0], "eth0"
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    return None


def render_io_failure(store: Path, e: OSError) -> CniError:
    """The CNI error for a store that cannot be written: what happened, in words a runbook greps."""
    what = {errno.ENOSPC: "is full (ENOSPC)", errno.EDQUOT: "is over quota (EDQUOT)",
            errno.EROFS: "is read-only (EROFS)"}.get(e.errno, f"failed: {e.strerror or e}")
    return CniError(IO_FAILURE, f"IPAM store {store} {what}", str(e))


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_ADDRESS = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}


def parse_address_name(name: str, subnet: Network) -> Address | None:
    """The address a file name stands for, if it is an address of the subnet."""
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return None
    return addr if addr.version == subnet.version and addr in subnet else None


def plan_bounds(subnet: Network) -> tuple[int, int]:
    """The first and last address that may be handed out, as integers: the network address is
    never one (IPv6's Subnet-Router anycast), nor IPv4's broadcast."""
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    return first, last


def count_usable(subnet: Network) -> int:
    first, last = plan_bounds(subnet)
    return last - first            # every host address but the gateway


def plan_candidates(subnet: Network, gateway: Address, cursor: Address | None) -> Iterator[Address]:
    """Candidates in order, lazily (an IPv6 range is too large to list): the one after the
    cursor first, wrapping round, cursor last; never the gateway."""
    first, last = plan_bounds(subnet)
    n = last - first + 1
    start = first if cursor is None or not first <= int(cursor) < last else int(cursor) + 1
    make = _ADDRESS[subnet.version]
    for i in range(n):
        value = first + (start - first + i) % n
        if value != int(gateway):
            yield make(value)


# the longest prefix a pod range may have: room for a gateway and one pod at least
MAX_PREFIX = {4: 30, 6: 126}


def parse_subnet(subnet: str, gateway: str | None) -> tuple[Network, Interface]:
    try:
        net = ipaddress.ip_network(subnet, strict=False)
    except ValueError as e:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid subnet {subnet!r}", str(e)) from None
    if net.prefixlen > MAX_PREFIX[net.version]:
        raise CniError(INVALID_NETWORK_CONFIG, f"subnet {net} is too small",
                       f"a pod subnet needs a prefix of /{MAX_PREFIX[net.version]} or shorter")
    first, last = plan_bounds(net)
    if gateway:
        try:
            gw = ipaddress.ip_address(gateway.split("/")[0])
        except ValueError as e:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid gateway {gateway!r}", str(e)) from None
        if gw.version != net.version or not first <= int(gw) <= last:
            raise CniError(INVALID_NETWORK_CONFIG, f"gateway {gw} is not a host address of {net}")
    else:
        gw = net.network_address + 1
    return net, ipaddress.ip_interface(f"{gw}/{net.prefixlen}")


def parse_ranges(cidrs) -> list[str]:
    """The node's pod ranges ("10.244.1.0/24,fd00:10:244:1::/64" or a list): one per family, in
    the order given (a Node's podCIDRs list the cluster's primary family first, and the runtime
    takes the result's first address as the pod's primary IP)."""
    items = [c.strip() for c in (cidrs.split(",") if isinstance(cidrs, str) else cidrs) if c and c.strip()]
    if not items:
        raise CniError(INVALID_NETWORK_CONFIG, "no pod range")
    nets = [parse_subnet(c, None)[0] for c in items]
    if len({n.version for n in nets}) != len(nets):
        raise CniError(INVALID_NETWORK_CONFIG, f"pod ranges {items}: at most one per IP family")
    return [str(n) for n in nets]


# ---- the store ---------------------------------------------------------------------------

class Allocator:
    """Reservations of one subnet in one directory. Thread-safe, and safe across processes."""

    def __init__(self, data_dir: Path, subnet: str, gateway: str | None = None) -> None:
        self.subnet, self.gateway = parse_subnet(subnet, gateway)
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.version = self.subnet.version
        self._usable_count = count_usable(self.subnet)
        self._cursor_path = self.dir / CURSOR_FILE[self.version]
        self._lock = threading.Lock()
        self._lock_path = self.dir / LOCK

    # -- locking: a thread lock for this process, flock for the others
    def _locked(self):
        return _StoreLock(self._lock, self._lock_path)

    # -- reading
    def _scan(self, torn: list[Address] | None = None) -> dict[Address, Key]:
        """Every reservation on disk; removes temporary files a crashed writer left. Address files
        whose record cannot be read (torn by a power loss) are listed in `torn` if given."""
        out: dict[Address, Key] = {}
        with os.scandir(self.dir) as it:
            for entry in it:
                if entry.name.startswith(TMP_PREFIX):
                    _unlink(entry.path)       # we hold the lock: no writer is alive in it
                    continue
                addr = parse_address_name(entry.name, self.subnet)
                if addr is None:
                    continue
                try:
                    with open(entry.path, "rb") as f:
                        key = parse_record(f.read(256))
                except FileNotFoundError:
                    continue
                if key is not None:
                    out[addr] = key
                elif torn is not None:
                    torn.append(addr)
        return out

    def _cursor(self) -> Address | None:
        try:
            return parse_address_name(self._cursor_path.read_text().strip(), self.subnet)
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def _iface(self, addr: Address) -> Interface:
        return ipaddress.ip_interface(f"{addr}/{self.subnet.prefixlen}")

    # -- writing
    def _claim(self, addr: Address, key: Key) -> bool:
        """Atomically claim addr for key; False if someone holds it already."""
        tmp = self.dir / f"{TMP_PREFIX}{os.getpid()}-{threading.get_native_id()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, render_record(*key))
        except OSError:
            _unlink(tmp)               # a full disk: the empty file must not stay
            raise
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.dir / str(addr))
            return True
        except FileExistsError:
            return False
        finally:
            _unlink(tmp)

    def _write_cursor(self, addr: Address) -> None:
        tmp = self.dir / f"{TMP_PREFIX}cursor-{os.getpid()}"
        try:
            tmp.write_text(str(addr))
            os.replace(tmp, self._cursor_path)
        except OSError:
            _unlink(tmp)
            raise

    # -- the interface
    def reserve(self, container_id: str, ifname: str,
                requested: str | None = None) -> Interface:
        """The address of (container_id, ifname), reserving one if it has none. Idempotent."""
        return self.claim(container_id, ifname, requested)[0]

    def claim(self, container_id: str, ifname: str,
              requested: str | None = None) -> tuple[Interface, bool]:
        """reserve(), and whether the reservation was made by this call (False: it existed), in
        one pass over the store."""
        key = (container_id, ifname)
        want = None
        if requested:
            try:
                want = _ADDRESS[self.version](requested.split("/")[0])
            except ValueError as e:
                raise CniError(INVALID_NETWORK_CONFIG, f"invalid requested IP {requested!r}", str(e)) from None
            first, last = plan_bounds(self.subnet)
            if not first <= int(want) <= last or want == self.gateway.ip:
                raise CniError(ADDRESS_UNAVAILABLE, f"requested IP {want} is not available in {self.subnet}",
                               "it is outside the subnet, or its network, broadcast or gateway address")
        try:
            return self._claim_locked(key, want)
        except OSError as e:
            raise render_io_failure(self.dir, e) from None

    def _claim_locked(self, key: Key, want: Address | None) -> tuple[Interface, bool]:
        container_id, ifname = key
        with self._locked():
            held = self._scan()
            mine = [a for a, k in held.items() if k == key]
            if mine:
                if want is not None and want not in mine:
                    raise CniError(ADDRESS_UNAVAILABLE, f"{container_id}/{ifname} already holds {mine[0]}",
                                   f"requested {want}")
                return self._iface(want if want is not None else min(mine)), False
            if want is not None:
                if want in held or not self._claim(want, key):
                    raise CniError(ADDRESS_UNAVAILABLE, f"requested IP {want} is already allocated")
                return self._iface(want), True
            for addr in plan_candidates(self.subnet, self.gateway.ip, self._cursor()):
                if addr in held:
                    continue
                if self._claim(addr, key):
                    try:
                        self._write_cursor(addr)
                    except OSError:
                        _unlink(self.dir / str(addr))   # no reservation without its ADD
                        raise
                    return self._iface(addr), True
        raise CniError(ADDRESS_UNAVAILABLE, f"no IP addresses available in {self.subnet}",
                       f"{self._usable_count} addresses, all reserved")

    def release(self, container_id: str, ifname: str) -> list[Interface]:
        """Free the addresses of (container_id, ifname); nothing to free is fine."""
        key = (container_id, ifname)
        with self._locked():
            return [addr for _, addr in self._release_where(lambda k: k == key)]

    def lookup(self, container_id: str, ifname: str) -> Interface | None:
        key = (container_id, ifname)
        with self._locked():
            mine = [a for a, k in self._scan().items() if k == key]
        return self._iface(min(mine)) if mine else None

    def reservations(self) -> dict[Key, Interface]:
        """(container_id, ifname) -> address, for every reservation."""
        with self._locked():
            held = self._scan()
        return {k: self._iface(a) for a, k in sorted(held.items())}

    def gc(self, valid: set[Key]) -> list[tuple[Key, Interface]]:
        """Free every reservation whose key is not in valid; returns what was freed."""
        with self._locked():
            return self._release_where(lambda k: k not in valid)

    def reconcile(self, live: set[Key]) -> list[tuple[Key, Interface]]:
        """At agent start: keep only the reservations of live attachments (e.g. those whose host
        veth exists), free the rest and the leftovers of a crashed writer. Same as gc()."""
        return self.gc(live)

    def free_count(self) -> int:
        with self._locked():
            return self._usable_count - len(self._scan())

    def _release_where(self, doomed) -> list[tuple[Key, Interface]]:
        freed, torn = [], []
        for addr, key in sorted(self._scan(torn).items()):
            if doomed(key):
                _unlink(self.dir / str(addr))
                freed.append((key, self._iface(addr)))
        for addr in torn:                 # nobody can own a record nobody can read
            _unlink(self.dir / str(addr))
        return freed


class Pool:
    """The node's ranges, one Allocator per family over one store directory: every attachment
    holds one address of each range. The same interface as Allocator, with a list of addresses
    (in the ranges' order: the first is the pod's primary address) where Allocator has one."""

    def __init__(self, data_dir: Path, cidrs) -> None:
        self.ranges = [Allocator(data_dir, c) for c in parse_ranges(cidrs)]
        self.dir = self.ranges[0].dir

    @property
    def subnets(self) -> list[Network]:
        return [a.subnet for a in self.ranges]

    @property
    def gateways(self) -> list[Interface]:
        return [a.gateway for a in self.ranges]

    def claim(self, container_id: str, ifname: str,
              requested: list[str] = ()) -> tuple[list[Interface], bool]:
        """An address of every range for (container_id, ifname), and whether this call reserved
        any (False: the attachment held them all). `requested` names at most one address per
        family. A failure in one range frees what this call reserved in the others."""
        wanted = plan_requested(requested, {a.version for a in self.ranges})
        got, made = [], []
        try:
            for alloc in self.ranges:
                addr, new = alloc.claim(container_id, ifname, wanted.get(alloc.version))
                got.append(addr)
                if new:
                    made.append(alloc)
        except BaseException:
            for alloc in made:
                alloc.release(container_id, ifname)
            raise
        return got, bool(made)

    def release(self, container_id: str, ifname: str) -> list[Interface]:
        return [addr for a in self.ranges for addr in a.release(container_id, ifname)]

    def lookup(self, container_id: str, ifname: str) -> list[Interface]:
        """The attachment's addresses ([] when it holds none)."""
        return [addr for a in self.ranges if (addr := a.lookup(container_id, ifname)) is not None]

    def reservations(self) -> dict[Key, list[Interface]]:
        out: dict[Key, list[Interface]] = {}
        for a in self.ranges:
            for key, addr in a.reservations().items():
                out.setdefault(key, []).append(addr)
        return out

    def gc(self, valid: set[Key]) -> list[tuple[Key, Interface]]:
        return [freed for a in self.ranges for freed in a.gc(valid)]

    def reconcile(self, live: set[Key]) -> list[tuple[Key, Interface]]:
        return self.gc(live)

    def free_count(self) -> int:
        """Attachments that can still be made: the fewest free addresses of any range."""
        return min(a.free_count() for a in self.ranges)


def plan_requested(requested, versions: set[int]) -> dict[int, str]:
    """IP family -> the address asked for in it; an address of a family without a range, or two
    of one family, is refused."""
    out: dict[int, str] = {}
    for text in requested or ():
        try:
            addr = ipaddress.ip_address(text.split("/")[0])
        except ValueError as e:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid requested IP {text!r}", str(e)) from None
        if addr.version not in versions:
            raise CniError(ADDRESS_UNAVAILABLE, f"requested IP {addr} is not available",
                           f"this node has no IPv{addr.version} pod range")
        if addr.version in out:
            raise CniError(INVALID_NETWORK_CONFIG, f"two IPv{addr.version} addresses requested",
                           f"{out[addr.version]} and {addr}")
        out[addr.version] = str(addr)
    return out


class _StoreLock:
    """The thread lock, then an exclusive flock on the store's lock file (own fd per use, so that
    two Allocators of one directory in one process exclude each other too)."""

    def __init__(self, tlock: threading.Lock, path: Path) -> None:
        self.tlock, self.path, self.fd = tlock, path, -1

    def __enter__(self) -> None:
        self.tlock.acquire()
        try:
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                if e.errno != errno.EROFS:
                    raise
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)   # reads still work
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            if self.fd >= 0:
                os.close(self.fd)
            self.tlock.release()
            raise

    def __exit__(self, *exc) -> None:
        try:
            os.close(self.fd)        # closing the only fd drops the flock
        finally:
            self.fd = -1
            self.tlock.release()


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise CniError(IO_FAILURE, f"cannot remove {path}", str(e)) from None
