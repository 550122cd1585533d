"""Go's time.Duration text ("24h0m0s", "1h", "1.5m", "250ms", "0"), as kube-proxy's flags and
KubeProxyConfiguration write it, in seconds. Pure."""
from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds of `text`; ValueError when it is not a duration (a number needs its unit, but 0)."""
    text = text.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m[1]) * _UNIT[m[2]]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"{text!r} is not a duration (like 24h0m0s, 1h, 30s)")
    return total
