"""Before the first packet: pods created in a loop under a default-deny
ingress policy; an attacker on the external host floods the node's whole podCIDR, TCP SYNs and
UDP datagrams to port 80, from before the first pod exists until after the last is Ready.

What is measured, exactly: every answer a workload gives the attacker (a TCP connection that
completed and answered "whoami", or a UDP "whoami" reply) carries the pod's name. Not one
answer from a pod of the race namespace may arrive while the policy exists. RSTs (a SYN that
reached a pod's kernel before its workload listened, or a REJECT) cannot be attributed to a
pod by address alone and are reported, not asserted. The test is not vacuous: after the
policy is deleted, the same flood must get answers from the pods within seconds.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from kubeweft.lab import netns, topology

from tests.integration.netpol_helpers import ROOT, _nodes, netpol

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "h12-race"
NODE = "node1"
PODS = 15


def pod_doc(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {"app": "race"}},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "lab", "ports": [
                {"containerPort": 80, "protocol": "TCP"}, {"containerPort": 80, "protocol": "UDP"}]}]}}


def _ready_pods(core) -> dict[str, str]:
    out = {}
    for p in json.loads(core.list_namespaced_pod(NS, _preload_content=False, _request_timeout=10).data)["items"]:
        st = p.get("status") or {}
        if st.get("podIP") and any(c.get("type") == "Ready" and c.get("status") == "True"
                                   for c in st.get("conditions") or ()):
            out[p["metadata"]["name"]] = st["podIP"]
    return out


def test_no_packet_reaches_a_new_pod_under_default_deny(labk):
    from kubernetes import client

    nodes = _nodes(labk)
    cidr = next(c for n, c, _ in nodes if n == NODE)
    routes = topology.plan_pod_cidr_routes(labk.cfg, nodes)
    api = labk.client()
    core = client.CoreV1Api(api)
    attacker = None
    try:
        topology.apply_steps(routes)
        core.create_namespace({"metadata": {"name": NS}})
        labk.kubectl("apply", "-f", "-", input=json.dumps(
            netpol(NS, "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})))
        time.sleep(2.0)          # the agent learns of the policy (its watch) before the first pod
        attacker = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.netpol_helpers", "flood", cidr, "80", "200"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=netns.preexec(labk.cfg.external_netns))  # noqa: PLW1509 - before threads matter
        time.sleep(1.0)          # flooding before the first pod exists
        started = time.time()
        for i in range(PODS):
            core.create_namespaced_pod(NS, pod_doc(f"p{i}"), _request_timeout=10)
        deadline = time.monotonic() + 120
        while len(ready := _ready_pods(core)) < PODS:
            assert time.monotonic() < deadline, f"only {len(ready)}/{PODS} pods Ready"
            time.sleep(0.2)
        time.sleep(2.0)          # and flooding on while they all run
        # sensitivity: the same flood must reach the pods once the policy is gone
        deleted = time.time()
        labk.kubectl("delete", "networkpolicy", "deny", "-n", NS)
        time.sleep(5.0)          # the agent forgets the policy within a second or two
        attacker.terminate()
        out, err = attacker.communicate(timeout=30)
        assert out.strip(), f"the attacker printed nothing: {err[-2000:]}"
        attacker = None
        doc = json.loads(out)
    finally:
        if attacker is not None:
            attacker.kill()
            attacker.communicate(timeout=10)
        labk.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        for i in range(PODS):
            try:
                core.delete_namespaced_pod(f"p{i}", NS, grace_period_seconds=0)
            except client.ApiException:
                pass
        api.close()
        topology.apply_steps(topology.plan_underlay_route_removal(labk.cfg, [c for _, c, _ in nodes]))

    ours = [a for a in doc["answers"] if f'"{NS}/' in a["answer"]]
    before = [a for a in ours if a["t"] < deleted]
    after = {json.loads(a["answer"].strip())["pod"] for a in ours if a["t"] >= deleted}
    ips = set(ready.values())
    rst = {ip: n for ip, n in doc["refused"].items() if ip in ips}
    print(f"race: {PODS} pods created from t0={started:.3f}; attacker {doc['rounds']} rounds over "
          f"{doc['addresses']} addresses, {doc['syns']} SYNs, {doc['datagrams']} datagrams; "
          f"answers from race pods under the policy: {len(before)}; after deleting it: {len(after)} pods "
          f"answered; RSTs seen from race pod addresses: {sum(rst.values())}")
    assert not before, f"a pod answered the attacker under default-deny: {before[:5]}"
    assert len(after) >= PODS // 2, \
        f"the flood reached only {sorted(after)} after the policy was deleted: the test would be blind"
