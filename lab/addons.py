"""The cluster addons a lab runs, installed as kubeadm and kind install theirs: the manifests of
lab/manifests/ applied with the real kubectl and the lab's admin kubeconfig, then each
Deployment's rollout waited for.

`apply_addons(cfg)` applies the manifests named in DEFAULT_ADDONS (in name order; other
manifests of the directory are applied only when named) and returns once they serve: every
Deployment rolled out and the cluster DNS answering at its Service address from every node. On a
lab whose nodes stay NotReady (--cni none) it only applies: the pods wait, Pending, for a CNI, as
CoreDNS's do on a new kind cluster. A lab on the reference plugins gets none: without a service
proxy no ClusterIP answers, neither the DNS Service nor the kubernetes Service through which
in-cluster clients (the DNS server) reach the API, so the addons could never become ready.

What it costs `lab up` (2 nodes, 2 shared cores): 1.6-1.7 s of 6.6 s at load average 2.6, 3.6-6.5 s
of 20-24 s at 15; most of it is the DNS server's start (its imports alone take 1.2 s of CPU:
kubernetes 0.8 s, aiohttp 0.3 s) before the readiness probe, run every second, sees /ready.
"""
from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from pathlib import Path

import yaml

from . import install, netns, topology
from .config import LabConfig
from .errors import LabError

MANIFEST_DIR = Path(__file__).with_name("manifests")
DEFAULT_ADDONS = ("coredns",)
DNS_ADDON = "coredns"
DNS_PROBE_NAME = "kubernetes.default.svc.cluster.local."


def manifest_paths(names: Iterable[str], directory: Path = MANIFEST_DIR) -> list[Path]:
    """The manifests `names` (file stems) of `directory`, in name order; LabError for a missing one."""
    paths = []
    for name in sorted(set(names)):
        path = directory / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml"))) or "none"
            raise LabError(f"no addon {name!r} in {directory} (there: {known})")
        paths.append(path)
    return paths


def plan_rollouts(text: str) -> list[tuple[str, str]]:
    """(namespace, name) of every Deployment a manifest holds, in its order."""
    return [((doc.get("metadata") or {}).get("namespace") or "default", doc["metadata"]["name"])
            for doc in yaml.safe_load_all(text)
            if isinstance(doc, dict) and doc.get("kind") == "Deployment" and doc.get("apiVersion") == "apps/v1"]


def service_address(text: str, namespace: str, name: str) -> str | None:
    """The clusterIP a manifest gives Service namespace/name, if any."""
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "Service":
            meta = doc.get("metadata") or {}
            if (meta.get("namespace"), meta.get("name")) == (namespace, name):
                return (doc.get("spec") or {}).get("clusterIP")
    return None


def render_manifest(text: str, cfg: LabConfig) -> str:
    """The manifest for lab `cfg`: the DNS Service's clusterIP is the lab's (cfg.cluster_dns_ip,
    in the primary family), as kubeadm renders CoreDNS's manifest from the service range."""
    docs = list(yaml.safe_load_all(text))
    changed = False
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "Service":
            meta = doc.get("metadata") or {}
            if (meta.get("namespace"), meta.get("name")) == ("kube-system", "kube-dns"):
                doc["spec"]["clusterIP"] = cfg.cluster_dns_ip
                changed = True
    return yaml.safe_dump_all(docs, sort_keys=False) if changed else text


def _kubectl(cfg: LabConfig, args: list[str], timeout: float) -> str:
    return install.kubectl(cfg, *args, timeout=max(1.0, timeout)).stdout


def _dns_answers(node_netns: str, server: str) -> bool:
    """Whether `server` answers a query for the kubernetes Service from inside node_netns."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    # the kubernetes Service has a ClusterIP of the primary family only, which is the DNS
    # server's: an IPv6 lab answers AAAA for it and an empty NOERROR for A
    query = dns.message.make_query(DNS_PROBE_NAME, "AAAA" if ":" in server else "A")
    with netns.entered(node_netns):
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)     # a socket stays in the netns it was made in
    sock.setblocking(False)
    try:
        reply = dns.query.udp(query, server, timeout=0.5, sock=sock)
    except (dns.exception.DNSException, OSError):
        return False
    finally:
        sock.close()
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def wait_dns(cfg: LabConfig, server: str, deadline: float) -> None:
    """Until `server` answers from every node: the agents have its endpoints in their tables."""
    import concurrent.futures

    pending = list(topology.node_names(cfg))
    # a worker thread enters the node namespaces: the caller's thread stays where it is
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        while pending:
            pending = [n for n in pending if not pool.submit(_dns_answers, cfg.node_netns(n), server).result()]
            if pending and time.monotonic() >= deadline:
                raise LabError(f"the cluster DNS {server} does not answer from {', '.join(pending)}")
            if pending:
                time.sleep(0.1)


def apply_addons(cfg: LabConfig, names: Iterable[str] = DEFAULT_ADDONS, timeout: float = 90.0) -> str:
    """Apply the addons `names` to lab `cfg` and wait until they serve (see the module's doc); a
    line saying what was done and how long it took. LabError when kubectl fails or a rollout
    does not end in `timeout`."""
    names = sorted(set(names))
    if cfg.cni == "reference":
        return "none (the reference plugins bring no service proxy for them)"
    start = time.monotonic()
    deadline = start + timeout
    paths = manifest_paths(names)
    texts = {p.stem: render_manifest(p.read_text(), cfg) for p in paths}
    rendered = cfg.state_dir / "addons"
    rendered.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (rendered / f"{name}.yaml").write_text(text)
        _kubectl(cfg, ["apply", "-f", str(rendered / f"{name}.yaml")], deadline - time.monotonic())
    if cfg.cni == "none":
        return f"{', '.join(names)} applied, Pending until a CNI is installed"
    for text in texts.values():
        for namespace, name in plan_rollouts(text):
            left = max(1.0, deadline - time.monotonic())
            _kubectl(cfg, ["rollout", "status", f"deployment/{name}", "-n", namespace,
                           f"--timeout={left:.0f}s"], left + 10)
    dns_ip = service_address(texts[DNS_ADDON], "kube-system", "kube-dns") if DNS_ADDON in texts else None
    if dns_ip:
        wait_dns(cfg, dns_ip, deadline)
    return f"{', '.join(names)} ready in {time.monotonic() - start:.1f} s"
