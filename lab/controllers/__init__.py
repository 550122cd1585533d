"""The controllers a cluster runs, inside the API server's event loop.

    endpointslices  EndpointSlices for Services with selectors (kube-controller-manager)
    nodeipam        a podCIDR per Node (kube-controller-manager's range allocator)
    nodelifecycle   not-ready and unreachable taints from each Node's Ready condition
    scheduler       binds pods to Nodes (kube-scheduler)
    loadbalancer    LoadBalancer ingress IPs (klipper-lb / MetalLB)
    announcer       routes to those IPs on the lab's router, as a BGP speaker announces them
    serviceaccounts the default ServiceAccount and kube-root-ca.crt in every namespace
    endpoints       v1 Endpoints in step with the EndpointSlices of each selector Service
    clusterroles    ClusterRole aggregation (admin, edit, view)
    tokensecrets    long-lived tokens in kubernetes.io/service-account-token Secrets
    deployment      Deployments -> ReplicaSets, rolling updates (kube-controller-manager)
    replicaset      ReplicaSets -> Pods (kube-controller-manager)
    daemonset       DaemonSets -> a Pod per eligible Node, ControllerRevisions (kube-controller-manager)
    garbagecollector  dependents deleted with their owners, by ownerReferences (kube-controller-manager)

Each is a `loop.Reconciler`: a store hook marks keys, a task syncs them. Allocation of
ClusterIPs and NodePorts happens at admission (lab/admission.py), as in the real registry.
"""
from __future__ import annotations

import asyncio

from .announcer import LoadBalancerAnnouncer
from .clusterroles import ClusterRoleAggregationController
from .daemonset import DaemonSetController
from .deployment import DeploymentController
from .endpoints import EndpointsController
from .endpointslices import EndpointSliceController
from .garbagecollector import GarbageCollector
from .loadbalancer import LoadBalancerController
from .loop import Reconciler
from .nodeipam import NodeIPAMController
from .nodelifecycle import NodeLifecycleController
from .replicaset import ReplicaSetController
from .scheduler import Scheduler
from .serviceaccounts import ServiceAccountsController
from .tokensecrets import TokenSecretsController

KINDS: tuple[type[Reconciler], ...] = (NodeIPAMController, NodeLifecycleController, Scheduler,
                                       EndpointSliceController, LoadBalancerController, LoadBalancerAnnouncer,
                                       ServiceAccountsController, EndpointsController,
                                       ClusterRoleAggregationController, TokenSecretsController,
                                       DeploymentController, ReplicaSetController, DaemonSetController,
                                       GarbageCollector)


def build(store, cfg) -> list[Reconciler]:
    """Make the controllers, fill their caches from the store and subscribe them to its events.
    No await between priming and the hook: nothing can be written in between."""
    out = []
    for kind in KINDS:
        c = kind(store, cfg)
        c.prime()
        store.add_hook(c.hook)
        out.append(c)
    return out


def start(store, cfg) -> list[asyncio.Task]:
    """Start every controller as an asyncio task on the running loop; return the tasks.
    The controllers themselves are reachable as task.controller (tests and status use it)."""
    tasks = []
    for c in build(store, cfg):
        task = asyncio.get_running_loop().create_task(c.run(), name=c.name)
        task.controller = c          # type: ignore[attr-defined]
        tasks.append(task)
    return tasks
