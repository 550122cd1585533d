"""Defaulting, validation and allocation on create and update (the API server's registry logic).

Placeholder until the controllers work lands: passes objects through unchanged.
"""
from __future__ import annotations


def admit(store, cfg, resource, operation: str, obj: dict, old: dict | None) -> dict:
    """Return the object to store, or raise errors.APIError (422 Invalid and friends).
    operation is "CREATE" or "UPDATE"; `old` is the stored object on UPDATE."""
    return obj


def release(store, cfg, resource, obj: dict) -> None:
    """Called after an object was deleted (frees allocations that are not derived from the store)."""
