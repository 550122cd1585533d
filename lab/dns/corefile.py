"""The part of a CoreDNS Corefile this server understands, read into `Settings`.

kubeadm's Corefile (the ConfigMap kube-system/coredns, `KUBEADM_COREFILE`) is the default.

Read: the first server block's port; `bind` addresses; `kubernetes` zones (the first one not
under .arpa is the cluster domain, the .arpa ones are the reverse zones) with `pods`, `ttl` and
`kubeconfig`; the addresses of `prometheus`, `health` (and its `lameduck`) and `ready`. Every other plugin is ignored:
there is no upstream to forward to, and answers are computed, not cached.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from kubeweft.proxy.duration import parse_go_duration

KUBEADM_COREFILE = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""

# the plugins' default addresses, as CoreDNS's
HEALTH_DEFAULT = ":8080"
READY_DEFAULT = ":8181"
METRICS_DEFAULT = "localhost:9153"


@dataclass
class Settings:
    port: int = 53
    binds: list[str] = field(default_factory=list)
    zone: str = "cluster.local"
    reverse_zones: list[str] = field(default_factory=lambda: ["in-addr.arpa", "ip6.arpa"])
    pods: str = "disabled"
    ttl: int = 5
    kubeconfig: str = ""
    metrics: str = ""
    health: str = ""
    ready: str = ""
    lameduck: float = 0.0      # seconds DNS is still served after SIGTERM (health's lameduck)


class CorefileError(ValueError):
    pass




def parse_duration(text: str) -> float:
    """A Go duration ("5s", "1m30s", "250ms") in seconds; no spaces around it."""
    if text == text.strip():
        try:
            return parse_go_duration(text)
        except ValueError:
            pass
    raise CorefileError(f"invalid duration {text!r}")


def _entries(text: str) -> list[tuple[list[str], list]]:
    """(words, children) for every line, children being the entries of its { } block."""
    root: list = []
    stack = [root]
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        opens = line.endswith("{")
        words = shlex.split(line[:-1] if opens else line)
        if words == ["}"] or line == "}":
            if len(stack) == 1:
                raise CorefileError(f"line {lineno}: unmatched }}")
            stack.pop()
            continue
        entry = (words, [])
        stack[-1].append(entry)
        if opens:
            stack.append(entry[1])
    if len(stack) != 1:
        raise CorefileError("unclosed {")
    return root


def parse(text: str) -> Settings:
    blocks = _entries(text)
    if not blocks:
        raise CorefileError("no server block")
    keys, body = blocks[0]
    s = Settings()
    m = re.search(r":(\d+)$", keys[0]) if keys else None
    s.port = int(m.group(1)) if m else 53
    for words, children in body:
        name, args = words[0], words[1:]
        if name == "bind":
            s.binds = args
        elif name == "prometheus":
            s.metrics = args[0] if args else METRICS_DEFAULT
        elif name == "health":
            s.health = args[0] if args else HEALTH_DEFAULT
            for sub, subargs in ((w[0], w[1:]) for w, _ in children):
                if sub == "lameduck" and subargs:
                    s.lameduck = parse_duration(subargs[0])
        elif name == "ready":
            s.ready = args[0] if args else READY_DEFAULT
        elif name == "kubernetes":
            zones = [z.rstrip(".") for z in args] or ["cluster.local"]
            forward = [z for z in zones if not z.endswith(".arpa") and z != "arpa"]
            if forward:
                s.zone = forward[0]
            s.reverse_zones = [z for z in zones if z.endswith(".arpa") or z == "arpa"]
            for sub, subargs in ((w[0], w[1:]) for w, _ in children):
                if sub == "pods" and subargs:
                    s.pods = subargs[0]
                elif sub == "ttl" and subargs:
                    s.ttl = int(subargs[0])
                elif sub == "kubeconfig" and subargs:
                    s.kubeconfig = subargs[0]
    return s
