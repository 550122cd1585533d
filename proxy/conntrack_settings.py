"""The conntrack sysctls kube-proxy owns, with its flags and defaults, set in the agent's own
network namespace (the node's).

    nf_conntrack_max                        max(conntrack-max-per-core x cores, conntrack-min)
    nf_conntrack_tcp_timeout_established    conntrack-tcp-timeout-established (24h)
    nf_conntrack_tcp_timeout_close_wait     conntrack-tcp-timeout-close-wait (1h)
    nf_conntrack_udp_timeout                conntrack-udp-timeout (0: left alone)
    nf_conntrack_udp_timeout_stream         conntrack-udp-timeout-stream (0: left alone)
    nf_conntrack_tcp_be_liberal             1 with --conntrack-tcp-be-liberal

As kube-proxy does, a value is only ever raised (a host that set a larger one keeps it), and 0
leaves the sysctl alone. The net.netfilter.nf_conntrack_* timeouts and tcp_be_liberal are per
network namespace; nf_conntrack_max is one global table limit: on Linux 6.18 (measured here) it
reads 0444 in any namespace but the initial one, so from a node's namespace it is reported and
not written. `plan_*` is pure; `apply_conntrack_settings` reads and writes /proc/sys.
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .duration import parse_go_duration

log = logging.getLogger(__name__)

PROC_SYS = Path("/proc/sys")
PREFIX = "net/netfilter/"
MAX = "nf_conntrack_max"


@dataclass(frozen=True)
class ConntrackConfig:
    """kube-proxy's KubeProxyConntrackConfiguration; seconds for the timeouts."""
    max_per_core: int = 32768
    min: int = 131072
    tcp_established: int = 86400
    tcp_close_wait: int = 3600
    udp: int = 0
    udp_stream: int = 0
    tcp_be_liberal: bool = False


def plan_conntrack_sysctls(cfg: ConntrackConfig, cores: int) -> dict[str, int]:
    """sysctl name (under net/netfilter/) -> the value it should at least have."""
    want: dict[str, int] = {}
    if cfg.max_per_core > 0:
        want[MAX] = max(cfg.max_per_core * cores, cfg.min)
    for name, value in (("nf_conntrack_tcp_timeout_established", cfg.tcp_established),
                        ("nf_conntrack_tcp_timeout_close_wait", cfg.tcp_close_wait),
                        ("nf_conntrack_udp_timeout", cfg.udp),
                        ("nf_conntrack_udp_timeout_stream", cfg.udp_stream),
                        ("nf_conntrack_tcp_be_liberal", int(cfg.tcp_be_liberal))):
        if value > 0:
            want[name] = value
    return want


def plan_writes(want: dict[str, int], current: dict[str, int | None]) -> dict[str, int]:
    """The sysctls to write: those below what is wanted (a missing one, None, is skipped)."""
    return {name: value for name, value in want.items()
            if current.get(name) is not None and current[name] < value}


def _read(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def apply_conntrack_settings(cfg: ConntrackConfig, cores: int | None = None,
                             proc_sys: Path = PROC_SYS) -> dict[str, int]:
    """Raise the conntrack sysctls of this network namespace to cfg; what was written. One that
    is read-only here (nf_conntrack_max outside the initial namespace) is logged and skipped."""
    want = plan_conntrack_sysctls(cfg, cores or os.cpu_count() or 1)
    paths = {name: proc_sys / PREFIX / name for name in want}
    writes = plan_writes(want, {name: _read(p) for name, p in paths.items()})
    done = {}
    for name, value in writes.items():
        if not paths[name].stat().st_mode & 0o222:        # the mode bits: root's access() says yes
            log.info("conntrack: %s is %s, %d wanted: global, not writable from this network namespace",
                     name, _read(paths[name]), value)
            continue
        try:
            paths[name].write_text(f"{value}\n")
        except OSError as e:
            log.warning("conntrack: cannot set %s to %d: %s", name, value, e)
            continue
        log.info("conntrack: set net.netfilter.%s = %d", name, value)
        done[name] = value
    return done


def add_flags(p: argparse.ArgumentParser) -> None:
    """kube-proxy's conntrack flags (durations as kube-proxy takes them: 24h0m0s, 1h, 30s)."""
    d = ConntrackConfig()
    g = p.add_argument_group("conntrack (kube-proxy's flags; 0 leaves a sysctl alone; a flag given wins "
                             "over the configuration's conntrack section)")
    g.add_argument("--conntrack-max-per-core", type=int, default=None, help=f"default {d.max_per_core}")
    g.add_argument("--conntrack-min", type=int, default=None, help=f"default {d.min}")
    g.add_argument("--conntrack-tcp-timeout-established", type=parse_duration, default=None,
                   help=f"default {d.tcp_established}s")
    g.add_argument("--conntrack-tcp-timeout-close-wait", type=parse_duration, default=None,
                   help=f"default {d.tcp_close_wait}s")
    g.add_argument("--conntrack-udp-timeout", type=parse_duration, default=None, help="default 0 (the kernel's)")
    g.add_argument("--conntrack-udp-timeout-stream", type=parse_duration, default=None,
                   help="default 0 (the kernel's)")
    g.add_argument("--conntrack-tcp-be-liberal", action="store_true", default=None)


def config_from_args(args: argparse.Namespace, base: ConntrackConfig | None = None) -> ConntrackConfig:
    """The flags given, over `base` (the configuration file's conntrack section, else the defaults)."""
    base = base or ConntrackConfig()

    def pick(flag, value):
        return value if flag is None else flag
    return ConntrackConfig(pick(args.conntrack_max_per_core, base.max_per_core),
                           pick(args.conntrack_min, base.min),
                           pick(args.conntrack_tcp_timeout_established, base.tcp_established),
                           pick(args.conntrack_tcp_timeout_close_wait, base.tcp_close_wait),
                           pick(args.conntrack_udp_timeout, base.udp),
                           pick(args.conntrack_udp_timeout_stream, base.udp_stream),
                           pick(args.conntrack_tcp_be_liberal, base.tcp_be_liberal))


def parse_duration(text: str) -> int:
    """A Go duration ('24h0m0s', '1h', '90s', '0') or bare seconds -> whole seconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        return int(parse_go_duration(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
