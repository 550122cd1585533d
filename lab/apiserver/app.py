"""The lab's API server: aiohttp handlers over lab.store.Store.

URL layout as the real server's:
    /api/v1/<plural>[/<name>[/<sub>]]                          cluster-scoped, or all namespaces
    /api/v1/namespaces/<ns>/<plural>[/<name>[/<sub>]]          namespaced
    /apis/<group>/<version>/...                                 the same for named groups
    /api/v1/watch/...                                           the legacy watch prefix
Every request is authenticated, impersonated and authorized first (access.Access: the admin
token, ServiceAccount tokens, RBAC). Every create and update (PUT, PATCH, status too) goes through
lab.admission.admit, every delete is followed by lab.admission.release. The reviews
(SelfSubjectAccessReview, ...) and serviceaccounts/token are answered, never stored. Errors are
metav1.Status bodies (lab.errors).
"""
from __future__ import annotations

import asyncio
import copy
import datetime
import ipaddress
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from .. import admission, deletion, errors, selectors
from ..admission.ipfamilies import ADDRESS_TYPES
from ..config import API_PORT, LabConfig
from ..resources import ENDPOINTS, Resource, find
from ..store import Store, take_status_metadata
from . import discovery, openapi, patch, protobuf, reviews, scale, streams, tables, tokens, validation
from .access import Access
from .attributes import request_attributes
from .identity import User

log = logging.getLogger("kubeweft.lab.apiserver")

STORE_KEY = web.AppKey("store", Store)
CFG_KEY = web.AppKey("cfg", LabConfig)
TOKEN_KEY = web.AppKey("token", str)
STATE_KEY = web.AppKey("state", dict)
USER = web.RequestKey("user", User)   # the (impersonated) User, set by the auth middleware

DEFAULT_WATCH_SECONDS = 1800
BOOKMARK_SECONDS = 3.0          # how often a watch that allows bookmarks gets one
TICK_SECONDS = 1.0              # how often an idle watch checks its client is still there
# what the real server says of every request for v1 Endpoints since 1.33
ENDPOINTS_WARNING = '299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"'


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _json(obj: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=_dumps(obj), status=status, content_type="application/json",
                        headers=headers)


def _json_or_404(doc: dict | None) -> web.Response:
    """A discovery document, or 404 where there is none (an unknown group or version)."""
    if doc is None:
        raise errors.no_such_path()
    return _json(doc)


def _status_response(err: errors.APIError) -> web.Response:
    return _json(err.status(), status=err.code)


# --- request parsing ---------------------------------------------------------------------------
@dataclass
class Target:
    resource: Resource
    namespace: str | None        # None: cluster-scoped, or namespaced across all namespaces
    name: str | None
    subresource: str | None
    watch_prefix: bool


def parse_target(group: str, version: str, tail: str) -> Target:
    """Which resource, namespace, name and subresource a path names (after /api/v1 or /apis/g/v)."""
    segs = [s for s in tail.split("/") if s]
    watch_prefix = bool(segs) and segs[0] == "watch"
    if watch_prefix:
        segs = segs[1:]
    ns: str | None = None
    if len(segs) >= 3 and segs[0] == "namespaces" and segs[2] != "status":
        ns, segs = segs[1], segs[2:]
    if not segs or len(segs) > 3:
        raise errors.no_such_path()
    resource = find(group, segs[0])
    if resource is None or resource.version != version or (ns is not None and not resource.namespaced):
        raise errors.no_such_path()
    name = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else None
    if sub is not None and sub not in resource.subresources:
        raise errors.no_such_path()
    if name is not None and resource.namespaced and ns is None:
        raise errors.no_such_path()
    return Target(resource, ns, name, sub, watch_prefix)


def _namespace_from_url(meta: dict, t: Target) -> None:
    """A namespaced object takes the URL's namespace; another one in the body is refused."""
    if t.resource.namespaced:
        if meta.get("namespace") and meta["namespace"] != t.namespace:
            raise errors.bad_request("the namespace of the provided object does not match the "
                                     "namespace sent on the request")
        meta["namespace"] = t.namespace


async def _read_body(request: web.Request) -> Any:
    return _decode_body(request, await request.read())


def _decode_body(request: web.Request, raw: bytes) -> Any:
    if not raw.strip():
        return None
    ctype = (request.content_type if "Content-Type" in request.headers else "application/json").lower()
    if ctype == "application/vnd.kubernetes.protobuf":
        return protobuf.decode_object(raw)
    if "json" not in ctype and "yaml" not in ctype:
        raise errors.unsupported_media_type(request.headers.get("Content-Type", ""))
    try:
        if "yaml" in ctype:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise errors.bad_request(f"error decoding body: {e}") from None


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _table(request: web.Request, resource: Resource, objs: list[dict], rv: str | None,
           with_columns: bool = True) -> dict:
    include = request.query.get("includeObject", "Metadata")
    return tables.render_table(resource.kind, objs, _now(), rv, include, with_columns)


def _predicate(request: web.Request) -> selectors.Predicate | None:
    return selectors.make_predicate(request.query.get("labelSelector"),
                                    request.query.get("fieldSelector"))


def _field_check(request: web.Request, resource: Resource, obj: dict, creating: bool) -> dict:
    """fieldValidation: Strict refuses unknown fields, Warn/absent drops them with a warning
    header, Ignore drops them silently. Returns extra response headers."""
    unknown = validation.find_unknown_fields(resource.kind, obj)
    if not unknown:
        return {}
    mode = request.query.get("fieldValidation", "Warn")
    if mode == "Strict":
        raise validation.strict_error(resource.kind, resource.api_version, unknown, creating)
    validation.drop_fields(obj, unknown)
    if mode == "Ignore":
        return {}
    return {"Warning": ", ".join(f'299 - "unknown field \\"{p}\\""' for p in unknown)}


# --- handlers ----------------------------------------------------------------------------------
class Handlers:
    def __init__(self, store: Store, cfg: LabConfig, access: Access):
        self.store = store
        self.cfg = cfg
        self.access = access
        self.stopping = asyncio.Event()

    # discovery and friends
    async def version(self, request: web.Request) -> web.Response:
        return _json(discovery.render_version())

    async def api(self, request: web.Request) -> web.Response:
        return _json(discovery.render_api_versions(request.host))

    async def apis(self, request: web.Request) -> web.Response:
        return _json(discovery.render_api_group_list())

    async def api_group(self, request: web.Request) -> web.Response:
        return _json_or_404(discovery.render_api_group(request.match_info["group"]))

    async def core_v1(self, request: web.Request) -> web.Response:
        return _json(discovery.render_resource_list("", "v1"))

    async def group_version(self, request: web.Request) -> web.Response:
        return _json_or_404(discovery.render_resource_list(request.match_info["group"],
                                                           request.match_info["version"]))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def openapi_v2(self, request: web.Request) -> web.Response:
        if "protobuf" in request.headers.get("Accept", ""):
            return web.Response(body=openapi.render_v2_protobuf(),
                                content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        return _json(openapi.render_v2())

    async def openapi_v3(self, request: web.Request) -> web.Response:
        return _json(openapi.render_v3_index())

    async def openapi_v3_gv(self, request: web.Request) -> web.Response:
        return _json_or_404(openapi.render_v3_group_version(request.match_info["gv"]))

    # resources
    async def core_resource(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, "", "v1")

    async def group_resource(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, request.match_info["group"], request.match_info["version"])

    async def _dispatch(self, request: web.Request, group: str, version: str) -> web.StreamResponse:
        t = parse_target(group, version, request.match_info["tail"])
        resp = await self._route(request, t)
        if t.resource.kind == "Endpoints" and not resp.prepared:
            resp.headers["Warning"] = ENDPOINTS_WARNING
        return resp

    async def _route(self, request: web.Request, t: Target) -> web.StreamResponse:
        m = request.method
        if not t.resource.stored:
            if m == "POST" and t.name is None and (t.namespace is not None or not t.resource.namespaced):
                return await self.review(request, t)
            raise errors.method_not_allowed()
        if t.subresource == "token":
            if m == "POST":
                return await self.token(request, t)
            raise errors.method_not_allowed()
        if t.subresource == "eviction":
            if m == "POST":
                return await self.evict(request, t)
            raise errors.method_not_allowed()
        if t.subresource == "scale" and not t.watch_prefix:
            return await self.scale_subresource(request, t)
        if t.name is None:
            if m == "GET":
                if t.watch_prefix or _flag(request, "watch"):
                    return await self.watch(request, t)
                return self.list(request, t)
            if m == "POST" and (t.namespace is not None or not t.resource.namespaced):
                return await self.create(request, t)
            if m == "DELETE":
                return await self.delete_collection(request, t)
        else:
            if m == "GET":
                if t.watch_prefix or _flag(request, "watch"):
                    return await self.watch(request, t)
                return self.get(request, t)
            if m == "PUT":
                return await self.update(request, t)
            if m == "PATCH":
                return await self.patch(request, t)
            if m == "DELETE" and t.subresource is None:
                return await self.delete(request, t)
        raise errors.method_not_allowed()

    async def scale_subresource(self, request: web.Request, t: Target) -> web.Response:
        """GET, PUT or PATCH the autoscaling/v1 Scale of a Deployment or ReplicaSet."""
        if request.method not in ("GET", "PUT", "PATCH"):
            raise errors.method_not_allowed()
        raw = await request.read() if request.method != "GET" else b""
        # no await from here to the write (as in patch())
        obj = self.store.get(t.resource, t.namespace or "", t.name or "")
        if request.method == "GET":
            return _json(scale.render_scale(obj))
        if request.method == "PATCH":
            body = patch.apply_patch(request.headers.get("Content-Type", ""), scale.render_scale(obj), raw)
        else:
            body = _decode_body(request, raw)
        new = scale.apply_scale(obj, body)
        main = Target(t.resource, t.namespace, t.name, None, False)
        return _json(scale.render_scale(self._write(request, main, new, obj)))

    async def evict(self, request: web.Request, t: Target) -> web.Response:
        """policy/v1 Eviction: delete the pod with the eviction's DeleteOptions. No
        PodDisruptionBudget is served, so no eviction is ever refused for one."""
        body = await _read_body(request)
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was empty or not an object")
        name = (body.get("metadata") or {}).get("name")
        if name and name != t.name:
            raise errors.bad_request("name in URL does not match name in Eviction object")
        pod = self.store.get(t.resource, t.namespace or "", t.name or "")
        opts = body.get("deleteOptions") or {}
        _check_preconditions(t, pod, opts)
        if not (_dry_run(request) or opts.get("dryRun")):
            self._delete_one(t.resource, pod, opts)
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "code": 201}, status=201)

    async def review(self, request: web.Request, t: Target) -> web.Response:
        """The create-only reviews: who may do what, and who am I."""
        kind = t.resource.kind
        body = reviews.check_kind(await _read_body(request), kind, t.resource.api_version)
        user: User = request[USER]
        if kind == "SelfSubjectReview":
            return _json(reviews.render_self_subject_review(user), 201)
        if kind == "SelfSubjectRulesReview":
            reviews.validate_rules_review(body)
            rules, problems = self.access.rules_for(user, body["spec"]["namespace"])
            return _json(reviews.render_rules_review(body, rules, problems), 201)
        namespace = t.namespace or ""
        reviews.validate_access_review(kind, body, namespace)
        spec = dict(body["spec"])
        if kind == "LocalSubjectAccessReview" and spec.get("resourceAttributes") is not None:
            spec["resourceAttributes"] = dict(spec["resourceAttributes"], namespace=namespace)
        who = reviews.review_user(kind, spec, user)
        decision = self.access.authorize(reviews.review_attributes(spec, who))
        return _json(reviews.render_access_review(kind, body, who, decision, namespace), 201)

    async def token(self, request: web.Request, t: Target) -> web.Response:
        """TokenRequest: a signed token for the ServiceAccount named in the URL."""
        body = await _read_body(request)
        body = reviews.check_kind({} if body is None else body, "TokenRequest", "authentication.k8s.io/v1")
        return _json(self.access.token_request(t.namespace or "", t.name or "", body), 201)

    def get(self, request: web.Request, t: Target) -> web.Response:
        obj = self.store.get(t.resource, t.namespace or "", t.name or "")
        if _wants_table(request):
            return _json(_table(request, t.resource, [obj], obj["metadata"].get("resourceVersion")))
        return _json(obj)

    def list(self, request: web.Request, t: Target) -> web.Response:
        items, rv = self.store.list(t.resource, t.namespace, _predicate(request))
        if _wants_table(request):
            return _json(_table(request, t.resource, items, str(rv)))
        return _json({"kind": t.resource.list_kind, "apiVersion": t.resource.api_version,
                      "metadata": {"resourceVersion": str(rv)}, "items": items})

    async def _read_object(self, request: web.Request, t: Target) -> tuple[dict, dict]:
        """The object in a create's or update's body, of the URL's kind, and its metadata."""
        obj = await _read_body(request)
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request was empty or not an object")
        self._check_type(t.resource, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        return obj, meta

    async def create(self, request: web.Request, t: Target) -> web.Response:
        obj, meta = await self._read_object(request, t)
        _namespace_from_url(meta, t)
        headers = _field_check(request, t.resource, obj, creating=True)
        if meta.get("name"):
            validation.check_name(t.resource, meta["name"])
        elif not meta.get("generateName"):
            raise errors.invalid(t.resource.group, t.resource.kind, "",
                                 [errors.Cause("metadata.name", "FieldValueRequired",
                                               "Required value: name or generateName is required")])
        for drop in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                     "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(drop, None)
        if t.resource.namespaced and self.store.try_get(_NAMESPACES, "", t.namespace or "") is None:
            raise errors.not_found("", "namespaces", t.namespace or "")
        self._check_escalation(request, t, obj)
        obj = admission.admit(self.store, self.cfg, t.resource, "CREATE", obj, None)
        if _dry_run(request):
            return _json(obj, 201, headers)
        return _json(self.store.create(t.resource, obj), 201, headers)

    async def update(self, request: web.Request, t: Target) -> web.Response:
        obj, meta = await self._read_object(request, t)
        if meta.get("name") and meta["name"] != t.name:
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name "
                                     f"on the URL ({t.name})")
        meta["name"] = t.name
        _namespace_from_url(meta, t)
        headers = _field_check(request, t.resource, obj, creating=False)
        old = self.store.get(t.resource, t.namespace or "", t.name or "")
        return _json(self._write(request, t, obj, old), 200, headers)

    async def patch(self, request: web.Request, t: Target) -> web.Response:
        ctype = request.headers.get("Content-Type", "")
        body = await request.read()
        # No await from here to the write: the patch applies to the current object atomically,
        # as the real server's GuaranteedUpdate does, so a controller's write in between cannot
        # turn into a spurious 409 (a resourceVersion inside the patch is still a precondition).
        old = self.store.get(t.resource, t.namespace or "", t.name or "")
        new = copy.deepcopy(patch.apply_patch(ctype, old, body))
        if not isinstance(new, dict):
            raise errors.bad_request("the patch did not result in an object")
        meta = new.setdefault("metadata", {})
        if meta.get("name") != t.name or (t.resource.namespaced and meta.get("namespace") != t.namespace):
            raise errors.bad_request("the name or namespace of the object may not be changed by a patch")
        headers = _field_check(request, t.resource, new, creating=False)
        return _json(self._write(request, t, new, old), 200, headers)

    def _write(self, request: web.Request, t: Target, obj: dict, old: dict) -> dict:
        """Admit and store an update of `old` to `obj` (the main resource or its status)."""
        if t.subresource == "status":
            # the status subresource changes .status only (and a Node's labels and annotations,
            # store.STATUS_METADATA): admission sees the resulting object
            status = obj.get("status")
            meta = obj.get("metadata") or {}
            want_rv = meta.get("resourceVersion")
            obj = copy.deepcopy(old)
            if status is None:
                obj.pop("status", None)
            else:
                obj["status"] = status
            take_status_metadata(t.resource, obj["metadata"], meta)
            if want_rv:             # a precondition, checked by the store
                obj["metadata"]["resourceVersion"] = want_rv
        elif "status" in t.resource.subresources:
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)
        self._check_escalation(request, t, obj)
        obj = admission.admit(self.store, self.cfg, t.resource, "UPDATE", obj, old)
        if _dry_run(request):
            return obj
        stored = self.store.update(t.resource, obj, t.subresource)
        return deletion.finish_if_done(self.store, self.cfg, t.resource, stored)

    def _check_escalation(self, request: web.Request, t: Target, obj: dict) -> None:
        if t.resource.group == "rbac.authorization.k8s.io":
            self.access.check_rbac_write(request[USER], t.resource.kind, t.namespace or "", obj)

    async def delete(self, request: web.Request, t: Target) -> web.Response:
        opts = await _delete_options(request)
        obj = self.store.get(t.resource, t.namespace or "", t.name or "")
        _check_preconditions(t, obj, opts)
        if _dry_run(request) or opts.get("dryRun"):
            return _json(obj)
        return _json(self._delete_one(t.resource, obj, opts))

    def _delete_one(self, resource: Resource, obj: dict, opts: dict) -> dict:
        """Delete now, or mark: a scheduled Pod for its kubelet, an object for its finalizers."""
        return deletion.delete_object(self.store, self.cfg, resource, obj, opts.get("gracePeriodSeconds"),
                                      _propagation(opts))

    async def delete_collection(self, request: web.Request, t: Target) -> web.Response:
        opts = await _delete_options(request)
        items, _ = self.store.list(t.resource, t.namespace, _predicate(request))
        out = []
        if not (_dry_run(request) or opts.get("dryRun")):
            for obj in list(items):
                out.append(self._delete_one(t.resource, obj, opts))
        else:
            out = items
        return _json({"kind": t.resource.list_kind, "apiVersion": t.resource.api_version,
                      "metadata": {"resourceVersion": str(self.store.resource_version)}, "items": out})

    async def watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        predicate = _predicate(request)
        if t.name is not None:          # a watch on one object is a watch with a name selector
            by_name = selectors.make_predicate(None, f"metadata.name={t.name}")
            predicate = by_name if predicate is None else (lambda o, a=predicate, b=by_name: a(o) and b(o))
        timeout = float(q.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
        bookmarks = _flag(request, "allowWatchBookmarks")
        initial_events = _flag(request, "sendInitialEvents")
        rv_text = q.get("resourceVersion", "")
        table = _wants_table(request)

        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        first_table = [True]

        def encode(etype: str, obj: dict) -> bytes:
            if table and etype in ("ADDED", "MODIFIED", "DELETED"):
                obj = _table(request, t.resource, [obj], obj["metadata"].get("resourceVersion"),
                             with_columns=first_table[0])
                first_table[0] = False
            return (_dumps({"type": etype, "object": obj}) + "\n").encode()

        def bookmark(initial_end: bool = False) -> bytes:
            meta: dict = {"resourceVersion": str(self.store.resource_version)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return encode("BOOKMARK", {"kind": t.resource.kind, "apiVersion": t.resource.api_version,
                                       "metadata": meta})

        w = None
        try:
            if rv_text in ("", "0") or initial_events:
                items, rv = self.store.list(t.resource, t.namespace, predicate)
                w = self.store.watch(t.resource, t.namespace, predicate, since=rv)
                for obj in items:
                    await resp.write(encode("ADDED", obj))
                if initial_events and bookmarks:
                    await resp.write(bookmark(initial_end=True))
            else:
                try:
                    since = int(rv_text)
                except ValueError:
                    raise errors.bad_request(f'invalid resource version "{rv_text}"') from None
                try:
                    w = self.store.watch(t.resource, t.namespace, predicate, since=since)
                except errors.APIError as e:
                    await resp.write((_dumps({"type": "ERROR", "object": e.status()}) + "\n").encode())
                    return resp
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + BOOKMARK_SECONDS
            while not self.stopping.is_set():
                now = time.monotonic()
                if now >= deadline:
                    break
                if request.transport is None or request.transport.is_closing():
                    break
                wait = min(deadline - now, TICK_SECONDS)
                if bookmarks:
                    wait = max(0.0, min(wait, next_bookmark - now))
                ev = await w.next(wait)
                if ev is not None:
                    await resp.write(encode(*ev))
                    continue
                if bookmarks and time.monotonic() >= next_bookmark and w.queue.empty():
                    # the queue is empty, so every event up to the store's version was sent
                    await resp.write(bookmark())
                    next_bookmark = time.monotonic() + BOOKMARK_SECONDS
        except ConnectionResetError:        # the client went away
            return resp
        except errors.APIError as e:
            await resp.write((_dumps({"type": "ERROR", "object": e.status()}) + "\n").encode())
        finally:
            if w is not None:
                w.close()
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    @staticmethod
    def _check_type(resource: Resource, obj: dict) -> None:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if api_version and api_version != resource.api_version:
            raise errors.bad_request(f"the API version in the data ({api_version}) does not match the "
                                     f"expected API version ({resource.api_version})")
        if kind and kind != resource.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match the expected kind "
                                     f"({resource.kind})")


_NAMESPACES = find("", "namespaces")


def _dry_run(request: web.Request) -> bool:
    return bool(request.query.getall("dryRun", []))


def _check_preconditions(t: Target, obj: dict, opts: dict) -> None:
    """DeleteOptions.preconditions: 409 Conflict when the uid or resourceVersion differ."""
    pre = opts.get("preconditions") or {}
    meta = obj["metadata"]
    for field, shown in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        if pre.get(field) and pre[field] != meta.get(field):
            raise errors.conflict(t.resource.group, t.resource.plural, t.name or "",
                                  f"Precondition failed: {shown} in precondition: {pre[field]}, "
                                  f"{shown} in object meta: {meta.get(field)}")


def _propagation(opts: dict) -> str | None:
    """The propagation policy of DeleteOptions (orphanDependents is its older spelling)."""
    if opts.get("propagationPolicy"):
        policy = opts["propagationPolicy"]
        if policy not in ("Foreground", "Background", "Orphan"):
            raise errors.bad_request(f'DeleteOptions.propagationPolicy: Unsupported value: "{policy}": '
                                     'supported values: "Foreground", "Background", "Orphan"')
        return policy
    if opts.get("orphanDependents") is not None:
        return "Orphan" if opts["orphanDependents"] else "Background"
    return None


async def _delete_options(request: web.Request) -> dict:
    """DeleteOptions from the body, overridden by query parameters."""
    body = await _read_body(request)
    opts = dict(body) if isinstance(body, dict) else {}
    if "gracePeriodSeconds" in request.query:
        try:
            opts["gracePeriodSeconds"] = int(request.query["gracePeriodSeconds"])
        except ValueError:
            raise errors.bad_request("gracePeriodSeconds must be an integer") from None
    if "propagationPolicy" in request.query:
        opts["propagationPolicy"] = request.query["propagationPolicy"]
    if opts.get("gracePeriodSeconds") is not None:
        opts["gracePeriodSeconds"] = int(opts["gracePeriodSeconds"])
    return opts


# --- middlewares and the application -----------------------------------------------------------
def _auth_middleware(access: Access):
    @web.middleware
    async def middleware(request: web.Request, handler):
        started = time.monotonic()
        user = None
        try:
            user = access.impersonate(access.authenticate(request.headers.get("Authorization", "")),
                                      request.headers)
            request[USER] = user
            access.check(request_attributes(user, request.method, request.path, request.query))
            resp = await handler(request)
        except errors.APIError as e:
            resp = _status_response(e)
        except web.HTTPException as e:
            if e.status == 404:
                resp = _status_response(errors.no_such_path())
            elif e.status == 405:
                resp = _status_response(errors.method_not_allowed())
            else:
                raise
        except Exception as e:          # a bug must not take the server down: answer 500
            log.exception("internal error on %s %s", request.method, request.path_qs)
            resp = _status_response(errors.APIError(500, "InternalError",
                                                    f"Internal error occurred: {e!r}"))
        who = "" if user is None or user.privileged else f" ({user.name})"
        log.info("%s %s %s %.1fms%s", request.method, request.path_qs, resp.status,
                 (time.monotonic() - started) * 1000, who)
        return resp
    return middleware


def build_app(store: Store, cfg: LabConfig, token: str, signer: tokens.Signer | None = None) -> web.Application:
    """The aiohttp application serving `store` to clients presenting `token` (the admin) or a
    ServiceAccount token `signer` signed (a key of its own when None)."""
    access = Access(store, token, signer or tokens.Signer.generate())
    app = web.Application(middlewares=[_auth_middleware(access)], client_max_size=64 * 1024 * 1024)
    h = Handlers(store, cfg, access)
    app[STORE_KEY] = store
    app[CFG_KEY] = cfg
    app[TOKEN_KEY] = token
    app[STATE_KEY] = {"handlers": h}

    async def on_shutdown(_app: web.Application) -> None:
        h.stopping.set()
    app.on_shutdown.append(on_shutdown)

    r = app.router
    r.add_get("/version", h.version)
    r.add_get("/healthz", h.healthz)
    r.add_get("/livez", h.healthz)
    r.add_get("/readyz", h.healthz)
    r.add_get("/api", h.api)
    r.add_get("/api/", h.api)
    r.add_get("/apis", h.apis)
    r.add_get("/apis/", h.apis)
    r.add_get("/api/v1", h.core_v1)
    r.add_get("/api/v1/", h.core_v1)
    r.add_get("/openapi/v2", h.openapi_v2)
    r.add_get("/openapi/v3", h.openapi_v3)
    r.add_get("/openapi/v3/{gv:.+}", h.openapi_v3_gv)
    r.add_get("/apis/{group}", h.api_group)
    r.add_get("/apis/{group}/{version}", h.group_version)
    r.add_get("/apis/{group}/{version}/", h.group_version)
    streams.add_routes(app)
    r.add_route("*", "/api/v1/{tail:.+}", h.core_resource)
    r.add_route("*", "/apis/{group}/{version}/{tail:.+}", h.group_resource)
    return app


def ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def ensure_namespaces(store: Store, cfg: LabConfig,
                      names: tuple[str, ...] = ("default", "kube-system", "kube-public", "kube-node-lease")) -> None:
    for name in names:
        if store.try_get(_NAMESPACES, "", name) is None:
            obj = {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
            store.create(_NAMESPACES, admission.admit(store, cfg, _NAMESPACES, "CREATE", obj, None))


def ensure_service_cidr(store: Store, cfg: LabConfig) -> None:
    """The default ServiceCIDR `kubernetes`, from the configured service ranges (one per family,
    primary first), as the real API server makes it from --service-cluster-ip-range: ClusterIPs
    are allocated from it (and from any ServiceCIDR added later)."""
    cidrs = find("networking.k8s.io", "servicecidrs")
    if store.try_get(cidrs, "", "kubernetes") is None:
        obj = {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
               "metadata": {"name": "kubernetes"}, "spec": {"cidrs": list(cfg.service_cidrs)}}
        store.create(cidrs, admission.admit(store, cfg, cidrs, "CREATE", obj, None))


def kubernetes_service_ip(cfg: LabConfig) -> str:
    """The kubernetes Service's ClusterIP: the first address of the primary service range."""
    return str(ipaddress.ip_network(cfg.service_cidrs[0])[1])


def ensure_kubernetes_service(store: Store, cfg: LabConfig) -> None:
    """default/kubernetes, as every cluster has it: SingleStack in the primary family, the first
    address of that family's service range, 443 -> the API server on the control-plane address
    of that family (in-cluster clients use it)."""
    services = find("", "services")
    slices = find("discovery.k8s.io", "endpointslices")
    primary = cfg.families[0]
    endpoint = cfg.control_plane_ip if primary == 4 else cfg.control_plane_ip6
    if store.try_get(services, "default", "kubernetes") is None:
        ip = kubernetes_service_ip(cfg)
        svc = {"metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"type": "ClusterIP", "clusterIP": ip,
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": API_PORT}]}}
        store.create(services, admission.admit(store, cfg, services, "CREATE", svc, None))
    if store.try_get(slices, "default", "kubernetes") is None:
        eps = {"metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "kubernetes",
                                       "endpointslice.kubernetes.io/managed-by": "lab-apiserver"}},
               "addressType": ADDRESS_TYPES[primary],
               "endpoints": [{"addresses": [endpoint],
                              "conditions": {"ready": True, "serving": True, "terminating": False}}],
               "ports": [{"name": "https", "port": API_PORT, "protocol": "TCP"}]}
        store.create(slices, eps)
    if store.try_get(ENDPOINTS, "default", "kubernetes") is None:
        store.create(ENDPOINTS, {
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": endpoint}],
                         "ports": [{"name": "https", "port": API_PORT, "protocol": "TCP"}]}]})


async def serve(app: web.Application, ctx: ssl.SSLContext, socks: list) -> web.AppRunner:
    """Start serving `app` over TLS on already-bound listening sockets; returns the runner
    (await runner.cleanup() to stop)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    for sock in socks:
        await web.SockSite(runner, sock, ssl_context=ctx).start()
    return runner


__all__ = ["build_app", "ensure_kubernetes_service", "ensure_namespaces", "ensure_service_cidr", "kubernetes_service_ip", "parse_target", "serve", "ssl_context"]
