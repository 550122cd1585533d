"""Scratch network namespaces for tests that need a kernel but no lab."""
from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def scratch_netns(prefix: str, count: int = 1, suffix: str = "") -> Iterator[list[str]]:
    """`count` new network namespaces named <prefix><random hex><suffix>; removed afterwards, also
    when the test fails or one of them could not be made."""
    made: list[str] = []
    try:
        for _ in range(count):
            name = f"{prefix}{uuid.uuid4().hex[:6]}{suffix}"
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
            made.append(name)
        yield made
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def table_json(netns: str, family: str = "ip", table: str = "kubeweft") -> list:
    """A whole table as nft -j lists it, handles dropped and elements sorted, to compare two
    kernels' tables (only for small test tables: listing a big one costs seconds)."""
    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", family, table],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    items = []
    for item in json.loads(out)["nftables"]:
        for obj in item.values():
            if isinstance(obj, dict):
                obj.pop("handle", None)
                if isinstance(obj.get("elem"), list):
                    obj["elem"] = sorted(obj["elem"], key=json.dumps)
        items.append(item)
    return sorted(items, key=json.dumps)
