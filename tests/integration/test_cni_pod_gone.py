"""An ADD for a pod the API no longer has (the kubelet still runs ADD for a pod just deleted):
through the agent's gRPC handler, the CNI plugin and the policy controller against the lab's API
server on loopback, the runtime gets "try again later" naming the pod, the agent logs one line
and no traceback, and the address is not kept."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import pytest
from aiohttp import web
from kubernetes import client
from kubeweft.cni.errors import TRY_AGAIN_LATER
from kubeweft.cni.plugin import CniPlugin
from kubeweft.lab.apiserver import app as apiapp
from kubeweft.lab.config import LabConfig
from kubeweft.lab.store import Store
from kubeweft.proxy.agent import CniServicer
from kubeweft.proxy.policy_controller import PolicyController

from .agent_helpers import cni_add_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
TOKEN = "pod-gone-token"


@contextlib.contextmanager
def api_server():
    """The lab's API server app on 127.0.0.1 in a thread of its own: its URL."""
    loop = asyncio.new_event_loop()
    store, cfg = Store(history=50), LabConfig(name="podgone")
    apiapp.ensure_namespaces(store, cfg)
    runner = web.AppRunner(apiapp.build_app(store, cfg, TOKEN))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_add_for_a_pod_gone_from_the_api_is_one_log_line(tmp_path, caplog):
    with api_server() as url:
        cfg = client.Configuration(host=url)
        cfg.api_key = {"BearerToken": TOKEN}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        api = client.ApiClient(cfg)
        plugin = CniPlugin("10.245.0.0/24", tmp_path, mtu=1500)
        plugin.pod_hooks.append(PolicyController(api, "node1", "10.245.0.0/24"))
        request = cni_add_request("cid-gone", "default", "web-0", "kwgone", tmp_path)
        with caplog.at_level(logging.DEBUG):
            resp = CniServicer(plugin)._call(request, None)
        api.close()
    assert resp.HasField("error") and resp.error.code == TRY_AGAIN_LATER, resp
    assert "default/web-0" in resp.error.details and "not in the API" in resp.error.details
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text
    about = [r for r in caplog.records if r.levelno >= logging.INFO and "cid-gone" in r.getMessage()]
    assert len(about) == 1 and "default/web-0" in about[0].getMessage(), caplog.text
    assert not plugin.allocator(None).reservations()
