"""The cluster policy controller's bookkeeping, events fed by hand, the kernel a recorder: a pod
the CNI wired is a subject before the API shows its address, and an address DEL freed leaves the
sets even while the API still shows it."""
from __future__ import annotations

from kubeweft.proxy import render_cluster_policy as rc
from kubeweft.proxy.cluster_policy_controller import ClusterPolicyController


class Recorder:
    def __init__(self):
        self.runs: list[list[str]] = []

    def run(self, lines) -> None:
        self.runs.append(list(lines))


def _controller() -> tuple[ClusterPolicyController, Recorder]:
    nft = Recorder()
    c = ClusterPolicyController(api=None, node_name="n0", nft=nft)
    c._on_event("ns", "ADDED", {"metadata": {"name": "x"}})
    c._on_event("cnp", "ADDED", {"metadata": {"name": "deny"}, "spec": {
        "tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}})
    c._on_event("pod", "ADDED", {"metadata": {"namespace": "x", "name": "a"}, "spec": {"nodeName": "n0"},
                                 "status": {}})
    return c, nft


def subjects(lines: list[str]) -> str:
    prefix = f"add element {rc.T} {rc.policy_id('deny')}_s_4 "
    return next((x[len(prefix):] for x in lines if x.startswith(prefix)), "")


def test_the_cni_address_is_a_subject_before_the_api_shows_it_and_leaves_on_del():
    c, nft = _controller()
    c.pod_added("x", "a", ("10.244.0.7",), "cid1")
    assert subjects(nft.runs[-1]) == "{ 10.244.0.7 }"
    # the kubelet reports it; then DEL: gone although the API still shows it (terminating)
    c._on_event("pod", "MODIFIED", {"metadata": {"namespace": "x", "name": "a"}, "spec": {"nodeName": "n0"},
                                    "status": {"podIPs": [{"ip": "10.244.0.7"}, {"ip": "fd00::7"}]}})
    c.sync()
    pid = rc.policy_id("deny")                   # a subject, and a peer of its own rule
    assert nft.runs[-1] == [f"add element {rc.T} {pid}_i0_6 {{ fd00::7 }}",
                            f"add element {rc.T} {pid}_s_6 {{ fd00::7 }}"]     # elements only
    c.pod_deleted("cid1")
    c.sync()
    assert nft.runs[-1] == [f"delete element {rc.T} {pid}_i0_4 {{ 10.244.0.7 }}",
                            f"delete element {rc.T} {pid}_s_4 {{ 10.244.0.7 }}"]
    runs = len(nft.runs)
    c.sync()
    assert len(nft.runs) == runs             # nothing changed: no transaction


def test_an_invalid_policy_is_skipped_and_the_rest_enforced():
    c, nft = _controller()
    c._on_event("cnp", "ADDED", {"metadata": {"name": "broken"}, "spec": {"tier": "Developer"}})
    c.pod_added("x", "a", ("10.244.0.7",), "cid1")
    assert subjects(nft.runs[-1]) == "{ 10.244.0.7 }"
    assert rc.policy_id("broken") not in "\n".join(nft.runs[-1])


def test_every_address_the_cni_gave_is_a_subject_before_add_returns_and_leaves_on_del():
    c, nft = _controller()
    c.pod_added("x", "a", ("10.244.0.7", "fd00::7"), "cid1")
    pid = rc.policy_id("deny")
    assert subjects(nft.runs[-1]) == "{ 10.244.0.7 }"
    assert f"add element {rc.T} {pid}_s_6 {{ fd00::7 }}" in nft.runs[-1]
    c.pod_deleted("cid1")
    c.sync()
    assert f"delete element {rc.T} {pid}_s_6 {{ fd00::7 }}" in nft.runs[-1]
    assert f"delete element {rc.T} {pid}_s_4 {{ 10.244.0.7 }}" in nft.runs[-1]
