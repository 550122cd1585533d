"""The lab's wires: the underlay LAN, one netns per node, the external host (lab/README.md).

Pure plans (`plan_*`) list the commands; `apply_*`/`ensure_*`/`sync_*`/`remove_*` run them.
Every command is `ip -n <lab netns> ...` or runs inside a lab netns (preexec setns), so nothing
ever touches the root namespace: veths are created in the underlay with their peer born
directly in the target netns (`... type veth peer name eth0 netns <node>`).

iproute2 rather than pyroute2 here: the CLI does this once per `lab up`, the commands read as
the topology in lab/README.md, and the CLI does not pay pyroute2's import time.
"""
from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass

from . import netns
from .config import EXT_UPLINK, NODE_UPLINK, UNDERLAY_BRIDGE, LabConfig
from .errors import LabError

EXT_PORT = "veth-ext"             # the underlay's end of the external host's cable
CMD_TIMEOUT = 20.0


@dataclass(frozen=True)
class Step:
    """One command. `inside` names the lab netns to run it in (None: run from the root netns,
    which only `ip netns add/delete` and `ip -n ...` commands do: they change lab netns only)."""
    argv: tuple[str, ...]
    inside: str | None = None


def node_port(node: str) -> str:
    """The underlay's end of a node's cable (a port of lan0); at most 15 characters."""
    name = f"veth-{node}"
    if len(name) > 15:
        raise ValueError(f"node name {node!r} too long for an interface name")
    return name


def _ip(ns: str, *args: str) -> Step:
    return Step(("ip", "-n", ns, *args))


def _forwarding(cfg: LabConfig, ns: str) -> list[Step]:
    # /proc/sys/net is per netns: a sysctl run inside the lab netns sets it there only.
    steps = [Step(("sysctl", "-q", "-w", "net.ipv4.ip_forward=1"), inside=ns)]
    if cfg.has_ipv6:
        steps.append(Step(("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"), inside=ns))
    return steps


def _no_dad(cfg: LabConfig, ns: str) -> list[Step]:
    """DAD off for every interface made in `ns` from now on: an address is usable the moment it
    is added (a tentative one cannot be a source or be reached for about 1 s), and veths and
    bridges made later (pods' cables, kw0, cni0) inherit `default`. Addresses added by this
    plan carry `nodad` too, for the interfaces that exist already."""
    if not cfg.has_ipv6:
        return []
    return [Step(("sysctl", "-q", "-w", f"net.ipv6.conf.{k}.accept_dad=0"), inside=ns)
            for k in ("all", "default")]


def _addr6(ns: str, address: str, subnet: str, dev: str) -> Step:
    length = ipaddress.ip_network(subnet).prefixlen
    return _ip(ns, "-6", "addr", "add", f"{address}/{length}", "dev", dev, "nodad")


def node_names(cfg: LabConfig) -> list[str]:
    return [cfg.node_name(i) for i in range(1, cfg.nodes + 1)]


def lab_netns(cfg: LabConfig) -> list[str]:
    """The namespaces `plan_build` creates, in creation order."""
    return [cfg.underlay_netns, cfg.external_netns] + [cfg.node_netns(n) for n in node_names(cfg)]


def plan_build(cfg: LabConfig) -> list[Step]:
    """Every command that builds the underlay, the nodes and the external host."""
    u = cfg.underlay_netns
    mtu = str(cfg.mtu)
    lan_len = ipaddress.ip_network(cfg.node_subnet).prefixlen
    ext_len = ipaddress.ip_network(cfg.external_subnet).prefixlen
    steps = [Step(("ip", "netns", "add", ns)) for ns in lab_netns(cfg)]
    steps += _no_dad(cfg, u) + [
        _ip(u, "link", "set", "lo", "up"),
        _ip(u, "link", "add", UNDERLAY_BRIDGE, "mtu", mtu, "type", "bridge"),
        _ip(u, "addr", "add", f"{cfg.control_plane_ip}/{lan_len}", "dev", UNDERLAY_BRIDGE),
    ]
    if cfg.has_ipv6:
        steps.append(_addr6(u, cfg.control_plane_ip6, cfg.node_subnet6, UNDERLAY_BRIDGE))
    steps += [_ip(u, "link", "set", UNDERLAY_BRIDGE, "up")] + _forwarding(cfg, u)
    for i, node in enumerate(node_names(cfg), start=1):
        steps += plan_node(cfg, i, node)
    x = cfg.external_netns
    steps += _no_dad(cfg, x) + [
        _ip(u, "link", "add", EXT_PORT, "mtu", mtu, "type", "veth",
            "peer", "name", EXT_UPLINK, "netns", x),
        _ip(u, "addr", "add", f"{cfg.external_gateway_ip}/{ext_len}", "dev", EXT_PORT),
        _ip(u, "link", "set", EXT_PORT, "up"),
        _ip(x, "link", "set", "lo", "up"),
        _ip(x, "link", "set", EXT_UPLINK, "mtu", mtu, "up"),
        _ip(x, "addr", "add", f"{cfg.external_ip}/{ext_len}", "dev", EXT_UPLINK),
        _ip(x, "route", "add", "default", "via", cfg.external_gateway_ip),
    ]
    if cfg.has_ipv6:
        steps += [
            _addr6(u, cfg.external_gateway_ip6, cfg.external_subnet6, EXT_PORT),
            _addr6(x, cfg.external_ip6, cfg.external_subnet6, EXT_UPLINK),
            _ip(x, "-6", "route", "add", "default", "via", cfg.external_gateway_ip6),
        ]
    return steps


def plan_node(cfg: LabConfig, index: int, node: str) -> list[Step]:
    """One node's cable to the LAN, its address and default route (its netns exists already)."""
    u, ns, port = cfg.underlay_netns, cfg.node_netns(node), node_port(node)
    mtu = str(cfg.mtu)
    lan_len = ipaddress.ip_network(cfg.node_subnet).prefixlen
    steps = _no_dad(cfg, ns) + [
        _ip(u, "link", "add", port, "mtu", mtu, "type", "veth",
            "peer", "name", NODE_UPLINK, "netns", ns),
        _ip(u, "link", "set", port, "master", UNDERLAY_BRIDGE, "up"),
        _ip(ns, "link", "set", "lo", "up"),
        _ip(ns, "link", "set", NODE_UPLINK, "mtu", mtu, "up"),
        _ip(ns, "addr", "add", f"{cfg.node_ip(index)}/{lan_len}", "dev", NODE_UPLINK),
        _ip(ns, "route", "add", "default", "via", cfg.control_plane_ip),
    ]
    if cfg.has_ipv6:
        steps += [_addr6(ns, cfg.node_ip6(index), cfg.node_subnet6, NODE_UPLINK),
                  _ip(ns, "-6", "route", "add", "default", "via", cfg.control_plane_ip6)]
    return steps + _forwarding(cfg, ns)


def plan_add_node(cfg: LabConfig, index: int, node: str) -> list[Step]:
    """`kubeweft lab node-add`: a new node netns on the running lab's LAN."""
    return [Step(("ip", "netns", "add", cfg.node_netns(node)))] + plan_node(cfg, index, node)


def plan_underlay_routes(cfg: LabConfig, routes: dict[str, str]) -> list[Step]:
    """`ip route replace` in the underlay for each destination CIDR -> next-hop node IP."""
    return [_ip(cfg.underlay_netns, "route", "replace", cidr, "via", via)
            for cidr, via in sorted(routes.items())]


def plan_pod_cidr_routes(cfg: LabConfig, nodes: list[tuple[str, str | None, str | None]]) -> list[Step]:
    """The lab's "cloud route table" for reference mode: each node's podCIDR via its node IP,
    from (name, podCIDR, InternalIP) triples; nodes missing either are skipped."""
    return plan_underlay_routes(cfg, {cidr: ip for _, cidr, ip in nodes if cidr and ip})


def plan_underlay_route_removal(cfg: LabConfig, cidrs: list[str]) -> list[Step]:
    return [_ip(cfg.underlay_netns, "route", "del", cidr) for cidr in sorted(cidrs)]


def plan_remove(names: list[str]) -> list[Step]:
    # `ip netns delete` also unmounts the bind mount; the kernel frees the netns (and every
    # veth with an end in it) once no process is left inside.
    return [Step(("ip", "netns", "delete", n)) for n in names]


# --- I/O -------------------------------------------------------------------------------------

def apply_steps(steps: list[Step]) -> None:
    for step in steps:
        kwargs = {"capture_output": True, "text": True, "timeout": CMD_TIMEOUT}
        if step.inside:
            proc = netns.run(step.inside, list(step.argv), **kwargs)
        else:
            proc = subprocess.run(list(step.argv), check=False, **kwargs)
        if proc.returncode != 0:
            where = f" (in {step.inside})" if step.inside else ""
            raise LabError(f"{' '.join(step.argv)}{where}: {proc.stderr.strip() or proc.returncode}")


def build(cfg: LabConfig) -> None:
    """Create the whole topology. On failure the caller removes it (`remove`)."""
    apply_steps(plan_build(cfg))


def ensure_underlay_route(cfg: LabConfig, cidr: str, via: str) -> None:
    """Route `cidr` via a node's IP in the underlay (e.g. cfg.lb_subnet towards a node)."""
    apply_steps(plan_underlay_routes(cfg, {cidr: via}))


def sync_pod_cidr_routes(cfg: LabConfig, nodes: list[tuple[str, str | None, str | None]]) -> None:
    apply_steps(plan_pod_cidr_routes(cfg, nodes))


def list_netns(prefix: str) -> list[str]:
    """Names under /run/netns starting with `prefix`, sorted."""
    try:
        return sorted(n for n in os.listdir(netns.NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def remove_exact(names: list[str]) -> list[str]:
    """Delete exactly these namespaces (those that exist); return the names removed."""
    removed = []
    for step, name in zip(plan_remove(names), names):
        if not netns.exists(name):
            continue
        subprocess.run(list(step.argv), check=False, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        if not netns.exists(name):
            removed.append(name)
    return removed


def remove(prefix: str) -> list[str]:
    """Delete every netns whose name starts with `prefix`; return the names removed.
    Best effort: a name `ip netns delete` cannot remove (not a mount any more) is unlinked."""
    removed = []
    names = list_netns(prefix)
    for step, name in zip(plan_remove(names), names):
        proc = subprocess.run(list(step.argv), check=False, capture_output=True, text=True,
                              timeout=CMD_TIMEOUT)
        if proc.returncode != 0:
            try:
                os.unlink(netns.path(name))
            except FileNotFoundError:
                pass
        if not netns.exists(name):
            removed.append(name)
    return removed
