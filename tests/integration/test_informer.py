"""The agent's informer against the lab API server, through the real kubernetes client:
list, watch, resume after the server ends a watch, and re-list after 410 Gone."""
from __future__ import annotations

import os
import time

import kubernetes
import pytest
from kubeweft.proxy.informer import Informer

from .apiserver_proc import Server
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("informer"), f"inf{os.getpid()}", history=30)
    try:
        yield s
    finally:
        s.stop()


def svc(name: str, port: int = 80) -> dict:
    return {"metadata": {"name": name}, "spec": {"ports": [{"port": port}]}}


class GatedInformer(Informer):
    """An informer whose next watch waits for the test: a stand-in for a long network outage."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        import threading
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def _watch(self) -> None:
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(30)
        super()._watch()


def test_informer_follows_changes_across_watch_ends_and_410(server):
    api = kubernetes.config.new_client_from_config(str(server.kubeconfig))
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "inf"}})
    core.create_namespaced_service("inf", svc("before"))
    syncs, events = [], []
    inf = GatedInformer(api, "/api/v1/namespaces/inf/services", watch_timeout=1,
                   on_event=lambda t, o: events.append((t, o["metadata"]["name"])),
                   on_sync=lambda objs: syncs.append(sorted(n for _, n in objs)))
    inf.start()
    try:
        assert inf.wait_synced(10)
        assert syncs == [["before"]]
        time.sleep(1.5)                       # the server ends the watch; the informer resumes
        core.create_namespaced_service("inf", svc("after-resume"))
        wait_for("the ADDED event after the watch resumed", lambda: ("ADDED", "after-resume") in events, 10)
        assert inf.relists == 1               # resumed from its resourceVersion, no re-list

        # Outrun the server's history (30 events) while the informer cannot watch: it gets
        # 410 Gone on its next watch and must re-list to converge.
        inf.gate.clear()
        assert inf.waiting.wait(5)
        for i in range(40):
            core.patch_namespaced_service("before", "inf", {"metadata": {"labels": {"i": str(i)}}})
        core.delete_namespaced_service("after-resume", "inf")
        core.create_namespaced_service("inf", svc("after-gone"))
        inf.gate.set()
        wait_for("the re-listed objects",
                 lambda: sorted(n for _, n in inf.objects) == ["after-gone", "before"], 15)
        assert inf.relists >= 2 and syncs[-1] == ["after-gone", "before"]
        assert inf.objects[("inf", "before")]["metadata"]["labels"]["i"] == "39"
    finally:
        inf.stop()
        core.delete_namespace("inf")
        api.close()
