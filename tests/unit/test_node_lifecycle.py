"""The node lifecycle controller's taints follow the Ready condition."""
from kubeweft.lab.controllers.nodelifecycle import plan_taints, ready_status

NOT_READY = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}
USER = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


def test_not_ready_is_tainted_ready_is_not_and_user_taints_stay():
    assert plan_taints([], "False") == [NOT_READY]
    assert plan_taints([USER, NOT_READY], "False") is None
    assert plan_taints([USER, NOT_READY], "True") == [USER]
    assert plan_taints([NOT_READY], "Unknown") == [UNREACHABLE]
    assert plan_taints([USER], "True") is None
    # a NoExecute not-ready taint is not this controller's
    no_exec = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
    assert plan_taints([no_exec], "True") is None


def test_ready_status_of_a_node():
    assert ready_status({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}) == "False"
    assert ready_status({}) == "Unknown"
