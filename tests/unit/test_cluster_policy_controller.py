"""The cluster policy controller's bookkeeping, events fed by hand, the kernel a recorder: a pod
the CNI wired is a subject before the API shows its address, and an address DEL freed leaves the
sets even while the API still shows it."""
from __future__ import annotations

from kubeweft.proxy import render_cluster_policy as rc
from kubeweft.proxy.cluster_policy_controller import ClusterPolicyController


class Recorder:
    def __init__(self):
        self.runs: list[list[str]] = []
        self.listing: list[dict] = []            # what `list table` answers

    def run(self, lines) -> None:
        self.runs.append(list(lines))

    def list(self, what: str) -> list[dict]:
        assert what == f"table {rc.T}"
        return self.listing


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


def test_a_policy_change_keeps_what_every_rule_counted():
    c, nft = _controller()
    c.sync()
    counter = rc.rule_counter(rc.policy_id("deny"), "i", 0)
    assert f"add counter {rc.T} {counter} {{ packets 0 bytes 0;" in "\n".join(nft.runs[-1])
    nft.listing = [{"table": {"name": rc.TABLE}}, {"counter": {"name": counter, "packets": 7, "bytes": 420}}]
    c._on_event("cnp", "ADDED", {"metadata": {"name": "other"}, "spec": {
        "tier": "Baseline", "priority": 1, "subject": {"namespaces": {}},
        "egress": [{"name": "web", "action": "Accept", "to": [{"networks": ["10.0.0.0/8"]}]}]}})
    c.sync()
    text = "\n".join(nft.runs[-1])
    assert f"add counter {rc.T} {counter} {{ packets 7 bytes 420;" in text
    assert f"add counter {rc.T} {rc.rule_counter(rc.policy_id('other'), 'e', 0)} {{ packets 0 bytes 0;" in text
    assert c.rule_refs()[rc.rule_counter(rc.policy_id("other"), "e", 0)] == rc.RuleRef(
        "Baseline", "other", "Egress", "web", "Accept")
    assert c.describe_rule(counter) == "ClusterNetworkPolicy deny (Admin) ingress rule 0: Deny"


def test_deny_rules_log_to_their_own_group_with_a_prefix_the_drop_log_reads_back():
    c, nft = _controller()
    c.sync()
    counter = rc.rule_counter(rc.policy_id("deny"), "i", 0)
    logs = [x for x in nft.runs[-1] if " log prefix " in x]
    assert logs and all(f'log prefix "kwc {counter} " group {rc.NFLOG_GROUP}' in x for x in logs)
    drops = [x for x in nft.runs[-1] if x.endswith("drop comment \"deny ingress 0: Deny\"")]
    assert len(drops) == len(logs) == 2                     # once per family
    assert all(f'counter name "{counter}"' in x for x in drops)
    assert rc.parse_log_prefix(f"kwc {counter} ") == ("in", counter)
    assert rc.parse_log_prefix("kwp in p0123 ") is None       # NetworkPolicy's
    assert c.drops.log_packet(f"kwc {counter} ", b"") and not c.drops.log_packet("kwp in p1 ", b"")
