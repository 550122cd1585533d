"""NetworkPolicy at scale: time to apply 1,000 policies over 5,000 pods, the latency of
one label change, and pod-to-pod iperf3 throughput with those policies loaded against none, in
one run on one 3-node kubeweft lab. Prints one JSON document. Never a test.

    .venv/bin/python bench/netpol.py [--pods 5000] [--policies 1000] [--lab NAME] [--timeout 540]
                                     [--name SUFFIX]

The three targets (TARGETS), judged in the JSON's "verdicts" (met only at 5,000 pods and 1,000
policies), each with the 1-minute load average of this shared machine when it was measured:
- converged_after_last_write_s: from the return of the last policy create (an API write) to
  node1's transaction that brought its kernel to every policy, nothing pending;
- label_change_event_to_kernel_ms: from node1's agent's watch event of the label change to its
  transaction (p50); the API call to the kernel is beside it;
- policy_add_event_to_kernel_ms: the same for one policy created (p50).
The JSON goes to bench/results/netpol[-SUFFIX].json and a drawing of the three to the .png
beside it (matplotlib); the JSON is printed on stdout too.

- The 5,000 pods are API objects only: bound to a node no kubelet serves ("ghost"), with
  status.podIP set through the status subresource, in 10 namespaces; to the agents they are
  peers like any other (labels app=a0..a49, tier=t0..t6; namespaces labelled ns=n0..n9).
- Policy j (namespace bench-n<j%10>) selects app=a<j%50> and allows port 80 from
  [tier=t<j%7>] OR [namespace ns=n<j+1> AND app=a<j+3>]: its ingress peer set on every node
  holds a few dozen to a hundred pod addresses.
- "apply time" runs from the return of the last policy create to node1's agent's transaction
  that brought its table to every policy with nothing pending (its metrics
  kubeweft_networkpolicy_{policies_applied,pending_events,last_applied_timestamp_seconds},
  polled; the table is not listed while timing). Then node1's whole table is listed once to
  check that every peer set is complete (if not, listing goes on and the figure is the time of
  the first complete listing, "apply_by": "listing"); all three nodes are checked exactly.
- "label change": one ghost pod's tier label moves it into a policy's peer set and back; the
  time from the PATCH call to node1's transaction (agent metric); then `nft list set` checks
  that the kernel agrees.
- "policy add / delete": one more policy, created then deleted, five times: from the API call
  call (made) to node1's transaction with the policy count changed (agent metric).
- iperf3: a server pod on node1, a client on node2 (VXLAN), TCP, before any policy, with the
  1,000 policies loaded plus 20 policies that select the server (one allows the client), so the
  server's packets pass its isolation chain, and once more after all are deleted; the ratio is
  with / mean(without).

--scratch: no lab; the agent's policy controller alone in a scratch netns (h14-scratch-<pid>),
its watch events fed by hand in the same shapes (1,000 policy events ~1 ms apart, then label
changes and one policy added and deleted): where the agent's own time goes, without the API
server; --profile FILE adds cProfile stats of the sync loop's thread (planner and transactions).

Without --lab it brings up its own lab (h14netpol) and always brings it down; with --lab it uses
that lab and deletes what it created.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeweft.lab import netns as lab_netns
from kubeweft.lab.config import LabConfig
from kubeweft.proxy.render_policy import TABLE, policy_id

KUBEWEFT = str(ROOT / ".venv" / "bin" / "kubeweft")
RESULTS = ROOT / "bench" / "results"
TARGETS = {"converged_after_last_write_s": 2.0, "label_change_event_to_kernel_ms": 20.0,
           "policy_add_event_to_kernel_ms": 50.0}
TARGET_PODS, TARGET_POLICIES = 5000, 1000
GHOST_NODE = "ghost"
GHOST_NET = ipaddress.ip_network("10.244.128.0/17")   # inside the cluster CIDR, no node's podCIDR
NAMESPACES = 10
IPERF_NS = "bench-iperf"
WORKERS = 8


def say(msg: str) -> None:
    print(f"[netpol bench] {msg}", file=sys.stderr, flush=True)


def load_average() -> float:
    """The 1-minute load average: on a shared 2-core machine, how much of a figure is waiting
    for a CPU."""
    return round(os.getloadavg()[0], 2)


# --- what the world is (pure) --------------------------------------------------------------------
def ghost_pod(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"g{i}", "namespace": f"bench-n{i % NAMESPACES}",
                         "labels": {"app": f"a{i % 50}", "tier": f"t{i % 7}"}},
            "spec": {"nodeName": GHOST_NODE, "containers": [{"name": "c", "image": "lab",
                                                             "ports": [{"containerPort": 80}]}]}}


def ghost_ip(i: int) -> str:
    return str(GHOST_NET[i + 1])


def bench_policy(j: int) -> dict:
    ns = j % NAMESPACES
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"pol{j}", "namespace": f"bench-n{ns}"},
            "spec": {"podSelector": {"matchLabels": {"app": f"a{j % 50}"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": f"t{j % 7}"}}},
                                           {"namespaceSelector": {"matchLabels": {"ns": f"n{(ns + 1) % NAMESPACES}"}},
                                            "podSelector": {"matchLabels": {"app": f"a{(j + 3) % 50}"}}}],
                                  "ports": [{"port": 80}]}]}}


def expected_peer_set(j: int, pods: int, tiers: dict[int, int] | None = None) -> set[str]:
    """The addresses policy j's ingress peer set must hold (tiers: pod -> overridden tier)."""
    ns = j % NAMESPACES
    out = set()
    for i in range(pods):
        pns, app, tier = i % NAMESPACES, i % 50, (tiers or {}).get(i, i % 7)
        if (pns == ns and tier == j % 7) or (pns == (ns + 1) % NAMESPACES and app == (j + 3) % 50):
            out.add(ghost_ip(i))
    return out


def iperf_policies() -> list[dict]:
    """20 policies selecting the iperf server; only the last allows the client (port 5201)."""
    out = []
    for k in range(19):
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"srv{k}", "namespace": IPERF_NS},
                    "spec": {"podSelector": {"matchLabels": {"role": "server"}},
                             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": f"n{k % NAMESPACES}"}},
                                                    "podSelector": {"matchLabels": {"tier": f"t{k % 7}"}}}],
                                          "ports": [{"port": 5201}]}]}})
    out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "srv-client", "namespace": IPERF_NS},
                "spec": {"podSelector": {"matchLabels": {"role": "server"}},
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                      "ports": [{"port": 5201}]}]}})
    return out


# --- I/O -----------------------------------------------------------------------------------------
class Bench:
    def __init__(self, lab: str, deadline: float):
        from kubernetes import client, config

        self.cfg = LabConfig(name=lab)
        self.deadline = deadline
        self.api = config.new_client_from_config(config_file=str(self.cfg.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        self.client = client

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the benchmark ran out of time")
        return left

    def nft_json(self, node: str, *what: str) -> dict:
        proc = lab_netns.run(self.cfg.node_netns(node), ["nft", "-j", "list", *what],
                             capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            return {"nftables": []}
        return json.loads(proc.stdout)

    def sets(self, node: str) -> dict[str, set[str]]:
        """Every set of the policy table on `node`: name -> elements (addresses as text)."""
        out: dict[str, set[str]] = {}
        for item in self.nft_json(node, "table", "inet", TABLE).get("nftables", []):
            s = item.get("set")
            if s:
                out[s["name"]] = {e if isinstance(e, str) else json.dumps(e) for e in s.get("elem", [])}
        return out

    def metrics(self, node: str = "node1") -> dict[str, float]:
        """The policy gauges of the node's agent (kubeweft_networkpolicy_*, no labels)."""
        import urllib.request

        def get() -> str:
            with urllib.request.urlopen("http://127.0.0.1:10249/metrics", timeout=30) as r:
                return r.read().decode()
        text = lab_netns.call_in(self.cfg.node_netns(node), get, timeout=40)
        out = {}
        for line in text.splitlines():
            if line.startswith("kubeweft_networkpolicy_") and "{" not in line:
                name, _, value = line.partition(" ")
                out[name[len("kubeweft_networkpolicy_"):]] = float(value)
        return out

    def wait_applied(self, policies: int, since_wall: float, timeout: float = 60,
                     split: list | None = None) -> float | None:
        """Seconds from `since_wall` to node1's transaction with `policies` policies and nothing
        pending; None on timeout. split gets (to the agent's last event, from it to the kernel)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < min(timeout, self.left()):
            m = self.metrics()
            if m.get("policies_applied") == policies and m.get("pending_events") == 0:
                if split is not None:
                    split.append((m["last_event_timestamp_seconds"] - since_wall,
                                  m["last_applied_timestamp_seconds"] - m["last_event_timestamp_seconds"]))
                return m["last_applied_timestamp_seconds"] - since_wall
            # the figure is the agent's own clock: polling slowly costs no precision, and a
            # scrape lists 2,000 counters (every COUNTER_MAX_AGE at most)
            time.sleep(0.25)
        return None

    def wait_transaction(self, after: float, since_wall: float, timeout: float = 30,
                         split: list | None = None) -> float | None:
        """Seconds from `since_wall` to node1's first transaction after wall clock `after` once
        nothing is pending; None on timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < min(timeout, self.left()):
            m = self.metrics()
            if m.get("last_applied_timestamp_seconds", 0) > after and m.get("pending_events") == 0:
                if split is not None:
                    split.append((m["last_event_timestamp_seconds"] - since_wall,
                                  m["last_applied_timestamp_seconds"] - m["last_event_timestamp_seconds"]))
                return m["last_applied_timestamp_seconds"] - since_wall
            time.sleep(0.1)
        return None

    def set_has(self, node: str, name: str, ip: str) -> bool:
        for item in self.nft_json(node, "set", "inet", TABLE, name).get("nftables", []):
            if item.get("set"):
                return ip in (item["set"].get("elem") or [])
        return False

    def create_ns(self, name: str, labels: dict) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name, "labels": labels}}, _request_timeout=10)
        except self.client.ApiException as e:
            if e.status != 409:
                raise

    def make_ghost(self, i: int) -> None:
        doc = ghost_pod(i)
        ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
        try:
            self.core.create_namespaced_pod(ns, doc, _request_timeout=30)
        except self.client.ApiException as e:
            if e.status != 409:
                raise
        ip = ghost_ip(i)
        self.core.patch_namespaced_pod_status(name, ns, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}, _request_timeout=30)

    def real_pod(self, name: str, node: str, role: str) -> None:
        doc = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": IPERF_NS, "labels": {"role": role}},
               # the workload listens on port 80; iperf3 gets 5201 to itself
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "lab",
                                                          "ports": [{"containerPort": 80}]}]}}
        try:
            self.core.create_namespaced_pod(IPERF_NS, doc, _request_timeout=10)
        except self.client.ApiException as e:
            if e.status != 409:
                raise

    def wait_ready(self, names: list[str]) -> dict[str, str]:
        from kubeweft.lab.probe import read_pods

        while True:
            pods = {p.metadata.name: p for p in self.core.list_namespaced_pod(IPERF_NS, _request_timeout=10).items}
            running = read_pods(self.cfg)
            if all(n in pods and pods[n].status.pod_ip and running.get(f"{IPERF_NS}/{n}") for n in names):
                return {n: pods[n].status.pod_ip for n in names}
            self.left()
            time.sleep(0.3)

    def iperf(self, server_ip: str, seconds: int) -> dict:
        from kubeweft.lab.probe import read_pods

        running = read_pods(self.cfg)
        srv_ns, cli_ns = running[f"{IPERF_NS}/server"]["netns"], running[f"{IPERF_NS}/client"]["netns"]
        server = subprocess.Popen(["iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, preexec_fn=lab_netns.preexec(srv_ns))  # noqa: PLW1509
        try:
            time.sleep(0.5)
            proc = lab_netns.run(cli_ns, ["iperf3", "-c", server_ip, "-p", "5201", "-t", str(seconds), "-J"],
                                 capture_output=True, text=True, timeout=seconds + 30, check=False)
            if proc.returncode != 0:
                return {"error": (proc.stdout + proc.stderr)[-500:]}
            end = json.loads(proc.stdout)["end"]
            return {"gbit_s": round(end["sum_received"]["bits_per_second"] / 1e9, 3),
                    "retransmits": end["sum_sent"].get("retransmits"), "seconds": seconds}
        finally:
            server.kill()
            server.wait(timeout=10)

    def create_policies(self, docs: list[dict]) -> None:
        def one(doc: dict) -> None:
            try:
                self.net.create_namespaced_network_policy(doc["metadata"]["namespace"], doc, _request_timeout=30)
            except self.client.ApiException as e:
                if e.status != 409:
                    raise
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, docs))

    def cleanup(self, pods: int, policies: int) -> None:
        say("cleaning up the objects this run made")
        for ns in [f"bench-n{k}" for k in range(NAMESPACES)] + [IPERF_NS]:
            for what in ("networkpolicy", "pod"):
                subprocess.run([str(ROOT / ".venv" / "bin" / "kubectl"), "--kubeconfig", str(self.cfg.kubeconfig),
                                "delete", what, "--all", "-n", ns, "--grace-period=0", "--wait=false"],
                               capture_output=True, timeout=120, check=False)
            try:
                self.core.delete_namespace(ns, _request_timeout=10)
            except self.client.ApiException:
                pass


def _split_ms(split: list) -> dict:
    """p50 of (API call -> the agent's last watch event, that event -> its transaction), ms."""
    if not split:
        return {}
    return {"api_to_agent_p50": round(statistics.median(a for a, _ in split) * 1000, 1),
            "agent_to_kernel_p50": round(statistics.median(k for _, k in split) * 1000, 1)}


def verdicts(result: dict) -> dict:
    """Each target with what was measured, the load beside it, and whether it was met (None: not
    measured, or not at 5,000 pods and 1,000 policies)."""
    full = result.get("pods", 0) >= TARGET_PODS and result.get("policies", 0) >= TARGET_POLICIES
    label, add = result.get("label_change_ms", {}), result.get("policy_add_ms", {})
    measured = {
        "converged_after_last_write_s": (result.get("apply_s_from_last_create"), result.get("apply_loadavg_1m"),
                                         {"by": result.get("apply_by")}),
        "label_change_event_to_kernel_ms": (label.get("agent_to_kernel_p50"), label.get("loadavg_1m"),
                                            {"api_call_to_kernel_p50": label.get("api_call_to_kernel_p50")}),
        "policy_add_event_to_kernel_ms": (add.get("agent_to_kernel_p50"), add.get("loadavg_1m"),
                                          {"api_call_to_kernel_p50": add.get("p50")}),
    }
    out = {}
    for name, (value, load, more) in measured.items():
        target = TARGETS[name]
        out[name] = {"target": target, "measured": value, "loadavg_1m": load, **more,
                     "met": None if value is None or not full else value < target}
    return out


def draw(result: dict, path: Path) -> None:
    """The three figures against their targets, one panel each, the load average in each title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    v = result.get("verdicts", {})
    panels = [("converged_after_last_write_s", "1,000 policies: last API write -> kernel", "seconds",
               [("last write -> kernel", v.get("converged_after_last_write_s", {}).get("measured"))]),
              ("label_change_event_to_kernel_ms", "one pod label change", "ms",
               [("watch event -> kernel", v.get("label_change_event_to_kernel_ms", {}).get("measured")),
                ("API call -> kernel", v.get("label_change_event_to_kernel_ms", {}).get("api_call_to_kernel_p50"))]),
              ("policy_add_event_to_kernel_ms", "one policy added", "ms",
               [("watch event -> kernel", v.get("policy_add_event_to_kernel_ms", {}).get("measured")),
                ("API call -> kernel", v.get("policy_add_event_to_kernel_ms", {}).get("api_call_to_kernel_p50"))])]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    for ax, (name, title, unit, bars) in zip(axes, panels):
        labels = [b for b, _ in bars]
        values = [x if x is not None else 0 for _, x in bars]
        ax.bar(labels, values, color=["tab:blue", "tab:grey"][:len(bars)])
        for i, (_, x) in enumerate(bars):
            ax.text(i, values[i], "not measured" if x is None else f"{x:g}", ha="center", va="bottom", fontsize=8)
        ax.axhline(TARGETS[name], color="red", linewidth=0.8, label=f"target < {TARGETS[name]:g} {unit}")
        met = v.get(name, {}).get("met")
        ax.set_title(f"{title}\n{'met' if met else 'missed' if met is False else 'not judged'}, "
                     f"load {v.get(name, {}).get('loadavg_1m')}", fontsize=9)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", labelsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"bench/netpol.py: {result.get('policies')} policies over {result.get('pods')} pods, "
                 f"3-node lab, node1's agent", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(b: Bench, pods: int, policies: int, iperf_seconds: int) -> dict:
    # a shared 2-core machine: the load says how much of a figure is waiting for a CPU
    out: dict = {"pods": pods, "policies": policies, "nodes": 3, "loadavg_1m_at_start": load_average()}
    # 1. two real pods and the baseline throughput
    b.create_ns(IPERF_NS, {"ns": "iperf"})
    b.real_pod("server", "node1", "server")
    b.real_pod("client", "node2", "client")
    ips = b.wait_ready(["server", "client"])
    say(f"iperf3 without policies ({iperf_seconds} s)")
    out["iperf_no_policies"] = b.iperf(ips["server"], iperf_seconds)

    # 2. 5,000 ghost pods
    for k in range(NAMESPACES):
        b.create_ns(f"bench-n{k}", {"ns": f"n{k}"})
    say(f"creating {pods} pods (API objects with status.podIP) ...")
    t0 = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(b.make_ghost, range(pods)))
    out["pods_create_s"] = round(time.monotonic() - t0, 2)
    time.sleep(3.0)                      # the agents' pod watches catch up (not part of the figure)

    # 3. 1,000 policies: from the last create to node1's sets complete
    docs = [bench_policy(j) for j in range(policies)]
    expected = {f"{policy_id(f'bench-n{j % NAMESPACES}/pol{j}')}_i0": expected_peer_set(j, pods)
                for j in range(policies)}
    base = int(b.metrics().get("policies_applied", 0))
    say(f"creating {policies} policies ...")
    t0, w0 = time.monotonic(), time.time()
    b.create_policies(docs)
    t_last, w_last = time.monotonic(), time.time()
    out["policies_create_s"] = round(t_last - t0, 2)
    split: list = []
    by_metric = b.wait_applied(base + policies, w_last, timeout=300, split=split)
    reads = []
    while True:
        r0 = time.monotonic()
        sets = b.sets("node1")
        reads.append(time.monotonic() - r0)
        missing = sum(1 for name, want in expected.items() if not want <= sets.get(name, set()))
        if not missing:
            break
        by_metric = None                  # the agent said done, the kernel disagreed: listing
        if b.left() < 120:
            out["apply_error"] = f"{missing} of {policies} peer sets still incomplete on node1"
            break
        time.sleep(0.2)
    if by_metric is not None:
        out["apply_by"] = "agent metric, then one complete listing"
        out["apply_s_from_last_create"] = round(by_metric, 3)
        out["apply_s_from_first_create"] = round(by_metric + w_last - w0, 3)
        out["apply_last_event_after_last_create_s"] = round(split[0][0], 3)    # API delivery
    else:
        out["apply_by"] = "listing"
        out["apply_s_from_last_create"] = round(time.monotonic() - t_last, 2)
        out["apply_s_from_first_create"] = round(time.monotonic() - t0, 2)
    out["apply_loadavg_1m"] = load_average()
    out["listing_s"] = round(statistics.median(reads), 2)
    out["elements_node1"] = sum(len(v) for k, v in sets.items() if k in expected)
    out["elements_expected"] = sum(len(v) for v in expected.values())
    exact = {}
    for node in ("node1", "node2", "node3"):
        got = b.sets(node)
        exact[node] = all(got.get(name) == want for name, want in expected.items())
    out["sets_exact_on_every_node"] = exact

    # 4. label change: pod g0 (bench-n0, tier t0) into policy j's tier peer (j%10 == 0, j%7 == 1)
    j = next((j for j in range(policies) if j % NAMESPACES == 0 and j % 7 == 1), None)
    if j is not None:
        set_name = f"{policy_id(f'bench-n0/pol{j}')}_i0"
        ip = ghost_ip(0)
        lat, wrong, split = [], 0, []
        for _ in range(5):
            for tier, want in (("t1", True), ("t0", False)):
                before = b.metrics().get("last_applied_timestamp_seconds", 0)
                w0 = time.time()
                b.core.patch_namespaced_pod("g0", "bench-n0", {"metadata": {"labels": {"tier": tier}}},
                                            _request_timeout=10)
                took = b.wait_transaction(before, w0, split=split)
                if took is not None:
                    lat.append(took * 1000)
                wrong += b.set_has("node1", set_name, ip) != want       # the kernel agrees
        out["label_change_ms"] = {"api_call_to_kernel_p50": round(statistics.median(lat), 1) if lat else None,
                                  "max": round(max(lat), 1) if lat else None, "n": len(lat),
                                  "kernel_disagreed": wrong, **_split_ms(split), "loadavg_1m": load_average()}

    # 4b. one policy more, created and deleted
    adds, dels, split_add, split_del = [], [], [], []
    for k in range(5):
        doc = bench_policy(policies + k)
        ns = doc["metadata"]["namespace"]
        w0 = time.time()
        b.net.create_namespaced_network_policy(ns, doc, _request_timeout=10)
        adds.append(b.wait_applied(base + policies + 1, w0, timeout=30, split=split_add))
        w0 = time.time()
        b.net.delete_namespaced_network_policy(doc["metadata"]["name"], ns, _request_timeout=10)
        dels.append(b.wait_applied(base + policies, w0, timeout=30, split=split_del))
    ok_add, ok_del = [a * 1000 for a in adds if a is not None], [d * 1000 for d in dels if d is not None]
    out["policy_add_ms"] = {"p50": round(statistics.median(ok_add), 1) if ok_add else None,
                            "max": round(max(ok_add), 1) if ok_add else None, "n": len(ok_add),
                            **_split_ms(split_add), "loadavg_1m": load_average()}
    out["policy_delete_ms"] = {"p50": round(statistics.median(ok_del), 1) if ok_del else None,
                               "max": round(max(ok_del), 1) if ok_del else None, "n": len(ok_del),
                               **_split_ms(split_del)}

    # 5. throughput with the policies loaded (plus 20 that isolate the server)
    b.create_policies(iperf_policies())
    sel = f"{policy_id(f'{IPERF_NS}/srv-client')}_i0"
    t0 = time.monotonic()
    while not b.set_has("node1", sel, ips["client"]) and time.monotonic() - t0 < 30:
        time.sleep(0.1)
    say(f"iperf3 with {policies + 20} policies ({iperf_seconds} s)")
    out["iperf_with_policies"] = b.iperf(ips["server"], iperf_seconds)
    # 6. and without again, once every policy is gone: the spread of the two "without" runs is
    # the noise of this (shared, 2-core) machine
    t0 = time.monotonic()
    for ns in [f"bench-n{k}" for k in range(NAMESPACES)] + [IPERF_NS]:
        b.net.delete_collection_namespaced_network_policy(ns, _request_timeout=60)
    while b.set_has("node1", sel, ips["client"]) and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    out["delete_all_policies_s"] = round(time.monotonic() - t0, 2)
    say(f"iperf3 without policies again ({iperf_seconds} s)")
    out["iperf_no_policies_after"] = b.iperf(ips["server"], iperf_seconds)
    runs = [out[k].get("gbit_s") for k in ("iperf_no_policies", "iperf_no_policies_after")]
    c = out["iperf_with_policies"].get("gbit_s")
    if all(runs) and c:
        out["throughput_ratio_with_vs_without"] = round(c / statistics.fmean(runs), 3)
    return out


def scratch(pods: int, policies: int, profile: str | None = None) -> dict:
    """The agent's policy controller alone, in a scratch netns, its watch events fed by hand at
    the bench's shapes: where the time goes without the API server (a profiling aid)."""
    import cProfile

    from kubeweft.proxy.nftables import Nft
    from kubeweft.proxy.policy_controller import PolicyController

    name = f"h14-scratch-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    out: dict = {"mode": "scratch", "pods": pods, "policies": policies, "loadavg_1m": load_average()}
    prof = cProfile.Profile() if profile else None
    try:
        nft = Nft(name)
        ctl = PolicyController(None, "node1", "10.244.1.0/24", nft=nft, netns=name)
        if prof:
            # the planner and the transactions run on the sync loop's thread, not this one
            ctl.loop._sync = _profiled(prof, ctl.loop._sync)
        ctl._on_sync("ns", {("", f"bench-n{k}"): {"metadata": {"name": f"bench-n{k}", "labels": {"ns": f"n{k}"}}}
                            for k in range(NAMESPACES)})
        ctl._on_sync("pol", {})
        objs = {}
        for i in range(pods):
            doc = ghost_pod(i)
            doc["status"] = {"podIP": ghost_ip(i), "phase": "Running"}
            objs[(doc["metadata"]["namespace"], doc["metadata"]["name"])] = doc
        ctl._on_sync("pod", objs)
        with ctl.lock:
            ctl._plan_locked()
            ctl.rebuild()
        ctl.loop.start()

        def idle() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                with ctl.lock:
                    if not ctl.pending_events():
                        return
                time.sleep(0.001)
            raise TimeoutError("the controller did not settle")

        # 1,000 policies as the API delivers them: one event at a time, ~1,000/s
        t0 = time.monotonic()
        tx0 = ctl.transactions
        for j in range(policies):
            ctl._on_event("pol", "ADDED", bench_policy(j))
            time.sleep(0.001)
        t_last = time.monotonic()
        idle()
        out["apply_s_from_last_event"] = round(time.monotonic() - t_last, 3)
        out["apply_s_from_first_event"] = round(time.monotonic() - t0, 3)
        out["transactions"] = ctl.transactions - tx0
        want = expected_peer_set(1, pods)
        out["peer_set_ok"] = _scratch_elements(nft, f"{policy_id('bench-n1/pol1')}_i0") == want
        # one label change in, and out
        lat = []
        for k in range(10):
            doc = json.loads(json.dumps(objs[("bench-n0", "g0")]))
            doc["metadata"]["labels"]["tier"] = "t1" if k % 2 == 0 else "t0"
            t0 = time.monotonic()
            ctl._on_event("pod", "MODIFIED", doc)
            idle()
            lat.append((time.monotonic() - t0) * 1000)
        out["label_change_ms_p50"] = round(statistics.median(lat), 2)
        out["label_change_ms_max"] = round(max(lat), 2)
        # one policy added, then deleted
        lat_add, lat_del = [], []
        for k in range(5):
            doc = bench_policy(policies + k)
            t0 = time.monotonic()
            ctl._on_event("pol", "ADDED", doc)
            idle()
            lat_add.append((time.monotonic() - t0) * 1000)
            t0 = time.monotonic()
            ctl._on_event("pol", "DELETED", doc)
            idle()
            lat_del.append((time.monotonic() - t0) * 1000)
        out["policy_add_ms_p50"] = round(statistics.median(lat_add), 1)
        out["policy_delete_ms_p50"] = round(statistics.median(lat_del), 1)
        # full build of the same state for comparison
        t0 = time.monotonic()
        with ctl.lock:
            ctl.rebuild()
        out["full_rebuild_s"] = round(time.monotonic() - t0, 3)
        if prof:
            prof.dump_stats(profile)
        ctl.loop.stop(5)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
    return out


def _profiled(prof, fn):
    def run():
        prof.enable()
        try:
            return fn()
        finally:
            prof.disable()
    return run


def _scratch_elements(nft, set_name: str) -> set[str]:
    out = set()
    for item in nft.list(f"set inet {TABLE} {set_name}"):
        out.update(e for e in item.get("set", {}).get("elem", []) or [] if isinstance(e, str))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scratch", action="store_true",
                    help="no lab: the policy controller alone in a scratch netns, events fed by hand")
    ap.add_argument("--profile", default=None, help="with --scratch: write cProfile stats here")
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--iperf-seconds", type=int, default=5)
    ap.add_argument("--lab", default=None, help="use this running 3-node kubeweft lab")
    ap.add_argument("--timeout", type=float, default=540.0)
    ap.add_argument("--name", default="", help="suffix of the result files (netpol-NAME.json, .png)")
    args = ap.parse_args(argv)
    if args.pods > GHOST_NET.num_addresses - 2:
        ap.error(f"at most {GHOST_NET.num_addresses - 2} pods")
    if args.scratch:
        print(json.dumps(scratch(args.pods, args.policies, args.profile), indent=1))
        return 0
    start = time.monotonic()
    deadline = start + args.timeout
    name = args.lab or "h14netpol"
    own = args.lab is None
    result: dict = {"bench": "netpol"}
    b = None
    try:
        if own:
            say(f"bringing up lab {name} (3 nodes, kubeweft)")
            proc = subprocess.run([KUBEWEFT, "lab", "--name", name, "up", "--nodes", "3", "--cni", "kubeweft"],
                                  capture_output=True, text=True, timeout=200, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"lab up failed: {proc.stdout}{proc.stderr}")
        b = Bench(name, deadline)
        result.update(run(b, args.pods, args.policies, args.iperf_seconds))
    except Exception as e:  # noqa: BLE001 - report what was measured and why it stopped
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        if b is not None and not own:
            b.cleanup(args.pods, args.policies)
        if b is not None:
            b.api.close()
        if own:
            subprocess.run([KUBEWEFT, "lab", "--name", name, "down"], capture_output=True, timeout=120, check=False)
    result["total_s"] = round(time.monotonic() - start, 1)
    result["loadavg_1m_at_end"] = load_average()
    result["verdicts"] = verdicts(result)
    stem = f"netpol-{args.name}" if args.name else "netpol"
    try:
        draw(result, RESULTS / f"{stem}.png")
        result["png"] = f"bench/results/{stem}.png"
    except Exception as e:  # noqa: BLE001 - the figures stand without the drawing
        result["png_error"] = f"{type(e).__name__}: {e}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
