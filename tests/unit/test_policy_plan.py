"""The policy planner's incremental bookkeeping (no kernel: plans only): after any sequence of
watch events, what it holds (per-pod members, reference counts, the structure) equals what a
planner that saw only the final state computes from scratch, and the commands it produced
along the way take the kernel from one to the other."""
from __future__ import annotations

import random

import pytest
from kubeweft.proxy import policy_model as pm
from kubeweft.proxy import policy_plan
from kubeweft.proxy import render_policy as rp
from kubeweft.proxy.policy_plan import PolicyPlanner

NODE_CIDR = "10.244.0.0/24"
NODE_CIDRS = {"ipv4": NODE_CIDR, "dual": "10.244.0.0/24,fd00:10:244::/64"}


def ipv6_twin(ip: str) -> str:
    """10.244.N.H -> fd00:10:244:N::H (hex): the same pod's address in the IPv6 range."""
    _, _, n, h = ip.split(".")
    return f"fd00:10:244:{int(n):x}::{int(h):x}".replace(":0::", "::")


def pod(ns: str, name: str, ip: str, labels: dict, node: str = "node1", family: str = "ipv4") -> dict:
    ips = [ip, ipv6_twin(ip)] if ip and family == "dual" else [ip] if ip else []
    return {"metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"ports": [{"name": "http", "containerPort": 80}]}]},
            "status": {"podIP": ip, "podIPs": [{"ip": i} for i in ips]}}


def policy(ns: str, name: str, rnd: random.Random) -> dict:
    peers = [{"podSelector": {"matchLabels": {"app": rnd.choice("abc")}}},
             {"namespaceSelector": {"matchLabels": {"team": rnd.choice(["red", "blue"])}}},
             {"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": rnd.choice("xy")}}}]
    spec = {"podSelector": rnd.choice([{}, {"matchLabels": {"app": rnd.choice("abc")}}]),
            "ingress": [{"from": rnd.sample(peers, rnd.randint(1, 2)),
                         "ports": [rnd.choice([{"port": 80}, {"port": "http"}])]}]}
    if rnd.random() < 0.4:
        spec["egress"] = [{"to": rnd.sample(peers, 1)}]
        spec["policyTypes"] = ["Ingress", "Egress"]
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def namespace(name: str, team: str) -> dict:
    return {"metadata": {"name": name, "labels": {"team": team}}}


def planner(family: str = "ipv4") -> PolicyPlanner:
    return PolicyPlanner("node1", NODE_CIDRS[family])


def key_of(obj: dict) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def put(plan: PolicyPlanner, kind: str, obj: dict, deleted: bool = False) -> None:
    """A watch event, as the controller hands it to the planner."""
    ns, name = key_of(obj)
    if kind == "pol":
        plan.put_policy(f"{ns}/{name}", None if deleted else pm.parse_policy(obj))
    elif kind == "ns":
        plan.put_namespace(name, None if deleted else pm.parse_namespace(obj))
    else:
        plan.put_pod((ns, name), None if deleted else pm.parse_pod(obj))


def listed(plan: PolicyPlanner, nss, pols, pods) -> None:
    """The informers' first lists."""
    plan.set_namespaces(pm.parse_namespace(o) for o in nss)
    plan.set_policies(pm.parse_policy(o) for o in pols)
    plan.set_pods(pm.parse_pod(o) for o in pods)


def apply_structure(objects: dict[str, list[str]], lines: list[str]) -> None:
    """Just enough of nft to follow declarations and chain contents."""
    for line in lines:
        words = line.split()
        if words[1] in ("set", "counter", "chain") and words[0] in ("add", "delete", "flush"):
            key = f"{words[1]} {words[4]}"
            if words[0] == "add":
                objects.setdefault(key, [])
            elif words[0] == "flush":
                assert key in objects, line
                objects[key] = []
            else:
                assert key in objects and not objects[key], f"{line}: missing, or a chain not empty"
                del objects[key]
        elif words[:2] == ["add", "rule"]:
            assert f"chain {words[4]}" in objects, line
            objects[f"chain {words[4]}"].append(line)


def apply_lines(elements: dict[str, set[str]], lines: list[str]) -> None:
    """Just enough of nft to follow element commands."""
    for line in lines:
        verb, _, rest = line.partition(" element " + rp.T + " ")
        if verb not in ("add", "delete") or not rest:
            if line.startswith(f"delete set {rp.T} "):
                elements.pop(line.split()[-1], None)
            continue
        name, _, body = rest.partition(" { ")
        items = [e.strip() for e in body.rstrip(" }").split(", ")]
        target = elements.setdefault(name, set())
        for e in items:
            if verb == "add":
                assert e not in target, f"{e} added twice to {name}"
                target.add(e)
            else:
                assert e in target, f"{e} deleted from {name} without being there"
                target.discard(e)


def take_plan(plan: PolicyPlanner, split: bool, objects: dict[str, list[str]],
              elements: dict[str, set[str]]) -> None:
    """One plan into the model of the kernel: as one nft transaction, or as the controller sends
    plan_split's parts (nft, then netlink elements into sets that exist by then, then nft)."""
    if not split:
        lines = plan.plan()
        apply_lines(elements, lines)
        apply_structure(objects, lines)
        return
    pre, ops, post = plan.plan_split()
    assert not ops or not any(" element " in line for line in pre + post)
    apply_lines(elements, pre)
    apply_structure(objects, pre)
    for verb, name, _, items in ops:
        assert f"set {name}" in objects, f"elements of {name} before its set"
        apply_lines(elements, rp.render_elements(verb, [(name, e) for e in items]))
    apply_lines(elements, post)
    apply_structure(objects, post)


@pytest.mark.parametrize("split", [False, "small", "large"])
@pytest.mark.parametrize("family", sorted(NODE_CIDRS))
@pytest.mark.parametrize("seed", range(12))
def test_incremental_equals_from_scratch(seed, family, split, monkeypatch):
    """split: through plan_split, with every plan's elements few ("small": structure and
    elements in one nft transaction) or many ("large": elements over netlink between the
    structure that comes and the structure that goes)."""
    if split == "large":
        monkeypatch.setattr(policy_plan, "TEXT_MAX", 0)
    rnd = random.Random(seed)
    nss = {n: namespace(n, rnd.choice(["red", "blue"])) for n in ("x", "y", "z")}
    pods = {}
    for i in range(30):
        ns = rnd.choice(list(nss))
        node = rnd.choice(["node1", "node2"])
        ip = f"10.244.{0 if node == 'node1' else 1}.{i + 2}"
        pods[(ns, f"p{i}")] = pod(ns, f"p{i}", ip, {"app": rnd.choice("abc"), "tier": rnd.choice("xy")}, node,
                                  family)
    pols = {}
    plan = planner(family)
    listed(plan, nss.values(), [], pods.values())
    plan.plan()
    objects: dict[str, list[str]] = {}
    apply_structure(objects, rp.render_table(plan.decls, [])[3:])
    elements: dict[str, set[str]] = {}
    for s, e in plan.counts:
        elements.setdefault(s, set()).add(e)
    for step in range(60):
        r = rnd.random()
        if r < 0.45:                                 # a policy comes, changes or goes
            ns, name = rnd.choice(list(nss)), f"pol{rnd.randint(0, 8)}"
            if (ns, name) in pols and rnd.random() < 0.4:
                put(plan, "pol", pols.pop((ns, name)), deleted=True)
            else:
                pols[(ns, name)] = policy(ns, name, rnd)
                put(plan, "pol", pols[(ns, name)])
        elif r < 0.8:                                # a pod's labels change
            key = rnd.choice(list(pods))
            doc = pods[key]
            doc = dict(doc, metadata=dict(doc["metadata"], labels={"app": rnd.choice("abc"),
                                                                   "tier": rnd.choice("xy")}))
            pods[key] = doc
            put(plan, "pod", doc)
        elif r < 0.93:                               # a pod goes, or a new one comes
            if rnd.random() < 0.5 and pods:
                key = rnd.choice(list(pods))
                put(plan, "pod", pods.pop(key), deleted=True)
            else:
                i = 100 + step
                ns, node = rnd.choice(list(nss)), rnd.choice(["node1", "node2"])
                ip = f"10.244.{0 if node == 'node1' else 1}.{i}"
                pods[(ns, f"p{i}")] = pod(ns, f"p{i}", ip, {"app": rnd.choice("abc"), "tier": rnd.choice("xy")},
                                          node, family)
                put(plan, "pod", pods[(ns, f"p{i}")])
        else:                                        # a namespace's labels change
            n = rnd.choice(list(nss))
            nss[n] = namespace(n, rnd.choice(["red", "blue"]))
            put(plan, "ns", nss[n])
        if rnd.random() < 0.5:                       # sometimes several events in one sync
            take_plan(plan, split, objects, elements)
    take_plan(plan, split, objects, elements)

    fresh = planner(family)
    listed(fresh, nss.values(), pols.values(), pods.values())
    fresh.plan()
    assert plan.members == fresh.members
    assert plan.counts == fresh.counts
    assert plan.decls == fresh.decls
    assert list(plan.decls) == list(rp.render_decls(plan.index, NODE_CIDRS[family]))
    want_objects: dict[str, list[str]] = {}
    apply_structure(want_objects, rp.render_table(fresh.decls, [])[3:])
    assert objects == want_objects
    want: dict[str, set[str]] = {}
    for s, e in fresh.counts:
        want.setdefault(s, set()).add(e)
    assert {k: v for k, v in elements.items() if v} == want
    # a policy change took only its affected pods' members into account, yet the result is whole
    assert all(plan.pid_pods.get(pid, set()) == {k for k, ms in plan.members.items()
                                                if any(s.startswith(pid) for s, _ in ms)}
               for pid, _ in plan.index.policies)


# --- the CNI's view, and the local/remote split ------------------------------------------------

WEB_ONLY = {"metadata": {"namespace": "x", "name": "web"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}}


def started(pods=(), pols=(WEB_ONLY,)) -> tuple[PolicyPlanner, dict[str, set[str]]]:
    """A planner after its first lists, and the elements its first plan put in the kernel."""
    plan = planner()
    listed(plan, [namespace("x", "red")], pols, pods)
    plan.plan()
    elements: dict[str, set[str]] = {}
    apply_lines(elements, rp.render_elements("add", plan.counts))
    return plan, elements


def step(plan: PolicyPlanner, elements: dict[str, set[str]]) -> dict[str, set[str]]:
    apply_lines(elements, plan.plan())
    return elements


def test_the_cni_address_covers_a_pod_until_the_api_reports_it():
    sel = f"{rp.policy_id('x/web')}_sel"
    plan, elements = started([pod("x", "w", "", {"app": "web"})])
    assert not elements.get(sel)                     # no address yet: in no set
    plan.add_cni_pod(("x", "w"), ["10.244.0.5"], "cid-1")
    step(plan, elements)
    assert elements[sel] == elements[rp.IN_ISOLATED] == elements[rp.LOCAL_PODS] == {"10.244.0.5"}
    # the informer's next view, still without podIP, keeps the CNI's address
    put(plan, "pod", pod("x", "w", "", {"app": "web"}))
    assert step(plan, elements)[rp.IN_ISOLATED] == {"10.244.0.5"}
    # DEL: the address leaves every set; a late view with the old podIP does not bring it back
    assert plan.remove_cni_pod("cid-1") and not plan.remove_cni_pod("cid-1")
    step(plan, elements)
    assert elements[sel] == elements[rp.IN_ISOLATED] == elements[rp.LOCAL_PODS] == set()
    put(plan, "pod", pod("x", "w", "10.244.0.5", {"app": "web"}))
    assert step(plan, elements)[rp.IN_ISOLATED] == set()
    # the pod deleted and made again under its name: its new address counts
    put(plan, "pod", pod("x", "w", "10.244.0.5", {"app": "web"}), deleted=True)
    put(plan, "pod", pod("x", "w", "10.244.0.6", {"app": "web"}))
    assert step(plan, elements)[rp.IN_ISOLATED] == {"10.244.0.6"}


def test_an_attachment_without_pod_arguments_is_only_a_local_address():
    plan, elements = started()
    assert plan.knows(("", "cni:cid-x")) == (True, True)        # nothing to read from the API
    assert plan.knows(("x", "w")) == (False, True)
    plan.add_cni_pod(("", "cni:cid-x"), ["10.244.0.9"], "cid-x")
    step(plan, elements)
    assert {s for s, e in elements.items() if e} == {rp.LOCAL_PODS}
    plan.remove_cni_pod("cid-x")
    assert not any(step(plan, elements).values())


def test_pods_of_other_nodes_are_peers_not_isolated():
    peer = f"{rp.policy_id('x/web')}_i0"
    _, elements = started([pod("x", "c", "10.244.1.9", {"app": "client"}, node="node2"),
                              pod("x", "w", "10.244.1.10", {"app": "web"}, node="node2"),
                              pod("x", "v", "10.244.0.7", {"app": "web"}, node="")])   # no node: by CIDR
    assert elements[peer] == {"10.244.1.9"}
    assert elements[rp.IN_ISOLATED] == elements[rp.LOCAL_PODS] == {"10.244.0.7"}


def test_a_namespace_label_change_moves_its_pods_between_peer_sets():
    pol = {"metadata": {"namespace": "x", "name": "red-only"},
           "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "red"}}}]}]}}
    peer = f"{rp.policy_id('x/red-only')}_i0"
    plan = planner()
    listed(plan, [namespace("x", "red"), namespace("y", "blue")], [pol],
           [pod("x", "a", "10.244.0.2", {}), pod("y", "b", "10.244.1.3", {}, node="node2")])
    plan.plan()
    elements: dict[str, set[str]] = {}
    apply_lines(elements, rp.render_elements("add", plan.counts))
    assert elements[peer] == {"10.244.0.2"}
    put(plan, "ns", namespace("y", "red"))
    assert step(plan, elements)[peer] == {"10.244.0.2", "10.244.1.3"}
    put(plan, "ns", namespace("x", "blue"))
    assert step(plan, elements)[peer] == {"10.244.1.3"}


def test_a_full_replan_of_a_planned_state_changes_nothing_and_the_table_holds_it_all():
    plan, elements = started([pod("x", "c", "10.244.1.9", {"app": "client"}, node="node2"),
                              pod("x", "w", "10.244.0.5", {"app": "web"})])
    assert not plan.dirty and plan.plan() == []
    plan.replan_all()
    assert plan.dirty and plan.plan() == [] and not plan.dirty
    table = plan.table()
    assert table[:2] == [f"add table {rp.T}", f"delete table {rp.T}"]
    rebuilt: dict[str, set[str]] = {}
    apply_lines(rebuilt, table)
    assert rebuilt == elements
    assert plan.policy_of(rp.policy_id("x/web")) == "x/web" and plan.policy_of("p0") == "?/p0"


def started_dual(pods=(), pols=(WEB_ONLY,)) -> tuple[PolicyPlanner, dict[str, set[str]]]:
    plan = planner("dual")
    listed(plan, [namespace("x", "red")], pols, pods)
    plan.plan()
    elements: dict[str, set[str]] = {}
    apply_lines(elements, rp.render_elements("add", plan.counts))
    return plan, elements


def test_the_cni_addresses_of_a_dual_stack_pod_cover_both_families_until_del():
    sel = f"{rp.policy_id('x/web')}_sel"
    plan, elements = started_dual([pod("x", "w", "", {"app": "web"}, family="dual")])
    plan.add_cni_pod(("x", "w"), ["10.244.0.5", "fd00:10:244:0:0::5"], "cid-1")   # any spelling
    step(plan, elements)
    assert elements[sel] == elements[rp.IN_ISOLATED] == elements[rp.LOCAL_PODS] == {"10.244.0.5"}
    assert elements[f"{sel}_v6"] == elements[f"{rp.IN_ISOLATED}_v6"] == elements[f"{rp.LOCAL_PODS}_v6"] \
        == {"fd00:10:244::5"}
    # the kubelet's report of both podIPs changes nothing
    put(plan, "pod", pod("x", "w", "10.244.0.5", {"app": "web"}, family="dual"))
    assert plan.plan() == []
    plan.remove_cni_pod("cid-1")
    step(plan, elements)
    assert not any(elements[s] for s in (sel, f"{sel}_v6", rp.LOCAL_PODS, f"{rp.LOCAL_PODS}_v6"))
    put(plan, "pod", pod("x", "w", "10.244.0.5", {"app": "web"}, family="dual"))   # a late view
    assert not any(step(plan, elements).values())


def test_a_dual_stack_peer_is_admitted_by_both_addresses_and_an_ipv4_node_keeps_out_ipv6():
    peer = f"{rp.policy_id('x/web')}_i0"
    _, elements = started_dual([pod("x", "c", "10.244.1.9", {"app": "client"}, node="node2", family="dual")])
    assert elements[peer] == {"10.244.1.9"} and elements[f"{peer}_v6"] == {"fd00:10:244:1::9"}
    plan, elements = started([pod("x", "c", "10.244.1.9", {"app": "client"}, node="node2", family="dual")])
    assert elements[peer] == {"10.244.1.9"} and f"{peer}_v6" not in elements      # no such set here
    plan.add_cni_pod(("x", "n"), ["10.244.0.8", "fd00:10:244::8"], "cid-2")
    assert all(":" not in line for line in plan.plan())
