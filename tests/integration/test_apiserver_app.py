"""The API server application in-process (aiohttp's test server on loopback, no TLS): the HTTP
details a client library hides — status codes, Status bodies, watch framing, Tables in watches."""
from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubeweft.lab.apiserver import app as apiapp
from kubeweft.lab.config import LabConfig
from kubeweft.lab.store import Store

TOKEN = "h1-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json", **AUTH}

pytestmark = pytest.mark.timeout(60)


def run(coro_fn):
    """Run coro_fn(client, store) against a fresh server."""
    async def main():
        store = Store(history=50)
        cfg = LabConfig(name="h1app")
        apiapp.ensure_namespaces(store, cfg)
        client = TestClient(TestServer(apiapp.build_app(store, cfg, TOKEN)))
        await client.start_server()
        try:
            await coro_fn(client, store)
        finally:
            await client.close()
    asyncio.run(asyncio.wait_for(main(), 30))


def pod(name, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "i"}], **spec}}


async def lines(resp, n, timeout=5.0):
    out = []
    while len(out) < n:
        line = await asyncio.wait_for(resp.content.readline(), timeout)
        if not line:
            break
        out.append(json.loads(line))
    return out


def test_errors_are_status_objects():
    async def go(c, store):
        r = await c.get("/api/v1/pods")
        assert r.status == 401 and (await r.json())["reason"] == "Unauthorized"
        r = await c.get("/api/v1/namespaces/default/widgets", headers=AUTH)
        body = await r.json()
        assert r.status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"
        r = await c.get("/api/v1/namespaces/default/pods/nope", headers=AUTH)
        assert (await r.json())["message"] == 'pods "nope" not found'
        r = await c.post("/api/v1/namespaces/default/pods", headers=AUTH,
                         json={**pod("a"), "metadata": {"name": "a", "namespace": "other"}})
        assert r.status == 400 and "does not match the namespace" in (await r.json())["message"]
        r = await c.post("/api/v1/namespaces/default/pods", headers=AUTH, json=pod("a"))
        assert r.status == 201
        r = await c.post("/api/v1/namespaces/default/pods", headers=AUTH, json=pod("a"))
        assert r.status == 409 and (await r.json())["reason"] == "AlreadyExists"
        r = await c.put("/api/v1/namespaces/default/pods/a", headers=AUTH, json=pod("b"))
        assert r.status == 400 and "does not match the name on the URL" in (await r.json())["message"]
        for method in (c.post, c.put):           # a create and an update read their body alike
            url = "/api/v1/namespaces/default/pods" + ("/a" if method == c.put else "")
            r = await method(url, headers=AUTH, json={**pod("a"), "metadata": ["a"]})
            assert r.status == 400 and (await r.json())["message"] == "metadata must be an object"
            r = await method(url, headers=AUTH, json={**pod("a"), "kind": "Service"})
            assert r.status == 400, await r.text()
        r = await c.post("/api/v1/namespaces/default/pods?fieldValidation=Strict", headers=AUTH,
                         json={**pod("s"), "spec": {"containers": [], "foo": 1}})
        assert r.status == 400
        assert (await r.json())["message"].endswith('strict decoding error: unknown field "spec.foo"')
        r = await c.post("/api/v1/namespaces/default/pods", headers=AUTH,
                         json={**pod("w"), "spec": {"containers": [{"name": "c", "image": "i"}], "foo": 1}})
        assert r.status == 201 and "unknown field" in r.headers["Warning"]
        assert "foo" not in (await r.json())["spec"]
        r = await c.patch("/api/v1/namespaces/default/pods/a", headers={**AUTH, "Content-Type":
                                                                        "application/apply-patch+yaml"},
                          data=b"{}")
        assert r.status == 415
    run(go)


def test_yaml_body_and_patch_types():
    async def go(c, store):
        body = b"apiVersion: v1\nkind: Pod\nmetadata: {name: y}\nspec:\n  containers: [{name: c, image: i}]\n"
        r = await c.post("/api/v1/namespaces/default/pods", data=body,
                         headers={**AUTH, "Content-Type": "application/yaml"})
        assert r.status == 201
        for ctype, patch in (("application/merge-patch+json", {"metadata": {"labels": {"a": "1"}}}),
                             ("application/strategic-merge-patch+json", {"metadata": {"labels": {"b": "2"}}}),
                             ("application/json-patch+json",
                              [{"op": "add", "path": "/metadata/labels/c", "value": "3"}])):
            r = await c.patch("/api/v1/namespaces/default/pods/y", data=json.dumps(patch),
                              headers={**AUTH, "Content-Type": ctype})
            assert r.status == 200, await r.text()
        assert (await r.json())["metadata"]["labels"] == {"a": "1", "b": "2", "c": "3"}
    run(go)


def test_watch_framing_bookmarks_and_gone(monkeypatch):
    monkeypatch.setattr(apiapp, "BOOKMARK_SECONDS", 0.3)

    async def go(c, store):
        await c.post("/api/v1/namespaces/default/pods", headers=AUTH, json=pod("a"))
        r = await c.get("/api/v1/namespaces/default/pods?watch=true&allowWatchBookmarks=true"
                        "&timeoutSeconds=3", headers=AUTH)
        first = await lines(r, 1)
        assert first[0]["type"] == "ADDED" and first[0]["object"]["metadata"]["name"] == "a"
        await c.post("/api/v1/namespaces/default/pods", headers=AUTH, json=pod("b"))
        got = await lines(r, 2)
        assert got[0]["type"] == "ADDED" and got[0]["object"]["metadata"]["name"] == "b"
        assert got[1]["type"] == "BOOKMARK"
        assert set(got[1]["object"]) == {"kind", "apiVersion", "metadata"}
        assert got[1]["object"]["metadata"]["resourceVersion"] == str(store.resource_version)
        r.close()
        # sendInitialEvents: the current state, then a bookmark marking its end
        r = await c.get("/api/v1/namespaces/default/pods?watch=true&sendInitialEvents=true"
                        "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=2",
                        headers=AUTH)
        got = await lines(r, 3)
        assert [e["type"] for e in got] == ["ADDED", "ADDED", "BOOKMARK"]
        assert got[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        r.close()
        for i in range(60):
            await c.patch("/api/v1/namespaces/default/pods/a", headers={
                **AUTH, "Content-Type": "application/merge-patch+json"},
                data=json.dumps({"metadata": {"labels": {"i": str(i)}}}))
        r = await c.get("/api/v1/namespaces/default/pods?watch=true&resourceVersion=2", headers=AUTH)
        assert r.status == 200
        err = await lines(r, 2)
        assert len(err) == 1 and err[0]["type"] == "ERROR"
        assert err[0]["object"]["code"] == 410 and err[0]["object"]["reason"] == "Expired"
    run(go)


def test_tables_in_get_list_and_watch():
    async def go(c, store):
        await c.post("/api/v1/namespaces/default/pods", headers=AUTH, json=pod("t"))
        r = await c.get("/api/v1/namespaces/default/pods", headers=TABLE)
        t = await r.json()
        assert t["kind"] == "Table" and t["rows"][0]["cells"][0] == "t"
        r = await c.get("/api/v1/namespaces/default/pods/t", headers=TABLE)
        assert (await r.json())["rows"][0]["cells"][:3] == ["t", "0/1", "Pending"]
        r = await c.get("/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=2", headers=TABLE)
        await c.patch("/api/v1/namespaces/default/pods/t", headers={
            **AUTH, "Content-Type": "application/merge-patch+json"}, data=b'{"metadata":{"labels":{"x":"y"}}}')
        got = await lines(r, 2)
        assert [e["type"] for e in got] == ["ADDED", "MODIFIED"]
        assert got[0]["object"]["kind"] == "Table" and got[0]["object"]["columnDefinitions"]
        assert got[1]["object"]["columnDefinitions"] is None
        assert got[1]["object"]["rows"][0]["cells"][0] == "t"
    run(go)


def test_graceful_pod_delete_and_deletecollection():
    async def go(c, store):
        await c.post("/api/v1/namespaces/default/pods", headers=AUTH,
                     json=pod("g", nodeName="n1", terminationGracePeriodSeconds=7))
        await c.post("/api/v1/namespaces/default/pods", headers=AUTH, json=pod("u"))
        r = await c.delete("/api/v1/namespaces/default/pods/g", headers=AUTH)
        meta = (await r.json())["metadata"]
        assert meta["deletionGracePeriodSeconds"] == 7 and meta["deletionTimestamp"]
        r = await c.delete("/api/v1/namespaces/default/pods/u", headers=AUTH)
        assert r.status == 200
        r = await c.get("/api/v1/namespaces/default/pods/u", headers=AUTH)
        assert r.status == 404
        r = await c.delete("/api/v1/namespaces/default/pods/g", headers=AUTH,
                           json={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        assert r.status == 200
        assert (await c.get("/api/v1/namespaces/default/pods/g", headers=AUTH)).status == 404
        for n in ("d1", "d2", "keep"):
            p = pod(n)
            p["metadata"]["labels"] = {"del": "yes" if n != "keep" else "no"}
            await c.post("/api/v1/namespaces/default/pods", headers=AUTH, json=p)
        r = await c.delete("/api/v1/namespaces/default/pods?labelSelector=del%3Dyes", headers=AUTH)
        assert sorted(i["metadata"]["name"] for i in (await r.json())["items"]) == ["d1", "d2"]
        r = await c.get("/api/v1/pods", headers=AUTH)
        assert [i["metadata"]["name"] for i in (await r.json())["items"]] == ["keep"]
    run(go)


def test_cluster_scoped_and_group_paths():
    async def go(c, store):
        r = await c.post("/api/v1/namespaces", headers=AUTH, json={"metadata": {"name": "h1-ns"}})
        assert r.status == 201
        r = await c.get("/api/v1/namespaces/h1-ns", headers=AUTH)
        assert (await r.json())["metadata"]["name"] == "h1-ns"
        r = await c.post("/apis/networking.k8s.io/v1/namespaces/h1-ns/networkpolicies", headers=AUTH,
                         json={"metadata": {"name": "np"}, "spec": {"podSelector": {}}})
        assert r.status == 201, await r.text()
        r = await c.get("/apis/networking.k8s.io/v1/networkpolicies", headers=AUTH)
        assert (await r.json())["kind"] == "NetworkPolicyList"
        r = await c.post("/api/v1/nodes", headers=AUTH, json={"metadata": {"name": "h1-node"}})
        assert r.status == 201
        r = await c.put("/api/v1/nodes/h1-node/status", headers=AUTH,
                        json={"metadata": {"name": "h1-node"}, "status": {"podCIDR": "x"}})
        assert r.status == 200 and (await r.json())["status"] == {"podCIDR": "x"}
        r = await c.get("/api/v1/namespaces/h1-ns/nodes", headers=AUTH)
        assert r.status == 404
        for path in ("/version", "/api", "/apis", "/api/v1", "/apis/discovery.k8s.io/v1", "/openapi/v3",
                     "/openapi/v3/api/v1"):
            r = await c.get(path, headers=AUTH)
            assert r.status == 200, path
    run(go)


def test_node_status_carries_labels_and_annotations_but_never_the_spec():
    """nodes/status as the real nodeStatusStrategy: metadata labels and annotations change with
    the status (how a CNI agent publishes its Node annotations without `patch nodes`), the spec
    does not; pods/status changes the status alone."""
    async def go(c, store):
        merge = {**AUTH, "Content-Type": "application/merge-patch+json"}
        r = await c.post("/api/v1/nodes", headers=AUTH, json={"metadata": {"name": "h12-node"},
                                                              "spec": {"podCIDR": "10.244.9.0/24"}})
        assert r.status == 201
        r = await c.patch("/api/v1/nodes/h12-node/status", headers=merge, data=json.dumps(
            {"metadata": {"annotations": {"kubeweft.io/public-ip": "192.168.56.11"}},
             "spec": {"podCIDR": "10.244.99.0/24", "unschedulable": True}}).encode())
        assert r.status == 200, await r.text()
        node = await (await c.get("/api/v1/nodes/h12-node", headers=AUTH)).json()
        assert node["metadata"]["annotations"] == {"kubeweft.io/public-ip": "192.168.56.11"}
        assert node["spec"] == {"podCIDR": "10.244.9.0/24"}
        r = await c.patch("/api/v1/nodes/h12-node/status", headers=merge,
                          data=b'{"metadata":{"annotations":{"kubeweft.io/public-ip":null}}}')
        node = await (await c.get("/api/v1/nodes/h12-node", headers=AUTH)).json()
        assert not node["metadata"].get("annotations")
        await c.post("/api/v1/namespaces/default/pods", headers=AUTH, json=pod("h12-pod"))
        r = await c.patch("/api/v1/namespaces/default/pods/h12-pod/status", headers=merge,
                          data=b'{"metadata":{"labels":{"a":"b"}},"status":{"phase":"Running"}}')
        got = await r.json()
        assert got["status"]["phase"] == "Running" and not got["metadata"].get("labels")
    run(go)


def test_stale_resource_version_conflicts_on_update_and_status():
    async def go(c, store):
        r = await c.post("/api/v1/namespaces/default/pods", headers=AUTH, json=pod("v"))
        created = await r.json()
        r = await c.patch("/api/v1/namespaces/default/pods/v", headers={
            **AUTH, "Content-Type": "application/merge-patch+json"}, data=b'{"metadata":{"labels":{"a":"b"}}}')
        assert r.status == 200
        for path in ("/api/v1/namespaces/default/pods/v", "/api/v1/namespaces/default/pods/v/status"):
            r = await c.put(path, headers=AUTH, json=created)
            assert r.status == 409, path
            assert (await r.json())["reason"] == "Conflict"
    run(go)
