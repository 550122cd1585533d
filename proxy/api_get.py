"""A GET against the API server through the kubernetes client, the response left unread.

The client's typed methods deserialize into model classes, which costs tens of seconds for 30k
Services (see informer.py); this keeps what the client is good at (config, bearer token, TLS,
connection pool) and hands back the raw response, for the caller to stream or read as JSON.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:       # the caller brings the client: this module imports no part of it
    from kubernetes.client import ApiClient


def open_get(api: ApiClient, path: str, timeout: float | tuple, query: Iterable[tuple[str, str]] = ()):
    """GET `path` (e.g. /api/v1/nodes) asking for JSON: (HTTP status, the urllib3 response, unread).
    The caller reads or streams it and then calls release_conn()."""
    method, url, headers, body, post = api.param_serialize(
        "GET", path, query_params=list(query), header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"])
    resp = api.call_api(method, url, headers, body, post, _request_timeout=timeout)
    return resp.status, resp.response


def get_json(api: ApiClient, path: str, timeout: float) -> dict | None:
    """One object from the API as JSON; None when it does not exist."""
    status, raw = open_get(api, path, timeout)
    try:
        data = raw.read()
    finally:
        raw.release_conn()
    if status == 404:
        return None
    if status >= 400:
        raise RuntimeError(f"GET {path}: HTTP {status}")
    return json.loads(data)
