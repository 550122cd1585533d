"""kubeweft installed as its users install it: the DaemonSet kube-system/kubeweft has a Ready
pod on every node."""
from __future__ import annotations

import time

NAMESPACE, NAME = "kube-system", "kubeweft"
TIMEOUT = 120.0


def not_ready_nodes(cluster) -> tuple[list[str], str]:
    """Nodes without a Ready, up-to-date kubeweft pod, and the DaemonSet's status in words."""
    ds = cluster.daemonset(NAMESPACE, NAME)
    selector = ",".join(f"{k}={v}" for k, v in (ds.spec.selector.match_labels or {}).items())
    ready_on = set()
    for pod in cluster.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items:
        conds = pod.status.conditions or []
        if pod.metadata.deletion_timestamp is None and any(c.type == "Ready" and c.status == "True" for c in conds):
            ready_on.add(pod.spec.node_name)
    nodes = sorted(n.metadata.name for n in cluster.core.list_node().items
                   if (n.metadata.labels or {}).get("kubernetes.io/os", "linux") == "linux")
    st = ds.status
    words = (f"desired {st.desired_number_scheduled}, updated {st.updated_number_scheduled}, "
             f"ready {st.number_ready}, available {st.number_available}")
    missing = [n for n in nodes if n not in ready_on]
    if not missing and (st.updated_number_scheduled or 0) < (st.desired_number_scheduled or 0):
        missing = ["(pods of an older revision remain)"]
    return missing, words


def test_daemonset_ready_on_every_node(cluster):
    ds = cluster.daemonset(NAMESPACE, NAME)
    assert ds is not None, (
        f"no DaemonSet {NAMESPACE}/{NAME}: kubeweft is not installed the way its users install it "
        f"(kubectl apply -k deploy/kind, deploy/k3s or deploy/lab)")
    deadline = time.monotonic() + TIMEOUT
    missing, words = not_ready_nodes(cluster)
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        missing, words = not_ready_nodes(cluster)
    assert not missing, f"after {TIMEOUT:g} s, no Ready kubeweft pod on {missing}; DaemonSet: {words}"
