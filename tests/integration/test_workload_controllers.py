"""The workload controllers in process (Deployment, ReplicaSet, DaemonSet, garbage collector):
a real Store with admission in front and every controller running, a stand-in kubelet that
marks bound pods Running and Ready and finishes graceful deletions. No network, no root needed;
every wait is bounded."""
from __future__ import annotations

import asyncio
import copy

import pytest
from kubeweft.lab import deletion
from kubeweft.lab.resources import DAEMONSETS, DEPLOYMENTS, REPLICASETS, REVISIONS

from .test_controllers import CFG, NODES, NSNAME, PODS, Cluster, node

pytestmark = pytest.mark.timeout(60)


def template(image: str = "lab:1", **spec) -> dict:
    return {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}], **spec}}


def deployment(replicas: int = 2, **spec) -> dict:
    return {"metadata": {"name": "web", "namespace": NSNAME},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template(),
                     **spec}}


def kubelet(c: Cluster, ready: bool = True, finish: bool = True) -> None:
    """What the lab kubelets would do: bound pods run and turn Ready; terminating pods end."""
    for p in c.store.list(PODS, NSNAME)[0]:
        meta = p["metadata"]
        if meta.get("deletionTimestamp"):
            if finish:
                deletion.delete_object(c.store, CFG, PODS, p, grace=0)
        elif p["spec"].get("nodeName") and ready and p["status"].get("phase") != "Running":
            status = dict(p["status"], phase="Running", conditions=[
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
            c.store.update(PODS, {"metadata": {"namespace": NSNAME, "name": meta["name"]}, "status": status},
                           "status")


async def run(c: Cluster, rounds: int = 12, **kw) -> None:
    """Let controllers and the stand-in kubelet take turns until nothing moves."""
    for _ in range(rounds):
        await c.settle()
        kubelet(c, **kw)
    await c.settle()


def names(c: Cluster, resource) -> list[str]:
    return sorted(o["metadata"]["name"] for o in c.store.list(resource, NSNAME)[0])


def test_foreground_deletion_waits_for_pods_then_removes_the_chain():
    async def go():
        async with Cluster() as c:
            c.create(NODES, node("node1"))
            c.create(DEPLOYMENTS, deployment())
            await run(c)
            assert len(names(c, PODS)) == 2 and len(names(c, REPLICASETS)) == 1
            deletion.delete_object(c.store, CFG, DEPLOYMENTS, c.store.get(DEPLOYMENTS, NSNAME, "web"),
                                   propagation="Foreground")
            await run(c, rounds=3, finish=False)           # the kubelet does not finish the pods yet
            d = c.store.get(DEPLOYMENTS, NSNAME, "web")
            assert d["metadata"]["finalizers"] == ["foregroundDeletion"]
            rs = c.store.list(REPLICASETS, NSNAME)[0][0]
            assert rs["metadata"]["finalizers"] == ["foregroundDeletion"]     # it has pods of its own
            assert all(p["metadata"].get("deletionTimestamp") for p in c.store.list(PODS, NSNAME)[0])
            await run(c)
            assert names(c, PODS) == [] and names(c, REPLICASETS) == [] and names(c, DEPLOYMENTS) == []
    asyncio.run(go())


def test_orphaned_pods_are_adopted_by_a_matching_replicaset():
    async def go():
        async with Cluster() as c:
            c.create(NODES, node("node1"))
            rs = {"metadata": {"name": "web", "namespace": NSNAME},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template()}}
            c.create(REPLICASETS, copy.deepcopy(rs))
            await run(c)
            pods = names(c, PODS)
            assert len(pods) == 2 and all(p.startswith("web-") for p in pods)
            deletion.delete_object(c.store, CFG, REPLICASETS, c.store.get(REPLICASETS, NSNAME, "web"),
                                   propagation="Orphan")
            await run(c)
            assert names(c, REPLICASETS) == [] and names(c, PODS) == pods
            assert all(not p["metadata"].get("ownerReferences") for p in c.store.list(PODS, NSNAME)[0])
            rs["metadata"]["name"] = "web2"
            c.create(REPLICASETS, rs)
            await run(c)
            uid = c.store.get(REPLICASETS, NSNAME, "web2")["metadata"]["uid"]
            assert names(c, PODS) == pods                     # adopted, none created
            assert all(p["metadata"]["ownerReferences"][0]["uid"] == uid for p in c.store.list(PODS, NSNAME)[0])
            # a pod relabelled away is released, and replaced
            c.update(PODS, pods[0], lambda p: p["metadata"].update(labels={"app": "debug"}))
            await run(c)
            assert not c.store.get(PODS, NSNAME, pods[0])["metadata"]["ownerReferences"]
            assert len(names(c, PODS)) == 3
    asyncio.run(go())


def test_recreate_waits_for_old_pods_to_be_gone():
    async def go():
        async with Cluster() as c:
            c.create(NODES, node("node1"))
            c.create(DEPLOYMENTS, deployment(strategy={"type": "Recreate"}))
            await run(c)
            old = names(c, PODS)
            c.update(DEPLOYMENTS, "web", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="lab:2"))
            await run(c, rounds=3, finish=False)
            # old pods are terminating and the new ReplicaSet has no pod yet
            assert names(c, PODS) == old and len(names(c, REPLICASETS)) == 1
            await run(c)
            new = names(c, PODS)
            assert len(new) == 2 and not set(new) & set(old)
            status = c.store.get(DEPLOYMENTS, NSNAME, "web")["status"]
            assert status["updatedReplicas"] == status["availableReplicas"] == 2
    asyncio.run(go())


def test_paused_deployment_scales_but_does_not_roll_out():
    async def go():
        async with Cluster() as c:
            c.create(NODES, node("node1"))
            c.create(DEPLOYMENTS, deployment())
            await run(c)
            c.update(DEPLOYMENTS, "web", lambda d: d["spec"].update(paused=True))
            c.update(DEPLOYMENTS, "web", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="lab:2"))
            c.update(DEPLOYMENTS, "web", lambda d: d["spec"].update(replicas=3))
            await run(c)
            assert len(names(c, REPLICASETS)) == 1 and len(names(c, PODS)) == 3
            progressing = next(x for x in c.store.get(DEPLOYMENTS, NSNAME, "web")["status"]["conditions"]
                               if x["type"] == "Progressing")
            assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
            c.update(DEPLOYMENTS, "web", lambda d: d["spec"].update(paused=False))
            await run(c, rounds=20)
            rss = c.store.list(REPLICASETS, NSNAME)[0]
            assert sorted(r["spec"]["replicas"] for r in rss) == [0, 3]
    asyncio.run(go())


def test_daemonset_follows_nodes_and_readiness():
    async def go():
        async with Cluster() as c:
            c.create(NODES, node("node1"))
            c.create(NODES, node("node2", ready=False))
            ds = {"metadata": {"name": "agent", "namespace": NSNAME},
                  "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}}
            c.create(DAEMONSETS, copy.deepcopy(ds))
            cni = copy.deepcopy(ds)
            cni["metadata"]["name"] = "cni"
            cni["spec"]["selector"]["matchLabels"] = {"app": "cni"}
            cni["spec"]["template"] = template(hostNetwork=True, tolerations=[{"operator": "Exists"}])
            cni["spec"]["template"]["metadata"]["labels"] = {"app": "cni"}
            c.create(DAEMONSETS, cni)
            await run(c)

            def placed(owner: str) -> list[str]:
                return sorted(p["spec"]["nodeName"] for p in c.store.list(PODS, NSNAME)[0]
                              if p["metadata"]["generateName"] == f"{owner}-")
            assert placed("agent") == ["node1"]                  # node2 is not Ready
            assert placed("cni") == ["node1", "node2"]           # tolerates everything: runs there too
            c.create(NODES, node("node3"))
            c.update(NODES, "node2", lambda n: n["status"].update(conditions=[{"type": "Ready", "status": "True"}]),
                     "status")
            await run(c)
            assert placed("agent") == ["node1", "node2", "node3"]
            status = c.store.get(DAEMONSETS, NSNAME, "agent")["status"]
            assert (status["desiredNumberScheduled"], status["numberAvailable"]) == (3, 3)
            c.update(NODES, "node3", lambda n: n["metadata"]["labels"].update(pool="b"))
            c.update(DAEMONSETS, "agent", lambda d: d["spec"]["template"]["spec"].update(nodeSelector={"pool": "b"}))
            await run(c, rounds=20)
            assert placed("agent") == ["node3"]
            assert len(names(c, REVISIONS)) == 3                 # agent's two templates, cni's one
            c.store.delete(DAEMONSETS, NSNAME, "agent")
            await run(c)
            assert placed("agent") == [] and len(names(c, REVISIONS)) == 1
    asyncio.run(go())
