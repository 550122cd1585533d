"""`kubeweft lab demo` (what `make demo` runs): a 2-node lab, pods on both nodes, a Service,
probes from a pod, a node and the external host, a node's service table, the connectivity
matrix, then down.

Exit 0 when the pod matrix is all green. The lab is always removed (finally), but only if this
run brought it up: a lab of the same name that was already there is left alone.
"""
from __future__ import annotations

import concurrent.futures
import sys
import time

from . import lifecycle, matrix, probe, shell
from .config import LabConfig
from .workload import render_peer

NAMESPACE = "default"
WEB_PODS = ("web-0", "web-1", "web-2")
CLIENT_POD = "client"
READY_TIMEOUT = 90.0


def say(heading: str) -> None:
    print(f"\n==> {heading}", flush=True)


def pod_manifest(name: str, node: str, labels: dict, ports: list[int]) -> dict:
    container = {"name": "app", "image": "kubeweft/lab-workload"}
    if ports:
        container["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in ports]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": {"nodeName": node, "containers": [container]}}


def service_manifest(dual: bool = False) -> dict:
    """The demo's NodePort Service; dual: a ClusterIP in each family of the lab (PreferDualStack)."""
    spec = {"type": "NodePort", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]}
    if dual:
        spec["ipFamilyPolicy"] = "PreferDualStack"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NAMESPACE}, "spec": spec}


def _ready(pod) -> bool:
    conds = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conds)


def wait_ready(core, names: list[str], timeout: float) -> dict[str, object]:
    """Poll until every named pod is Ready; returns name -> pod. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        pods = {p.metadata.name: p for p in core.list_namespaced_pod(NAMESPACE, _request_timeout=10).items}
        waiting = [n for n in names if n not in pods or not _ready(pods[n])]
        if not waiting:
            return pods
        if time.monotonic() > deadline:
            raise TimeoutError(f"pods not Ready after {timeout:g} s: {', '.join(waiting)}")
        time.sleep(0.5)


def pod_ips(pod) -> list[str]:
    """A kubernetes V1Pod's addresses, primary family first (status.podIPs, else podIP)."""
    return [i.ip for i in pod.status.pod_ips or []] or [pod.status.pod_ip]


def show_probes(cfg: LabConfig, source: str, targets: list[tuple[str, str]], count: int = 1,
                timeout: float = 2.0) -> list[dict]:
    """Probe each (label, IP:PORT) from `source` (a worker thread enters its netns); print a line each."""
    ns = probe.resolve_source(cfg, source)
    out = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        for label, target in targets:
            host, port = probe.parse_target(target)
            for _ in range(count):
                r = pool.submit(probe.probe_once, ns, host, port, timeout=timeout).result()
                print(f"    {source:>14} -> {label:<12} {probe.render_line(r)}", flush=True)
                out.append(r)
    return out


def run(cfg: LabConfig) -> int:
    from kubernetes import client

    nodes = [cfg.node_name(i) for i in range(1, cfg.nodes + 1)]
    api = lifecycle.api_client(cfg)
    try:
        core = client.CoreV1Api(api)
        say(f"pods {', '.join(WEB_PODS)} (app=web, port 80) and {CLIENT_POD}, spread over {', '.join(nodes)}")
        placement = {name: nodes[i % len(nodes)] for i, name in enumerate(WEB_PODS)}
        placement[CLIENT_POD] = nodes[-1]
        for name in WEB_PODS:
            core.create_namespaced_pod(NAMESPACE, pod_manifest(name, placement[name], {"app": "web"}, [80]))
        core.create_namespaced_pod(NAMESPACE, pod_manifest(CLIENT_POD, placement[CLIENT_POD],
                                                           {"app": "client"}, []))
        svc = core.create_namespaced_service(NAMESPACE, service_manifest(dual=cfg.has_ipv6))
        cluster_ips = svc.spec.cluster_ips or [svc.spec.cluster_ip]
        node_port = svc.spec.ports[0].node_port
        print(f"    Service web: ClusterIP {', '.join(cluster_ips)} port 80, NodePort {node_port} -> targetPort 80")

        say("waiting for the pods to be Ready")
        start = time.monotonic()
        pods = wait_ready(core, [*WEB_PODS, CLIENT_POD], READY_TIMEOUT)
        print(f"    all Ready in {time.monotonic() - start:.1f} s")
        for name in (*WEB_PODS, CLIENT_POD):
            p = pods[name]
            print(f"    {name:<8} {' '.join(pod_ips(p)):<15} on {p.spec.node_name}")
        # each web pod on each of its addresses: both families on a dual-stack lab
        web = [(n, render_peer(ip, 80)) for n in WEB_PODS for ip in pod_ips(pods[n])]

        say(f"probe the web pods by IP from pod {CLIENT_POD} (on {placement[CLIENT_POD]})")
        show_probes(cfg, f"{NAMESPACE}/{CLIENT_POD}", web)
        say(f"probe the web pods from node {nodes[0]}")
        show_probes(cfg, f"node:{nodes[0]}", web)
        if cfg.cni == "reference":
            ext = cfg.external_ip + (f", {cfg.external_ip6}" if cfg.has_ipv6 else "")
            say(f"probe the web pods from the external host ({ext}; the lab routes pod CIDRs)")
            show_probes(cfg, "external", web)

        vips = ", ".join(render_peer(ip, 80) for ip in cluster_ips)
        say(f"probe the Service web ({vips}) from pod {CLIENT_POD}, 6 times")
        results = show_probes(cfg, f"{NAMESPACE}/{CLIENT_POD}", [("svc/web", render_peer(ip, 80)) for ip in cluster_ips],
                              count=6, timeout=1.0)
        ext = cfg.external_ip + (f", {cfg.external_ip6}" if cfg.has_ipv6 else "")
        say(f"probe the Service's NodePort {node_port} on every node address from the external host ({ext})")
        results += show_probes(cfg, "external",
                               [(f"{n}:{node_port}", render_peer(ip, node_port))
                                for i, n in enumerate(nodes, start=1) for ip in cfg.node_internal_ips(i)],
                               count=2, timeout=1.0)
        service_ok = all(r["outcome"] == "connected" for r in results)
        answered = sorted({r["pod"] for r in results if r["pod"]})
        if service_ok:
            print(f"    the Service answers everywhere; backends seen: {', '.join(answered)}")
        else:
            print("    the Service did not answer every probe (see above)")

        if cfg.cni != "reference":
            say(f"what {nodes[0]}'s service table does with each frontend (kubeweft lab node-exec "
                f"{nodes[0]} -- kubeweft services)")
            shell.exec_command(cfg.name, "node-exec", nodes[0],
                               [sys.executable, "-m", "kubeweft", "services"])

        say("the connectivity matrix: every pod to every pod, on each declared port")
        matrix_rc = matrix.matrix_command(cfg.name, timeout=1.0, namespaces=[NAMESPACE])
        if cfg.cni == "reference":
            return matrix_rc          # the reference plugins bring no service proxy
        return matrix_rc or (0 if service_ok else 1)
    finally:
        api.close()


def demo_command(name: str, ip_family: str | None = None, cni: str | None = None) -> int:
    say(f"lab {name} up: 2 nodes, CNI {cni or 'kubeweft (the default)'}, IP family {ip_family or 'ipv4'}")
    rc = lifecycle.up_command(name, nodes=2, cni=cni, ip_family=ip_family)
    if rc != 0:
        print(f"demo: `lab up` failed (exit {rc}); nothing more to show", file=sys.stderr)
        return rc
    try:
        cfg = lifecycle.load_config(name)
        rc = run(cfg)
        say("result: " + ("the pod matrix is all green" if rc == 0 else "some pod pairs did not connect"))
        return rc
    except Exception as e:  # noqa: BLE001 - the demo reports any failure in one line, then downs the lab
        print(f"demo failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        say(f"lab {name} down")
        lifecycle.down_command(name)
