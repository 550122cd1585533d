"""Load-balancing schedulers: how a frontend's new connections pick an endpoint. Pure.

Chosen per agent (the configuration's default) and per Service (the annotation
`kubeweft.io/scheduler`), named as IPVS names its schedulers where they mean the same:

- random: `numgen random mod N` over the frontend's N endpoints (the shared lb-<proto>-N chain);
- sh, source hashing: `jhash ip saddr mod N` over the same N slots, so one client address
  always reaches one endpoint while the endpoint set is unchanged;
- maglev: `jhash ip saddr mod M` over Maglev's lookup table of M slots (proxy/maglev.py: M
  grows in steps with the endpoint count), so a change of the endpoint set moves few clients;
- rr, round robin: `numgen inc mod N`.

The endpoints (or Maglev's slots) are elements of the backends-<proto>-N map the random
scheduler fills, owned by the shared lb-<proto>-N chain; random, sh and maglev jump to chains
shared by every frontend with the same protocol and N, so the common path stays one verdict map
lookup and one map lookup, with no chain per Service. rr alone has a chain per frontend
(lb-<proto>-N-rr-<id>, one rule): numgen inc keeps its counter in the rule, and a rule shared
by several frontends would rotate over all of them together, so a frontend would see its
endpoints in no fixed order.

The jhash seed is fixed: without one the kernel draws a random seed per rule, and the nodes
(or an agent before and after a restart) would send one client to different endpoints.
"""
from __future__ import annotations

import functools

from kubeweft.cni.protocols import NFT_PROTOCOLS

from .maglev import plan_table, table_size

ANNOTATION = "kubeweft.io/scheduler"
SCHEDULERS = ("random", "rr", "sh", "maglev")
DEFAULT = "random"
# IPVS's names of the same schedulers, accepted where a kube-proxy configuration names one
ALIASES = {"mh": "maglev", "": DEFAULT}
SEED = 0x6B776674
SUFFIX = {"sh": "sh", "maglev": "mh", "rr": "rr"}
SCHEDULER_OF_SUFFIX = {v: k for k, v in SUFFIX.items()}
SELECTOR = {"random": "numgen random mod {n}", "sh": f"jhash {{ip}} saddr mod {{n}} seed {SEED:#x}",
            "maglev": f"jhash {{ip}} saddr mod {{n}} seed {SEED:#x}", "rr": "numgen inc mod {n}"}


def parse_scheduler(value: object) -> str | None:
    """The scheduler a configuration or annotation value names; None when it names none."""
    if not isinstance(value, str):
        return None
    name = ALIASES.get(value.strip().lower(), value.strip().lower())
    return name if name in SCHEDULERS else None


def slots(scheduler: str, endpoints: int, maglev_size: int | None = None) -> int:
    """How many slots (backends map indexes) a frontend of this scheduler fills: Maglev's table
    size (maglev_size, or by the endpoint count: maglev.table_size), else one per endpoint."""
    if scheduler != "maglev":
        return endpoints
    return maglev_size or table_size(endpoints)


def chain_name(scheduler: str, lb_chain: str, frontend: str = "") -> str:
    """The chain a frontend's verdict goes to: the lb chain itself for random, lb-tcp-3-sh,
    lb-tcp-4093-mh, lb-tcp-3-rr-<id>."""
    if scheduler == DEFAULT:
        return lb_chain
    name = f"{lb_chain}-{SUFFIX[scheduler]}"
    return f"{name}-{frontend}" if scheduler == "rr" else name


def scheduled_chain(name: str) -> tuple[str, str] | None:
    """(scheduler, lb chain whose backends map it reads) of a chain named by chain_name for a
    scheduler other than random; None for any other name."""
    parts = name.split("-")
    if len(parts) < 4 or parts[3] not in SCHEDULER_OF_SUFFIX or parts[1] not in NFT_PROTOCOLS \
            or not parts[2].isdigit():
        return None
    scheduler = SCHEDULER_OF_SUFFIX[parts[3]]
    if len(parts) != (5 if scheduler == "rr" else 4):
        return None
    return scheduler, "-".join(parts[:3])


def scheduler_rule(scheduler: str, key: str, n: int, backends: str, ip: str = "ip") -> str:
    """The one rule of a scheduler's chain: key the lb family's key expression (ip daddr . tcp
    dport), n the slots, backends the map, ip the table's family (ip | ip6)."""
    return f"dnat {ip} to {key} . {SELECTOR[scheduler].format(n=n, ip=ip)} map @{backends}"


@functools.lru_cache(maxsize=1024)
def table_of(scheduler: str, endpoints: tuple[str, ...], maglev_size: int | None = None) -> tuple[str, ...]:
    """What a frontend's slots hold, slot by slot: Maglev's table (of slots() slots), or the
    endpoints in order (cached: a Service's ClusterIP, nodePort and external addresses share
    their endpoints)."""
    if scheduler != "maglev":
        return endpoints
    return tuple(plan_table(endpoints, slots(scheduler, len(set(endpoints)), maglev_size)))
