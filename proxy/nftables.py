"""The agent's nftables layer: one libnftables context, whole transactions, targeted reads.

Writes are nft commands (text), many per call, sent as ONE transaction: either all of it lands
or none does. Text rather than JSON because nft 1.0.6's JSON input drops table and chain
comments, and every chain, set and map of ours carries one (DESIGN.md, Style).
Reads name one map, set or chain: the whole ruleset is never listed (DESIGN.md, decision 3).

A libnftables context talks to the netns of the thread that created it, so an Nft made on a
thread inside the node's netns stays bound there even if used from other threads.
"""
from __future__ import annotations

import json
import threading

import nftables

from lab import netns as _netns


class NftError(RuntimeError):
    def __init__(self, message: str, commands: str = ""):
        super().__init__(message)
        self.commands = commands


class Nft:
    def __init__(self, netns: str | None = None):
        self._lock = threading.Lock()
        if netns is None:
            self._ctx = self._new_context()
        else:
            box: dict = {}

            def make() -> None:
                try:
                    with _netns.entered(netns):
                        box["ctx"] = self._new_context()
                except Exception as e:  # noqa: BLE001 - reported on the calling thread
                    box["error"] = e
            t = threading.Thread(target=make, name=f"nft-{netns}")
            t.start()
            t.join(10)
            if "error" in box:
                raise box["error"]
            self._ctx = box["ctx"]
        self.transactions = 0

    @staticmethod
    def _new_context() -> nftables.Nftables:
        ctx = nftables.Nftables()
        ctx.set_json_output(True)
        ctx.set_handle_output(True)
        # Opening the netlink socket now binds the context to this thread's netns. A table that
        # does not exist: "list tables" fills nft's whole cache, every element of every set
        # (at 30k Services ~7 s and ~240 MB).
        ctx.cmd("list table ip kubeweft-socket-probe")
        return ctx

    def run(self, commands: str | list[str]) -> None:
        """Apply commands as one transaction. Raises NftError (with nft's message) on failure,
        in which case nothing of the batch was applied."""
        text = commands if isinstance(commands, str) else "\n".join(commands)
        if not text.strip():
            return
        with self._lock:
            rc, _, err = self._ctx.cmd(text)
            self.transactions += 1
        if rc != 0:
            raise NftError(f"nft transaction failed: {err.strip()[:2000]}", text)

    def list(self, what: str) -> list[dict]:
        """The JSON 'nftables' array for one object, e.g. 'map ip kubeweft backends';
        [] when it does not exist."""
        with self._lock:
            rc, out, err = self._ctx.cmd(f"list {what}")
        if rc != 0:
            if "No such file or directory" in err or "does not exist" in err:
                return []
            raise NftError(f"nft list {what}: {err.strip()[:500]}")
        return json.loads(out).get("nftables", []) if out else []

    def exists(self, what: str) -> bool:
        return bool(self.list(what))
