"""Errors of the CNI plugin (minimal; the spec/shim owner extends this module)."""
from __future__ import annotations


class CniError(Exception):
    """A CNI error: `code` is the spec's error code, rendered as the error JSON by the shim."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg
