"""conntrack entries the agent deletes, through the `conntrack` CLI, bounded in time; a failure is
logged, never fatal.

  - the service proxy's stale UDP flows (clear_udp): when an endpoint leaves a UDP service port,
    the entries that still send that service's traffic to it go, so a client reusing one UDP
    socket (DNS) reaches a live endpoint with its next datagram;
  - the policy controller's reused addresses (forget_flows): when a new pod gets an address, the
    entries of the address's previous holder go, so none of them lets the new pod's traffic pass
    as established.

Both run in the agent's own network namespace (the node's), or in `netns` when one is given.
"""
from __future__ import annotations

import logging
import subprocess

from kubeweft.cni import netns as cni_netns

from . import metrics

log = logging.getLogger(__name__)
TIMEOUT = 5.0


def argv_for(addr: str | None, port: int, endpoint: str) -> list[str]:
    """conntrack -D for UDP flows to addr:port (any local address for a nodePort, addr None)
    whose reply comes from endpoint. IPv6 alike: conntrack takes the family from the addresses
    (tests/integration/test_services_ipv6.py clears an IPv6 flow this way)."""
    argv = ["conntrack", "-D", "-p", "udp"]
    if addr is not None:
        argv += ["--orig-dst", addr]
    return argv + ["--orig-port-dst", str(port), "--reply-src", endpoint]


def forget_argvs(ip: str) -> list[list[str]]:
    """conntrack -D for the entries to an address (also DNATed: its reply source) and from it."""
    return [["conntrack", "-D", flag, ip] for flag in ("--reply-src", "--orig-src")]


def delete(argvs: list[list[str]], netns: str | None = None) -> list[bool]:
    """Run the conntrack -D command lines at once and wait for them (TIMEOUT each); whether each
    deleted something (exit 1, "0 flow entries have been deleted", is the usual case of nothing
    to do)."""
    kw: dict = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if netns is not None:
        kw["preexec_fn"] = cni_netns.preexec(netns)
    procs: list[subprocess.Popen | None] = []
    for argv in argvs:
        try:
            procs.append(subprocess.Popen(argv, **kw))
        except OSError as e:
            log.warning("conntrack cleanup %s: %s", argv, e)
            procs.append(None)
    done = []
    for argv, proc in zip(argvs, procs, strict=True):
        if proc is None:
            done.append(False)
            continue
        try:
            done.append(proc.wait(timeout=TIMEOUT) == 0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT)
            log.warning("conntrack cleanup %s timed out", argv)
            done.append(False)
    return done


def clear_udp(flows: set[tuple[str | None, int, str]]) -> int:
    """Delete the entries of every (service address or None, port, endpoint), one command at a
    time; the number of conntrack calls that deleted something."""
    n = 0
    for addr, port, endpoint in sorted(flows, key=str):
        if delete([argv_for(addr, port, endpoint)])[0]:
            n += 1
            metrics.CONNTRACK_DELETES.inc()
            log.info("conntrack: removed UDP flows to %s:%d via %s", addr or "*", port, endpoint)
    return n


def forget_flows(ip: str, netns: str | None = None) -> None:
    """Delete the conntrack entries of an address that a new pod now holds. An entry that saw a
    reply from the address's previous pod is "established": without this, the new pod would
    get that flow's packets past its policies (ct state established is accepted first). Both
    directions at once: the pod's CNI ADD waits for them."""
    argvs = forget_argvs(ip)
    for argv, deleted in zip(argvs, delete(argvs, netns), strict=True):
        if deleted:
            log.info("conntrack: removed old flows of %s (%s)", ip, argv[2])
