"""The controllers a cluster runs, inside the API server's event loop. Placeholder."""
from __future__ import annotations


def start(store, cfg) -> list:
    """Start every controller as an asyncio task on the running loop; return the tasks."""
    return []
