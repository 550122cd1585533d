"""The e2e suite against any cluster: `KUBECONFIG=FILE pytest tests/e2e`.

It needs KUBECONFIG (the environment variable, never a default file: the suite must not run
against a cluster by accident), kubectl on PATH and nodes that can run
registry.k8s.io/e2e-test-images/agnhost (KUBEWEFT_E2E_AGNHOST overrides it).

- `cluster` (session): tests/e2e/cluster.py's Cluster for that kubeconfig. At the end of the
  session it waits (bounded) until every namespace of the run is gone.
- `net` (session): the pods most checks share, in a namespace of their own: agnhost netexec
  servers and clients on two nodes (one if the cluster has one), a ClusterIP Service `web` and a
  NodePort Service `web-np` over the servers.
- `namespace` (function): `make(purpose) -> name`, a namespace of the check's own, deleted
  when the check ends.
- Checks marked `disruptive` (the DaemonSet rollout) run last.
- The report (tests/e2e/report.py): JSON written to KUBEWEFT_E2E_REPORT (default
  out/e2e-report.json) and printed at the end of the run.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .cluster import Cluster, PodRef, agnhost_pod, service
from .report import CheckResult, add_phase, render

ROOT = Path(__file__).resolve().parents[2]
_results: dict[str, CheckResult] = {}
_session: dict = {"cluster": {}}


def pytest_configure(config):
    config.addinivalue_line("markers", "disruptive: changes the cluster's kubeweft; runs after the others")
    _session["start"] = time.monotonic()


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    mine = [i for i in items if here in Path(str(i.fspath)).parents]
    if mine and not os.environ.get("KUBECONFIG"):
        raise pytest.UsageError("tests/e2e runs against a cluster: set KUBECONFIG "
                                "(e.g. KUBECONFIG=$(kubeweft lab kubeconfig) pytest tests/e2e, or `make e2e`)")
    # stable: the disruptive checks keep their order, after all others
    items.sort(key=lambda i: i.get_closest_marker("disruptive") is not None)


@pytest.fixture(scope="session")
def cluster():
    c = Cluster(os.environ["KUBECONFIG"])
    _session["cluster"] = {"server": c.api.configuration.host, "nodes": len(c.core.list_node().items),
                           "run": c.run_id}
    yield c
    for ns in c.namespaces:
        c.delete_namespace(ns)
    left = c.wait_namespaces_gone()
    _session["cluster"]["namespaces_left"] = left
    c.api.close()


@dataclass(frozen=True)
class Net:
    namespace: str
    servers: dict[str, PodRef]        # side ("a", "b") -> pod
    clients: dict[str, PodRef]
    cluster_ip: str
    node_port: int
    node_ips: dict[str, str]          # node name -> InternalIP

    @property
    def two_nodes(self) -> bool:
        return "b" in self.servers


@pytest.fixture(scope="session")
def net(cluster):
    nodes = cluster.schedulable_nodes()
    assert nodes, "no Ready node without a NoSchedule/NoExecute taint to run the checks' pods on"
    ns = cluster.make_namespace("net")
    sides = dict(zip("ab", nodes[:2]))
    pods = []
    for side, node in sides.items():
        host = (node.metadata.labels or {}).get("kubernetes.io/hostname", node.metadata.name)
        for role in ("server", "client"):
            pods.append(agnhost_pod(f"{role}-{side}", host, {"app": "kw-e2e", "role": role, "side": side}))
    cluster.create_pods(ns, pods)
    cluster.core.create_namespaced_service(ns, service("web", {"app": "kw-e2e", "role": "server"}))
    np = cluster.core.create_namespaced_service(ns, service("web-np", {"app": "kw-e2e", "role": "server"},
                                                            kind="NodePort"))
    ready = cluster.wait_pods_ready(ns, [p["metadata"]["name"] for p in pods])
    cluster.wait_endpoints(ns, "web", len(sides))
    cluster.wait_endpoints(ns, "web-np", len(sides))
    web = cluster.core.read_namespaced_service("web", ns)
    node_ips = {}
    for node in cluster.core.list_node().items:
        for a in node.status.addresses or []:
            if a.type == "InternalIP" and ":" not in a.address:
                node_ips.setdefault(node.metadata.name, a.address)
    yield Net(ns, {s: ready[f"server-{s}"] for s in sides}, {s: ready[f"client-{s}"] for s in sides},
              web.spec.cluster_ip, np.spec.ports[0].node_port, node_ips)
    cluster.delete_namespace(ns)


@pytest.fixture
def namespace(cluster):
    made: list[str] = []

    def make(purpose: str) -> str:
        made.append(cluster.make_namespace(purpose))
        return made[-1]

    yield make
    for ns in made:
        cluster.delete_namespace(ns)


def _reason(report) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash else str(report.longrepr or "")[-500:]
    return text.split("\nassert ", 1)[0]          # pytest's rewritten expression adds nothing


def pytest_runtest_logreport(report):
    if not report.nodeid.startswith("tests/e2e/"):
        return
    add_phase(_results, report.nodeid, report.when, report.outcome, report.duration,
              _reason(report) if report.outcome != "passed" else "", dict(report.user_properties))


def pytest_terminal_summary(terminalreporter):
    if not _results:
        return
    doc = render(list(_results.values()), time.monotonic() - _session["start"], _session["cluster"])
    path = Path(os.environ.get("KUBEWEFT_E2E_REPORT") or ROOT / "out" / "e2e-report.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2)
    path.write_text(text + "\n")
    terminalreporter.section("kubeweft e2e report")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"(written to {path})")
