"""UDP stale-flow cleanup: when an endpoint leaves a UDP service port, delete the conntrack
entries that still send that service's traffic to it, so a client reusing one UDP socket (DNS)
reaches a live endpoint with its next datagram. Runs the `conntrack` CLI in the agent's own
network namespace (the node's), bounded in time; a failure is logged, never fatal."""
from __future__ import annotations

import logging
import subprocess

from . import metrics

log = logging.getLogger(__name__)
TIMEOUT = 5.0


def argv_for(addr: str | None, port: int, endpoint: str) -> list[str]:
    """conntrack -D for UDP flows to addr:port (any local address for a nodePort, addr None)
    whose reply comes from endpoint."""
    argv = ["conntrack", "-D", "-p", "udp"]
    if addr is not None:
        argv += ["--orig-dst", addr]
    return argv + ["--orig-port-dst", str(port), "--reply-src", endpoint]


def clear_udp(flows: set[tuple[str | None, int, str]]) -> int:
    """Delete the entries of every (service address or None, port, endpoint); the number of
    conntrack calls that deleted something."""
    done = 0
    for addr, port, endpoint in sorted(flows, key=str):
        argv = argv_for(addr, port, endpoint)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("conntrack cleanup %s: %s", argv, e)
            continue
        # exit 1 with "0 flow entries have been deleted" is the normal case of nothing to do
        if proc.returncode == 0:
            done += 1
            metrics.CONNTRACK_DELETES.inc()
            log.info("conntrack: removed UDP flows to %s:%d via %s", addr or "*", port, endpoint)
    return done
