"""nftables set-element notifications from inside a network namespace, without a cache fill.

`nft monitor` first reads the whole ruleset (at 30k Services ~180k elements: minutes of CPU)
before it subscribes. The kernel needs none of that: a NETLINK_NETFILTER socket that joins the
multicast group NFNLGRP_NFTABLES gets one NFT_MSG_NEWSETELEM message per committed element
addition (sent at the commit), from the moment setsockopt returns. pyroute2 decodes them
(nft_set_elem_list_msg); this module only picks out table, set, key and data.

ElementMonitor records when an IPv4 address first shows up at the start of an element's data
(a map `... : ip daddr . tcp dport` holds the address in the data's first 4 bytes, network
order), for one table and the sets whose name starts with a prefix.

The socket is created on the monitor's own thread inside the netns (a netlink socket stays
bound to the netns it was made in); it sees nothing of any other netns.

Run as a script (`make bench` runs every bench/*.py) it measures itself in a scratch netns of
its own (h22e<pid>, removed): time to subscribe with a large map already loaded, and one
element's add -> seen time.

    .venv/bin/python bench/nft_events.py [--elements 100000]
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyroute2.netlink.marshal import Marshal
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES
from pyroute2.netlink.nfnetlink.nftsocket import NFPROTO_IPV4, NFT_MSG_NEWSETELEM, nft_set_elem_list_msg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubeweft.lab import netns as lab_netns

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7
SO_RCVBUFFORCE = 33
NEWSETELEM = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM


@dataclass(frozen=True)
class ElementEvent:
    """One element added to a set or map (key and data as the kernel holds them)."""
    family: int
    table: str
    set: str
    key: bytes
    data: bytes


def new_marshal() -> Marshal:
    """A pyroute2 marshal that decodes only NEWSETELEM (other messages: header only)."""
    m = Marshal()
    m.msg_map = {NEWSETELEM: nft_set_elem_list_msg}
    return m


def parse_new_elements(buf: bytes, marshal: Marshal | None = None) -> list[ElementEvent]:
    """The elements added, from one buffer of nfnetlink messages."""
    out: list[ElementEvent] = []
    for msg in (marshal or new_marshal()).parse(buf):
        if msg["header"]["type"] != NEWSETELEM or not isinstance(msg, nft_set_elem_list_msg):
            continue
        table, name = msg.get_attr("NFTA_SET_ELEM_LIST_TABLE"), msg.get_attr("NFTA_SET_ELEM_LIST_SET")
        for elem in msg.get_attr("NFTA_SET_ELEM_LIST_ELEMENTS") or ():
            key, data = elem.get_attr("NFTA_SET_ELEM_KEY"), elem.get_attr("NFTA_SET_ELEM_DATA")
            out.append(ElementEvent(msg["nfgen_family"], table or "", name or "",
                                    (key.get_attr("NFTA_DATA_VALUE") if key else None) or b"",
                                    (data.get_attr("NFTA_DATA_VALUE") if data else None) or b""))
    return out


def data_ipv4(event: ElementEvent) -> str | None:
    """The IPv4 address in the first 4 bytes of the element's data (None: no such data)."""
    return str(ipaddress.IPv4Address(event.data[:4])) if len(event.data) >= 4 else None


class ElementMonitor:
    """Arrival times (time.monotonic()) of IPv4 addresses in the data of elements added to
    `family table`, sets named `set_prefix*`, in netns `netns_name`. Subscribed when the
    constructor returns; close() it (it owns a thread and a socket)."""

    def __init__(self, netns_name: str, table: str, set_prefix: str = "", family: int = NFPROTO_IPV4,
                 rcvbuf: int = 8 << 20, timeout: float = 10.0) -> None:
        self.netns_name, self.table, self.set_prefix, self.family = netns_name, table, set_prefix, family
        self.rcvbuf = rcvbuf
        self.seen: dict[str, float] = {}
        self.overflows = 0                    # ENOBUFS: the kernel dropped notifications for us
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"nft-events-{netns_name}", daemon=True)
        self.thread.start()
        if not self._ready.wait(timeout):
            self.close()
            raise TimeoutError(f"netlink monitor in {netns_name} not ready in {timeout} s")
        if self._error is not None:
            self.close()
            raise RuntimeError(f"netlink monitor in {netns_name}: {self._error}") from self._error
        self.ready_s = time.monotonic() - t0

    def _open(self) -> socket.socket:
        with lab_netns.entered(self.netns_name):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
            # bind first: bind() sets the first 32 groups to its nl_groups (0), dropping a
            # membership joined before it
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
            sock.settimeout(0.2)              # how often the loop looks at _stop
        except BaseException:
            sock.close()
            raise
        return sock

    def _run(self) -> None:
        try:
            sock = self._open()
        except BaseException as e:  # noqa: BLE001 - handed to the constructor
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        marshal = new_marshal()
        try:
            while not self._stop.is_set():
                try:
                    buf = sock.recv(1 << 20)
                except TimeoutError:
                    continue
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        self.overflows += 1
                        continue
                    raise
                t = time.monotonic()
                self._record(parse_new_elements(buf, marshal), t)
        except BaseException as e:  # noqa: BLE001 - ends the monitor; waiters see it
            self._error = e
        finally:
            sock.close()
            with self.cond:
                self.cond.notify_all()

    def _record(self, events: list[ElementEvent], t: float) -> None:
        found = [ip for ev in events
                 if ev.family == self.family and ev.table == self.table and ev.set.startswith(self.set_prefix)
                 and (ip := data_ipv4(ev))]
        if found:
            with self.cond:
                for ip in found:
                    self.seen.setdefault(ip, t)
                self.cond.notify_all()

    def wait(self, ip: str, timeout: float) -> float | None:
        """The monotonic time `ip` was first seen, or None after `timeout` (or if the monitor ended)."""
        with self.cond:
            self.cond.wait_for(lambda: ip in self.seen or not self.thread.is_alive(), timeout)
            return self.seen.get(ip)

    @property
    def error(self) -> BaseException | None:
        return self._error

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)


# --- run as a script: the monitor measured in a scratch netns ----------------------------------
def _load_map(netns_name: str, n: int) -> float:
    """Table h22e with map backends-tcp-3 (the agent's shape) holding n elements; seconds to load."""
    lines = ["add table ip h22e",
             ("add map ip h22e backends-tcp-3 { typeof ip daddr . tcp dport . numgen random mod 3 : "
              "ip daddr . tcp dport ; }")]
    for i in range(0, n, 1000):
        elems = ", ".join(f"10.96.{j // 250 % 250}.{j % 250 + 1} . {80 + j // 62500} . {k} : "
                          f"10.250.{j // 250 % 250}.{j % 250 + 1} . 8080"
                          for j in range(i // 3, min(n, i + 1000) // 3) for k in range(3))
        if elems:
            lines.append(f"add element ip h22e backends-tcp-3 {{ {elems} }}")
    t0 = time.monotonic()
    lab_netns.run(netns_name, ["nft", "-f", "-"], input="\n".join(lines) + "\n", text=True,
                  capture_output=True, check=True, timeout=300)
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="netlink set-element monitor: subscribe and one-change times")
    ap.add_argument("--elements", type=int, default=90000, help="elements loaded before subscribing")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/nft_events.py needs root (a network namespace)", file=sys.stderr)
        return 2
    name = f"h22e{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        load_s = _load_map(name, args.elements)
        mon = ElementMonitor(name, "h22e", "backends-")
        try:
            t0 = time.monotonic()
            add = "add element ip h22e backends-tcp-3 { 10.96.255.1 . 80 . 0 : 10.253.0.1 . 8080 }"
            lab_netns.run(name, ["nft", add], check=True, capture_output=True, timeout=30)
            t1 = time.monotonic()
            seen = mon.wait("10.253.0.1", 10.0)
        finally:
            mon.close()
        print(json.dumps({"elements_loaded": args.elements, "load_s": round(load_s, 2),
                          "monitor_ready_ms": round(mon.ready_s * 1000, 2),
                          "nft_add_element_process_ms": round((t1 - t0) * 1000, 1),
                          "add_start_to_seen_ms": round((seen - t0) * 1000, 1) if seen else None,
                          "overflows": mon.overflows}, indent=2))
        return 0 if seen else 1
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10, check=False)


if __name__ == "__main__":
    sys.exit(main())
