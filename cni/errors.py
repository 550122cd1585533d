"""Errors of the CNI plugin: the spec's well-known codes (0-99) and kubeweft's own (100+).

Imported by the shim, so it stays standard-library only.
"""
from __future__ import annotations

import json

# The spec's well-known error codes (CNI 1.1.0, "Error" section).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
PLUGIN_NOT_AVAILABLE_RESOURCES = 51

# kubeweft's own codes (the spec leaves 100+ to plugins).
INTERNAL = 100             # an unexpected failure inside the agent
INTERFACE_EXISTS = 101     # ADD: CNI_IFNAME already exists in the sandbox
CHECK_MISMATCH = 102       # CHECK: live interface, address or route differs from prevResult
ADDRESS_UNAVAILABLE = 103  # IPAM: the pool is exhausted or a requested address is taken
DATAPATH_FAILURE = 104     # netlink / nftables failed while wiring a pod

MESSAGES = {
    INCOMPATIBLE_VERSION: "Incompatible CNI version",
    UNSUPPORTED_FIELD: "Unsupported field in network configuration",
    UNKNOWN_CONTAINER: "Container unknown or does not exist",
    INVALID_ENVIRONMENT: "Invalid necessary environment variables",
    IO_FAILURE: "I/O failure",
    DECODING_FAILURE: "Failed to decode content",
    INVALID_NETWORK_CONFIG: "Invalid network config",
    TRY_AGAIN_LATER: "Try again later",
    PLUGIN_NOT_AVAILABLE: "Plugin not available",
    PLUGIN_NOT_AVAILABLE_RESOURCES: "Plugin not available due to limited resources",
}


# msg and details often quote the input they refuse: a 100 KiB CNI_NETNS or name came back twice
# in the error, through gRPC, the runtime's logs and the pod's events. Cut to this many characters.
MAX_TEXT = 4096


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else f"{text[:MAX_TEXT - 64]}... ({len(text)} characters in all)"


class CniError(Exception):
    """A CNI error: `code` is the spec's error code, rendered as the error JSON by the shim."""

    def __init__(self, code: int, msg: str = "", details: str = "") -> None:
        msg = _cut(msg or MESSAGES.get(code, "error"))
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = _cut(details)

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def __repr__(self) -> str:
        return f"CniError({self.code}, {self.msg!r}, {self.details!r})"

    def to_dict(self, cni_version: str = "1.1.0") -> dict:
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def to_json(self, cni_version: str = "1.1.0") -> str:
        """The error object the spec wants on stdout (with a non-zero exit)."""
        return json.dumps(self.to_dict(cni_version))

