"""List-and-watch of one resource through the real kubernetes client, objects kept as JSON.

The kubernetes client's model classes cost tens of seconds to deserialize 30k Services, so
the informer uses the client for what it is good at (config, auth, TLS, connection pool) and
reads raw JSON: a list, then a watch from the list's resourceVersion with bookmarks, resumed
from the last version seen when the connection ends, and re-listed on 410 Gone, exactly as
client-go's reflector does.

Every change is handed to `on_event(type, obj)` on the informer's own thread; after the first
list and after every re-list `on_sync(objects)` gets the whole set, so a consumer can rebuild.
A list is decoded as it arrives, item by item; with `transform`, items are kept (and handed
to on_sync) as transform(obj), so the raw JSON of a 30k-object list (~140 MB as Python objects
for 30k EndpointSlices, plus its text twice over) is never alive at once.
"""
from __future__ import annotations

import codecs
import contextlib
import json
import logging
import random
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:       # the kubernetes package imports PyYAML and more: only where it is called
    from kubernetes.client import ApiClient

from .api_get import open_get
from .skip_log import SkipLog

log = logging.getLogger(__name__)

ObjKey = tuple[str, str]

# Reconnecting while the API server is away: the wait doubles from BACKOFF_START up to
# BACKOFF_MAX, each one shortened by up to BACKOFF_JITTER of itself so the informers of many
# nodes do not knock in step. The cap bounds how late a watch notices the server's return: the
# agent converges within 5 s of it (tests/integration/test_control_plane_faults.py), and a 60 s
# outage costs each informer about 40 attempts (39 measured), not a tight loop. Everything listed is kept
# meanwhile: consumers go on with the last state, nothing is flushed.
BACKOFF_START = 0.2
BACKOFF_MAX = 2.0
BACKOFF_JITTER = 0.25


def key_of(obj: dict) -> ObjKey:
    """(namespace, name); a field that is not a string reads as "" (a hostile object must not
    stop the watch before the consumer's parser refuses it)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return "", ""
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    return ns if isinstance(ns, str) else "", name if isinstance(name, str) else ""


class Informer:
    keeps_objects = True     # False: a watch event's object is handed to on_event alone, never transformed

    def __init__(self, api: ApiClient, path: str, *,
                 on_event: Callable[[str, dict], None] | None = None,
                 on_sync: Callable[[dict[ObjKey, dict]], None] | None = None,
                 params: dict[str, str] | None = None, watch_timeout: int = 300, name: str = "",
                 transform: Callable[[dict], object] | None = None):
        self.api = api
        self.path = path                      # e.g. /api/v1/nodes, /apis/discovery.k8s.io/v1/endpointslices
        self.params = dict(params or {})      # labelSelector, fieldSelector
        self.on_event = on_event
        self.on_sync = on_sync
        self.transform = transform
        self.watch_timeout = watch_timeout
        self.name = name or path
        self.objects: dict[ObjKey, dict] = {}
        self.resource_version = ""
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response = None
        self.relists = 0
        # a consumer that fails on one object skips that object: the watch goes on (else the
        # same event would come back after every reconnect and stop every other object)
        self.failures = SkipLog(log, f"{self.name}: object")

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Informer:
        self._thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the watch at once. The watching thread is blocked in a read of the stream, holding
        the response's buffer lock, so closing the response from here would wait for the next
        event (up to the watch timeout): shutting the socket down ends that read instead."""
        self._stop.set()
        resp = self._response
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                # socket.socket's shutdown, not SSLSocket's, which drops the TLS state under the reader
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    # --- the reflector loop -------------------------------------------------------------------
    def _request(self, params: dict, timeout: float | tuple):
        """GET self.path through the client's config, auth and pool; the urllib3 response, unread."""
        query = [(k, v) for k, v in {**self.params, **params}.items() if v != ""]
        status, raw = open_get(self.api, self.path, timeout, query)
        if status == 410:
            raw.release_conn()
            raise _Expired("410 Gone")
        if status >= 400:
            detail = raw.read()[:300]
            raw.release_conn()
            raise RuntimeError(f"GET {self.path}: HTTP {status}: {detail!r}")
        return raw

    def _list(self) -> None:
        raw = self._request({}, 60)
        transform = self.transform or (lambda o: o)
        objects = {}
        meta: dict = {}
        try:
            # decoded as it arrives: a 30k-object list is never whole in memory, as bytes or text
            for field, value in iter_list(raw.stream(1 << 20, decode_content=True)):
                if field == "items":
                    objects[key_of(value)] = self._guarded(transform, value)
                elif field == "metadata":
                    meta = value
        finally:
            raw.release_conn()
        self.objects = objects
        self.resource_version = meta.get("resourceVersion", "") if isinstance(meta, dict) else ""
        self.relists += 1
        if self.on_sync:
            self.on_sync(dict(objects))
        self.synced.set()

    def _watch(self) -> None:
        raw = self._request({"watch": "true", "resourceVersion": self.resource_version,
                              "allowWatchBookmarks": "true",
                              "timeoutSeconds": str(self.watch_timeout)},
                             (10, self.watch_timeout + 30))
        self._response = raw
        buf = b""
        try:
            for chunk in raw.stream(65536, decode_content=True):
                if self._stop.is_set():
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self._handle(json.loads(line))
        finally:
            self._response = None
            raw.release_conn()

    def _handle(self, event: dict) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("object") or {}, dict):
            self.failures.skipped(("",), f"a watch event that is not an object: {str(event)[:100]}")
            return
        etype, obj = event.get("type"), event.get("object") or {}
        if etype == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Expired(obj.get("message", "expired"))
            raise RuntimeError(f"watch error: {obj.get('message')}")
        meta = obj.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if rv and isinstance(rv, str):
            self.resource_version = rv
        if etype == "BOOKMARK":
            return
        key = key_of(obj)
        if etype == "DELETED":
            self.objects.pop(key, None)
        elif self.keeps_objects:
            self.objects[key] = self._guarded(self.transform, obj) if self.transform else obj
        if self.on_event:
            self._guarded(self.on_event, etype, obj)

    def _guarded(self, fn: Callable, *args):
        """fn(*args); None, with one log line per object, when it raises. The last argument is
        the object."""
        obj = args[-1]
        try:
            out = fn(*args)
        except Exception as e:  # noqa: BLE001 - whatever one object does, the watch goes on
            self.failures.skipped(key_of(obj), f"{type(e).__name__}: {e}")
            return None
        self.failures.taken(key_of(obj))
        return out

    def _run(self) -> None:
        backoff = BACKOFF_START
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                self._watch()
                backoff = BACKOFF_START
            except _Expired as e:
                log.info("%s: %s; re-listing", self.name, e)
                need_list = True
            except Exception as e:  # noqa: BLE001 - connection loss, API server restart: retry with backoff
                if self._stop.is_set():
                    return
                status = getattr(e, "status", None)
                if status == 410:
                    need_list = True
                delay = backoff * random.uniform(1 - BACKOFF_JITTER, 1)
                log.warning("%s: %s; retrying in %.2fs", self.name, _first_line(e), delay)
                self._stop.wait(delay)
                backoff = min(backoff * 2, BACKOFF_MAX)


class _Expired(Exception):
    pass


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


_decoder = json.JSONDecoder()
_ws = re.compile(r"[ \t\n\r]*")
_scalar = re.compile(r"[^,\]}\s]*")


class _Text:
    """JSON text arriving in chunks: decoded values are taken from the front, and what was
    taken is dropped when the next chunk comes (never the whole response in memory)."""

    def __init__(self, source: str | Iterable[bytes]):
        if isinstance(source, str):
            self.buf, self.done, self.chunks = source, True, iter(())
        else:
            self.buf, self.done, self.chunks = "", False, iter(source)
        self.pos = 0
        self.utf8 = codecs.getincrementaldecoder("utf-8")()

    def more(self) -> bool:
        """Append the next chunk; False at the end of the text."""
        while not self.done:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.done = True
                text = self.utf8.decode(b"", final=True)
            else:
                text = self.utf8.decode(chunk)
            if text:
                self.buf = self.buf[self.pos:] + text
                self.pos = 0
                return True
        return False

    def peek(self) -> str:
        """The next character after white space ('' at the end)."""
        while True:
            self.pos = _ws.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def take(self, ch: str) -> None:
        if self.peek() != ch:
            raise ValueError(f"list response: expected {ch!r}, got {self.buf[self.pos:self.pos + 20]!r}")
        self.pos += 1

    def value(self):
        if self.peek() not in '{["':
            # a number or literal: have all of it (up to a delimiter) before decoding
            while _scalar.match(self.buf, self.pos).end() == len(self.buf) and self.more():
                pass
        while True:
            try:
                value, self.pos = _decoder.raw_decode(self.buf, self.pos)
                return value
            except json.JSONDecodeError:
                if not self.more():
                    raise


def iter_list(source: str | Iterable[bytes]) -> Iterator[tuple[str, object]]:
    """(field, value) of a JSON list response's top-level object, every element of `items`
    yielded as ("items", element) one at a time. `source`: the text, or its bytes in chunks
    (then only about a chunk and one item are in memory at once)."""
    t = _Text(source)
    t.take("{")
    if t.peek() == "}":
        return
    while True:
        field = t.value()
        t.take(":")
        if field == "items" and t.peek() == "[":
            t.take("[")
            if t.peek() == "]":
                t.take("]")
            else:
                while True:
                    yield "items", t.value()
                    if t.peek() == "]":
                        t.take("]")
                        break
                    t.take(",")
        else:
            yield field, t.value()
        if t.peek() == "}":
            return
        t.take(",")
