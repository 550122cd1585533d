"""Node lifecycle as a kubelet reports it, on ONE 1-node lab without a CNI (`lab up --cni none`):
the node is NotReady with the runtime's reason and tainted not-ready until its CNI conf dir holds
a config; a pod that does not tolerate the taint stays Pending; a CNI installer DaemonSet whose
hostNetwork pod tolerates it runs there and installs the CNI through hostPath volumes, into the
node's own directories; then the node is Ready and untainted and the pending pod runs; the node
renews its Lease. Everything through the real kubectl.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kubeweft.lab.kubelet import model, pluginroot

from .conftest import fresh_lab, unique_lab_name
from .kubelet_helpers import apply, get, is_ready
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOT_READY_MESSAGE = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                     "message:Network plugin returns error: cni plugin not initialized")
TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def lab():
    with fresh_lab(unique_lab_name(), nodes=1, cni="none", timeout=120) as lab:
        yield lab


def ready_condition(node: dict) -> dict:
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")


def installer(lab, conflist: dict) -> dict:
    """A CNI installer DaemonSet: hostNetwork, tolerating not-ready, writing the plugins and the
    conflist through hostPath volumes."""
    script = ("cp /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap /host/opt/cni/bin/ && "
              'printf "%s" "$CONF" > /host/etc/cni/net.d/10-lab.conflist && hostname && cat /etc/hosts && '
              "exec sleep 3600")
    labels = {"app": "cni-installer"}
    pod_spec = {"hostNetwork": True, "terminationGracePeriodSeconds": 1,
                     "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                      "effect": "NoSchedule"}],
                     "containers": [{"name": "install", "image": "busybox", "command": ["sh", "-c", script],
                                     "env": [{"name": "CONF", "value": json.dumps(conflist)}],
                                     "volumeMounts": [{"name": "bin", "mountPath": "/host/opt/cni/bin"},
                                                      {"name": "conf", "mountPath": "/host/etc/cni/net.d"}]}],
                     "volumes": [{"name": "bin", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}},
                                 {"name": "conf", "hostPath": {"path": "/etc/cni/net.d",
                                                               "type": "DirectoryOrCreate"}}]}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "cni-installer", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}


def test_a_node_without_cni_config_is_not_ready_and_tainted_and_keeps_pods_away(lab):
    node = get(lab, "node", "node1")
    cond = ready_condition(node)
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "KubeletNotReady", NOT_READY_MESSAGE)
    assert TAINT in node["spec"]["taints"]
    assert "NotReady" in lab.kubectl("get", "nodes").stdout
    lab.kubectl("run", "waiter", "--image=nginx")

    def unschedulable():
        pod = get(lab, "pod", "waiter")
        sched = next((c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), {})
        return sched.get("reason") == "Unschedulable" and sched
    sched = wait_for("waiter unschedulable", unschedulable, timeout=20)
    assert "untolerated taint {node.kubernetes.io/not-ready: }" in sched["message"]


def test_host_network_pod_tolerating_the_taint_installs_the_cni_and_the_node_turns_ready(lab):
    machine_conf = Path("/etc/cni/net.d/10-lab.conflist")
    existed = machine_conf.exists()
    node = get(lab, "node", "node1")
    conflist = model.render_reference_conflist(node["spec"]["podCIDR"], lab.cfg.mtu, pluginroot.NODE_DATA)
    apply(lab, installer(lab, conflist))

    def installer_running():
        pods = get(lab, "-n", "kube-system", "pod", "-l", "app=cni-installer")["items"]
        return pods[0] if len(pods) == 1 and is_ready(pods[0]) else None
    pod = wait_for("the DaemonSet's pod Running on the NotReady node", installer_running, timeout=30)
    assert pod["spec"]["nodeName"] == "node1" and pod["status"]["podIP"] == lab.cfg.node_ip(1)
    ds = get(lab, "-n", "kube-system", "ds", "cni-installer")
    assert ds["status"]["desiredNumberScheduled"] == 1        # the NotReady node is eligible
    logs = wait_for("the installer's log", lambda: lab.kubectl("-n", "kube-system", "logs",
                                                                pod["metadata"]["name"]).stdout, timeout=20)
    assert logs.startswith("node1\n") and "# Kubernetes-managed hosts file (host network)." in logs
    # the hostPaths are the node's own directories, never the machine's
    written = lab.cfg.cni_conf_dir("node1") / "10-lab.conflist"
    assert json.loads(written.read_text()) == conflist
    assert (lab.cfg.cni_bin_dir("node1") / "bridge").exists()
    assert machine_conf.exists() == existed

    def node_ready():
        n = get(lab, "node", "node1")
        return n if ready_condition(n)["status"] == "True" else None
    node = wait_for("node1 Ready", node_ready, timeout=30)
    assert ready_condition(node)["reason"] == "KubeletReady"
    wait_for("the not-ready taint lifted",
             lambda: TAINT not in (get(lab, "node", "node1")["spec"].get("taints") or []), timeout=20)

    def waiter_running():
        p = get(lab, "pod", "waiter")
        return p if is_ready(p) else None
    waiter = wait_for("the pending pod scheduled and Ready", waiter_running, timeout=40)
    assert waiter["status"]["podIP"].startswith(node["spec"]["podCIDR"].rsplit(".", 2)[0])


def test_the_node_renews_its_lease(lab):
    lease = get(lab, "-n", "kube-node-lease", "lease", "node1")
    assert lease["spec"]["holderIdentity"] == "node1" and lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
    first = lease["spec"]["renewTime"]
    time.sleep(1)
    wait_for("a renewed lease", lambda: get(lab, "-n", "kube-node-lease", "lease", "node1")["spec"]["renewTime"]
             != first, timeout=25, interval=1)
