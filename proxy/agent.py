"""`kubeweft agent`: the node agent. It serves the CNI over gRPC on a unix socket, keeps the
overlay routes to the other nodes' pods, and runs the service proxy and the NetworkPolicy
controller.

    kubeweft agent --kubeconfig PATH --node-name NAME --socket PATH --state-dir DIR
                   [--cluster-cidr C] [--data-dir D] [--bridge kw0] [--mtu N] [--overlay vxlan]
                   [--node-ip IP] [--iface NAME | --iface-can-reach ADDR]

In a cluster: no --kubeconfig (in-cluster config: the ServiceAccount's token and CA, and the API
server at $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, which the DaemonSet sets from the
kubeweft-api-endpoint ConfigMap because the kubernetes Service's ClusterIP reaches nothing
before the agent's own rules exist) and NODE_NAME from the environment. The node's podCIDR and
address come from its Node object (waited for, bounded). Health and readiness are served from
the first second (proxy/health.py). Every module the agent runs is imported at start: a missing
one stops it there, naming the package to install.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

from kubeweft.cni.spec import SUPPORTED_VERSIONS

from . import conntrack_settings
from .ip_family import version_of
from .proxy_config import ConfigError, ProxyConfig, parse_proxy_config

log = logging.getLogger("kubeweft.agent")

DEFAULT_SOCKET = "/run/kubeweft/agent.sock"
DEFAULT_STATE_DIR = "/var/lib/kubeweft"
DEFAULT_HEALTHZ = "0.0.0.0:10256"
DEFAULT_METRICS = "127.0.0.1:10249"
# The IPv6 twin of the metrics default (the health default, 0.0.0.0:10256, is one socket of both
# families already: proxy/health.py, as Go's listener gives kube-proxy). kube-proxy's defaults follow the node's primary family
# (0.0.0.0:10256 and 127.0.0.1:10249, or [::]:10256 and [::1]:10249 when it is IPv6), and its
# dual-stack configuration lists both families' (healthz 0.0.0.0/0 and ::/0, metrics 127.0.0.0/8
# and ::1/128): on a node with IPv6 the agent serves both, so a load balancer's health probe and a
# scraper reach it in either family and nothing that dials the IPv4 address breaks.
IPV6_TWINS = {"127.0.0.1": "[::1]"}

# What provides each module the agent imports, for the message when one is missing.
# python3-nftables is Debian's (a venv sees it only when made with --system-site-packages); the
# others are kubeweft's own dependencies, which pip installs with it.
INSTALL_HINTS = {
    "nftables": "apt-get install python3-nftables",
    "pyroute2": "pip install 'pyroute2>=0.9'",
    "grpc": "pip install grpcio",
    "google": "pip install protobuf",
    "kubernetes": "pip install kubernetes",
    "prometheus_client": "pip install prometheus-client",
    "yaml": "pip install PyYAML",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeweft agent", description="the kubeweft node agent")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None,
                   help="kubeconfig file (default: in-cluster config)")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node (default $NODE_NAME)")
    p.add_argument("--socket", default=DEFAULT_SOCKET, help="the CNI gRPC unix socket")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.add_argument("--data-dir", default=None, help="IPAM store (default STATE_DIR/cni/data)")
    p.add_argument("--cluster-cidr", default=os.environ.get("KUBEWEFT_CLUSTER_CIDR") or None,
                   help="pod traffic leaving this CIDR is masqueraded (default $KUBEWEFT_CLUSTER_CIDR)")
    p.add_argument("--pod-cidr-timeout", type=float, default=120.0,
                   help="seconds to wait at start for the Node's spec.podCIDR")
    p.add_argument("--bridge", default="kw0")
    p.add_argument("--mtu", type=int, default=None,
                   help="pod MTU (default: the overlay's, else underlay MTU - 50)")
    p.add_argument("--overlay", choices=("vxlan", "host-gw", "none"),
                   default=os.environ.get("KUBEWEFT_BACKEND") or "vxlan",
                   help="how pods reach other nodes (default $KUBEWEFT_BACKEND or vxlan)")
    p.add_argument("--node-ip", default=os.environ.get("KUBEWEFT_NODE_IP") or None,
                   help="this node's address, whose interface carries the overlay (default $KUBEWEFT_NODE_IP, "
                        "which the DaemonSet sets to status.hostIP; else the Node's InternalIP)")
    p.add_argument("--iface", default=os.environ.get("KUBEWEFT_IFACE") or None,
                   help="the interface that carries the overlay, on a multi-homed node (default $KUBEWEFT_IFACE)")
    p.add_argument("--iface-can-reach", metavar="ADDR", default=os.environ.get("KUBEWEFT_IFACE_CAN_REACH") or None,
                   help="the overlay uses the interface of the route to ADDR (default $KUBEWEFT_IFACE_CAN_REACH)")
    p.add_argument("--service-cidr", default=os.environ.get("KUBEWEFT_SERVICE_CIDR") or "10.96.0.0/12",
                   help="the cluster's Service range (addresses in it with no Service are dropped)")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="the service proxy's KubeProxyConfiguration (the DaemonSet mounts config.conf of the "
                        "ConfigMap kube-system/kubeweft); without it that ConfigMap is read through the API")
    p.add_argument("--nodeport-addresses", default=os.environ.get("KUBEWEFT_NODEPORT_ADDRESSES") or None,
                   help="node addresses that accept NodePorts: comma-separated CIDRs, or 'primary' (the "
                        "node's own address, --node-ip or its InternalIP, as kube-proxy's nftables mode); "
                        "never 127.0.0.0/8 (default: the configuration's nodePortAddresses, else primary)")
    p.add_argument("--healthz-bind-address", default=None,
                   help=f"/livez, /readyz and kube-proxy's /healthz (empty: off; default: the configuration's "
                        f"healthzBindAddress, else {DEFAULT_HEALTHZ})")
    p.add_argument("--metrics-bind-address", default=None,
                   help=f"Prometheus /metrics (empty: off; default: the configuration's metricsBindAddress, else "
                        f"{DEFAULT_METRICS}: loopback only, as kube-proxy has it)")
    p.add_argument("--no-proxy", action="store_true",
                   help="do not run the service proxy (Services are left to another proxy, e.g. kube-proxy)")
    p.add_argument("--no-policy", action="store_true",
                   help="do not enforce NetworkPolicy (left to another enforcer)")
    p.add_argument("--workers", type=int, default=8, help="gRPC worker threads")
    p.add_argument("--cni-conf-dir", default=os.environ.get("KUBEWEFT_CNI_CONF_DIR") or None,
                   help="write the conflist here once the CNI server answers (the runtime's conf dir, "
                        "at the same paths as on the host)")
    p.add_argument("--cni-version", default=os.environ.get("KUBEWEFT_CNI_VERSION") or None,
                   choices=SUPPORTED_VERSIONS, help="the conflist's cniVersion (default: install-cni's, 1.0.0)")
    conntrack_settings.add_flags(p)
    p.add_argument("--log-level", default=os.environ.get("KUBEWEFT_LOG_LEVEL", "INFO"))
    scratch = p.add_argument_group("for tests and benchmarks (never in a cluster)")
    scratch.add_argument("--test-pod-cidr", metavar="CIDR", default=None,
                         help="serve the CNI alone with this podCIDR (or two, one per IP family, "
                              "comma-separated) and no API server: no overlay, service proxy or policy")
    return p


@contextlib.contextmanager
def dependencies_required():
    """A module that is missing on import stops the agent, naming the package that provides it
    (exit status 1)."""
    try:
        yield
    except ModuleNotFoundError as e:
        hint = INSTALL_HINTS.get((e.name or "").partition(".")[0])
        if hint is None:
            raise
        raise SystemExit(f"kubeweft agent: cannot start: no python module {e.name!r} ({hint})") from None


def make_api(kubeconfig: str | None):
    """An ApiClient from the kubeconfig, or from the in-cluster service account: the token and CA
    the kubelet mounts under /var/run/secrets/kubernetes.io/serviceaccount and the API server
    at $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (the token is read again every minute,
    as projected tokens rotate)."""
    from kubernetes import client, config

    if kubeconfig:
        api = config.new_client_from_config(config_file=kubeconfig)
        log.info("API server %s (kubeconfig %s)", api.configuration.host, kubeconfig)
        return api
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException as e:
        raise SystemExit(f"kubeweft agent: no --kubeconfig and no in-cluster config: {e}") from None
    log.info("API server %s (in-cluster: KUBERNETES_SERVICE_HOST, the ServiceAccount's token and CA)", cfg.host)
    return client.ApiClient(cfg)


@dataclass(frozen=True)
class NodeFacts:
    """What the agent takes from its Node object at start."""
    pod_cidr: str | None
    internal_ip: str | None
    pod_cidrs: tuple[str, ...] = ()       # spec.podCIDRs: one per IP family, the CNI's ranges
    internal_ips: tuple[str, ...] = ()    # every InternalIP, in the Node's order

    @property
    def families(self) -> tuple[int, ...]:
        """The IP families of the node's pods (4, 6 or both, the primary first): the service
        proxy runs one proxier for each."""
        return tuple(dict.fromkeys(version_of(c) for c in self.pod_cidrs)) or (4,)


def node_facts(node: dict) -> NodeFacts:
    """spec.podCIDR(s) and the InternalIPs of a Node object (JSON form)."""
    internal = tuple(a.get("address") for a in (node.get("status") or {}).get("addresses") or []
                     if a.get("type") == "InternalIP" and a.get("address"))
    spec = node.get("spec") or {}
    pod_cidr = spec.get("podCIDR") or None
    return NodeFacts(pod_cidr, internal[0] if internal else None,
                     tuple(spec.get("podCIDRs") or ([pod_cidr] if pod_cidr else [])), internal)


def get_body(api_client, path: str, timeout: float) -> tuple[int, bytes]:
    """(HTTP status, body) of one GET through the API client's connection pool."""
    from .api_get import open_get

    status, raw = open_get(api_client, path, timeout)
    try:
        return status, raw.read()
    finally:
        raw.release_conn()


def wait_node(api_client, node: str, timeout: float, stop: threading.Event | None = None) -> NodeFacts:
    """The Node's facts, read through the API, waiting until its spec.podCIDR is set."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            status, body = get_body(api_client, f"/api/v1/nodes/{node}", 5)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
            facts = node_facts(json.loads(body))
            if facts.pod_cidr:
                return facts
            last = "spec.podCIDR is empty"
        except Exception as e:  # noqa: BLE001 - the API may be down, or the Node not registered yet
            last = f"{type(e).__name__}: {str(e)[:200]}"
        if time.monotonic() > deadline:
            raise SystemExit(f"kubeweft agent: no podCIDR for node {node!r} after {timeout:.0f}s ({last})")
        log.info("waiting for the podCIDR of node %s (%s)", node, last)
        if stop is not None and stop.wait(1.0):
            raise SystemExit(0)          # SIGTERM while waiting: nothing to clean up yet
        if stop is None:
            time.sleep(1.0)


def prepare_socket(path: Path) -> None:
    """The socket's directory root-only (0700, the agent's own) whatever the umask and whoever made
    it (kubelet's DirectoryOrCreate makes 0755; the IPAM store's parents may come first); a
    directory others share (sticky, as /tmp) or own is refused. A stale socket is replaced,
    unless a live agent answers on it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.stat(path.parent)
    if st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX:
        raise SystemExit(f"kubeweft agent: the socket needs a directory of its own, not {path.parent} "
                         f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            path.unlink()          # nobody listens: stale
        else:
            raise SystemExit(f"kubeweft agent: another agent is serving on {path}")
        finally:
            s.close()


class CniServicer:
    """The Cni gRPC service: each call goes to CniPlugin.handle with the runtime's environment."""

    def __init__(self, plugin) -> None:
        self.plugin = plugin

    def _call(self, request, context):
        from kubeweft.cni import spec
        from kubeweft.cni.errors import INTERNAL, CniError
        from kubeweft.proto import kubeweft_pb2

        inv = spec.Invocation(command=request.command, container_id=request.container_id,
                              netns=request.netns, ifname=request.ifname, raw_args=request.args,
                              path=tuple(p for p in request.path.split(":") if p))
        t0 = time.monotonic()
        try:
            result = self.plugin.handle(spec.render_env(inv), request.config)
            resp = kubeweft_pb2.CniResponse(result=result)
        except CniError as e:
            log.info("%s %s: error %d %s", request.command, request.container_id, e.code, e)
            resp = kubeweft_pb2.CniResponse(
                error=kubeweft_pb2.CniError(code=e.code, msg=e.msg, details=e.details))
        except Exception as e:
            log.exception("%s %s", request.command, request.container_id)
            resp = kubeweft_pb2.CniResponse(
                error=kubeweft_pb2.CniError(code=INTERNAL, msg="internal error", details=repr(e)))
        log.debug("%s %s took %.1f ms", request.command, request.container_id,
                  (time.monotonic() - t0) * 1000)
        return resp

    Add = Del = Check = Status = GC = _call


def serve(plugin, sock: Path, workers: int = 8):
    import grpc
    from kubeweft.proto import kubeweft_pb2_grpc

    prepare_socket(sock)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cni"))
    kubeweft_pb2_grpc.add_CniServicer_to_server(CniServicer(plugin), server)
    old = os.umask(0o177)          # the socket is born 0600: root only
    try:
        server.add_insecure_port(f"unix:{sock}")
        server.start()
    finally:
        os.umask(old)
    os.chmod(sock, 0o600)
    return server


def start_overlay(api, node: str, mode: str, pod_cidrs: tuple[str, ...], selector):
    """The overlay controller (proxy/overlay/controller.py): VXLAN or host-gw routes to the other
    nodes' pods in each family of `pod_cidrs`, over the underlay `selector` picks
    (proxy/overlay/underlay.py). A configuration
    the backend cannot carry (host-gw with a node that is not directly reachable, an --iface that
    does not exist) stops the agent with a clear error: SystemExit(1). Any other failure is
    logged, not fatal: pods on this node still get wired."""
    from kubeweft.proxy.overlay.controller import OverlayController
    from kubeweft.proxy.overlay.plan import OverlayConfigError

    if mode == "none":
        return None

    overlay = None
    try:
        overlay = OverlayController(api, node, mode)
        overlay.start(pod_cidrs, selector)
    except OverlayConfigError as e:
        log.error("overlay %s refused: %s", mode, e)
        if overlay is not None:
            overlay.stop()
        raise SystemExit(f"kubeweft agent: overlay {mode} refused: {e}") from None
    except Exception:
        log.exception("overlay %s did not start: pods reach only this node", mode)
        return None
    log.info("overlay %s up: pod MTU %d", mode, overlay.pod_mtu)
    return overlay


PRIMARY = "primary"


def resolve_nodeport_addresses(value: str, node_ips: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """--nodeport-addresses -> the CIDRs the service proxy opens NodePorts on: 'primary' is the
    node's own address in each IP family (its first address of the family, as kube-proxy's
    nftables mode has it; empty, meaning every local address, when none is known); CIDRs are
    taken as given. 'primary' cannot be mixed with CIDRs (kube-proxy refuses that too)."""
    items = [c.strip() for c in value.split(",") if c.strip()]
    if PRIMARY not in items:
        return tuple(items)
    if len(items) > 1:
        raise SystemExit(f"kubeweft agent: --nodeport-addresses: {PRIMARY!r} cannot be mixed with CIDRs")
    ips = (node_ips,) if isinstance(node_ips, str) else tuple(node_ips or ())
    first = {}
    for ip in ips:
        first.setdefault(version_of(ip), ip)
    if not first:
        log.warning("--nodeport-addresses primary: the node's address is unknown; NodePorts open on "
                    "every local address")
        return ()
    return tuple(f"{ip}/{32 if v == 4 else 128}" for v, ip in first.items())


def node_addresses(node_ip: str | None, node: NodeFacts) -> tuple[str, ...]:
    """The node's addresses, --node-ip first: it stands for its family's InternalIP."""
    if not node_ip:
        return node.internal_ips
    return (node_ip, *(ip for ip in node.internal_ips if version_of(ip) != version_of(node_ip)))


@dataclass(frozen=True)
class AgentConfig:
    """What the agent's components (service proxy, policy) are told at start."""
    node_name: str
    pod_cidr: str
    cluster_cidr: str | None
    service_cidr: str
    nodeport_addresses: tuple[str, ...]
    state_dir: Path
    proxy: ProxyConfig = field(default_factory=ProxyConfig)     # the KubeProxyConfiguration (conntrack settings included)
    pod_cidrs: tuple[str, ...] = ()       # spec.podCIDRs, one per IP family (pod_cidr is the first)

    @property
    def scheduler(self) -> str:
        return self.proxy.scheduler


def start_component(start, name: str, api, cfg: AgentConfig):
    """Start one component (start(api, cfg) returns an object with .stop()). One that fails to
    start stops the agent: a node that silently does not enforce Services or policies is worse
    than one that visibly fails."""
    component = start(api, cfg)
    log.info("%s started", name)
    return component


def default_binds(default: str, families: tuple[int, ...]) -> list[str]:
    """The addresses a status port listens on when neither a flag nor the configuration names
    one: the IPv4 default, and its IPv6 twin on a node with IPv6."""
    host, _, port = default.rpartition(":")
    return [default, *([f"{IPV6_TWINS[host]}:{port}"] if 6 in families else [])]


def serve_metrics(bind: str) -> None:
    """Prometheus metrics of every component (kube-proxy's port 10249)."""
    if not bind:
        return
    from prometheus_client import start_http_server

    host, _, port = bind.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")


def import_components(with_api: bool) -> None:
    """Import every module the agent will run, so that a missing dependency stops it at start
    rather than when a Service, a policy or a pod first needs it. Without the API (a test's
    --test-pod-cidr) the agent runs the CNI alone, and imports only that: it starts in a
    fraction of the time."""
    with dependencies_required():
        import grpc  # noqa: F401
        from kubeweft.cni import nft, plugin  # noqa: F401
        from kubeweft.proto import kubeweft_pb2_grpc  # noqa: F401
        nft.require_libnftables()
        if with_api:
            import kubernetes  # noqa: F401
            import prometheus_client  # noqa: F401
            from kubeweft.proxy import (  # noqa: F401
                antispoof_metrics,
                cluster_policy_controller,
                policy_controller,
                service_proxy,
            )
            from kubeweft.proxy.overlay import controller  # noqa: F401


def cni_answers(sock: Path) -> bool:
    """A CNI STATUS through the agent's socket, sent as the runtime's CNI executable sends it
    (cni/shim.py): True when the plugin says it can wire pods; raises with the reason otherwise."""
    from kubeweft.cni import shim

    netconf = json.dumps({"cniVersion": "1.1.0", "name": "kubeweft", "type": "kubeweft"}).encode()
    reply = shim.call_unary(str(sock), f"/kubeweft.v1.Cni/{shim.METHODS['STATUS']}",
                            shim.encode_request("STATUS", "", "", "", "", "", netconf), timeout=2.0)
    code, msg, details, _ = shim.decode_response(reply)
    if code is not None:
        raise RuntimeError(f"CNI STATUS: {msg} ({details})")
    return True


def start_health(bind: str, health):
    """The health server, before anything else runs: the kubelet's probes get an answer from the
    agent's first second. A port that is taken is logged: the probes then fail visibly."""
    from .health import serve_agent_health

    try:
        return serve_agent_health(bind, health)
    except OSError as e:
        log.error("health endpoints on %s: %s", bind, e)
        return None


def read_config_file(path: str) -> ProxyConfig:
    """The KubeProxyConfiguration in a file (the DaemonSet's mount); a missing or invalid one
    stops the agent: a node that runs with other settings than asked is worse than one that
    visibly fails."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SystemExit(f"kubeweft agent: --config {path}: {e.strerror}") from None
    return _parsed(text, path)


def _parsed(text: str, source: str) -> ProxyConfig:
    try:
        with dependencies_required():
            cfg = parse_proxy_config(text)
    except ConfigError as e:
        raise SystemExit(f"kubeweft agent: {source}: {e}") from None
    if cfg.ignored:
        log.info("%s: %s set, which kubeweft does not use", source, ", ".join(cfg.ignored))
    return cfg


def read_config_map(api, timeout: float, stop: threading.Event | None = None) -> ProxyConfig:
    """The KubeProxyConfiguration in the ConfigMap kube-system/kubeweft (key config.conf),
    read through the API when no file is mounted (an agent outside a DaemonSet); the defaults
    when the ConfigMap or the key does not exist. An API that does not answer is asked again
    (bounded, as for the Node); a refusal (403) stops the agent."""
    from .proxy_config import CONFIGMAP_KEY, CONFIGMAP_NAME, CONFIGMAP_NAMESPACE

    where = f"configmap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = get_body(api, f"/api/v1/namespaces/{CONFIGMAP_NAMESPACE}/configmaps/{CONFIGMAP_NAME}", 10)
            last = f"HTTP {status}: {body[:200]!r}"
        except Exception as e:  # noqa: BLE001 - the API may be down for a moment
            status, last = 0, f"{type(e).__name__}: {str(e)[:200]}"
        if status == 404:
            log.info("no %s: the service proxy's defaults apply", where)
            return ProxyConfig()
        if status == 200:
            break
        if 400 <= status < 500 or time.monotonic() > deadline:
            raise SystemExit(f"kubeweft agent: {where}: {last}")
        log.info("reading %s: %s", where, last)
        if (stop.wait(1.0) if stop is not None else time.sleep(1.0)):
            raise SystemExit(0)
    text = (json.loads(body).get("data") or {}).get(CONFIGMAP_KEY)
    if text is None:
        log.info("%s has no %s: the service proxy's defaults apply", where, CONFIGMAP_KEY)
        return ProxyConfig()
    return _parsed(text, f"{where} {CONFIGMAP_KEY}")


def nodeport_choice(flag: str | None, proxy: ProxyConfig) -> str:
    """The flag's value, else the configuration's nodePortAddresses, else primary (kube-proxy's
    nftables default)."""
    if flag is not None:
        return flag
    return ",".join(proxy.nodeport_addresses) or PRIMARY


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .health import AgentHealth

    health = AgentHealth()
    health_server = None
    proxy_cfg = read_config_file(args.config) if args.config else None
    healthz = args.healthz_bind_address
    if healthz is None:
        healthz = proxy_cfg.healthz_bind_address if proxy_cfg and proxy_cfg.healthz_bind_address is not None \
            else DEFAULT_HEALTHZ
    if not args.test_pod_cidr and args.node_name:
        # first of all (the health server needs the standard library alone): the kubelet's probes
        # are answered while the rest imports (1-4 s measured here) and the agent waits for its Node
        health.expect("cni", *(() if args.no_proxy else ("services",)), *(() if args.no_policy else ("policy",)))
        health_server = start_health(healthz, health)
    import_components(with_api=not args.test_pod_cidr)
    if not args.test_pod_cidr and not args.node_name:
        print("kubeweft agent: --node-name (or $NODE_NAME) is required", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    from .overlay.underlay import UnderlaySelector

    api = None
    test_cidrs = tuple((args.test_pod_cidr or "").split(","))
    node = NodeFacts(test_cidrs[0], None, test_cidrs)
    if not args.test_pod_cidr:
        api = make_api(args.kubeconfig)
        if proxy_cfg is None:
            proxy_cfg = read_config_map(api, args.pod_cidr_timeout, stop)
            moved = proxy_cfg.healthz_bind_address
            if args.healthz_bind_address is None and moved is not None and moved != healthz and health_server:
                health_server.close()          # the ConfigMap names another address than the default
                health_server = start_health(moved, health) if moved else None
        log.info("service proxy: mode %s, scheduler %s", proxy_cfg.mode, proxy_cfg.scheduler)
        node = wait_node(api, args.node_name, args.pod_cidr_timeout, stop)
    pod_cidr = node.pod_cidr
    state_dir = Path(args.state_dir)
    data_dir = Path(args.data_dir) if args.data_dir else state_dir / "cni" / "data"
    selector = UnderlaySelector(iface=args.iface, can_reach=args.iface_can_reach,
                                node_ip=args.node_ip or node.internal_ip)
    overlay = start_overlay(api, args.node_name, args.overlay, node.pod_cidrs, selector) if api is not None else None
    mtu = args.mtu or (overlay.pod_mtu if overlay is not None else None)

    from kubeweft.cni.plugin import CniPlugin

    plugin = CniPlugin(list(node.pod_cidrs), data_dir, bridge=args.bridge, mtu=mtu, cluster_cidr=args.cluster_cidr)
    components = []
    if api is not None:
        proxy_cfg = proxy_cfg or ProxyConfig()
        cfg = AgentConfig(node_name=args.node_name, pod_cidr=pod_cidr, pod_cidrs=tuple(node.pod_cidrs),
                          cluster_cidr=args.cluster_cidr,
                          service_cidr=args.service_cidr,
                          nodeport_addresses=resolve_nodeport_addresses(
                              nodeport_choice(args.nodeport_addresses, proxy_cfg), node_addresses(args.node_ip, node)),
                          state_dir=state_dir, proxy=proxy_cfg)
        metrics_bind = args.metrics_bind_address
        if metrics_bind is None:
            metrics_bind = proxy_cfg.metrics_bind_address
        for bind in [metrics_bind] if metrics_bind is not None else default_binds(DEFAULT_METRICS, node.families):
            serve_metrics(bind)
        from kubeweft.proxy import metrics
        metrics.register_health(health)
        from kubeweft.proxy import antispoof_metrics
        antispoof_metrics.register_metrics()      # the CNI's table lives in this netns
        if not args.no_proxy:
            conntrack_settings.apply_conntrack_settings(conntrack_settings.config_from_args(args, proxy_cfg.conntrack))
            from kubeweft.proxy import service_proxy
            families = node.families
            proxy = start_component(lambda a, c: service_proxy.start(a, c, families),
                                    f"service proxy ({'+'.join(f'IPv{v}' for v in families)})", api, cfg)
            components.append(proxy)
            health.proxy = proxy.health
            health.ready_when("services", lambda: proxy.syncs > 0)     # the first sync is in the kernel
        if not args.no_policy:
            from kubeweft.proxy import policy_controller
            policy = start_component(policy_controller.start, "policy controller", api, cfg)
            components.append(policy)
            plugin.pod_hooks.append(policy)       # ADD returns only once policy covers the pod
            health.ready_when("policy", lambda: policy.rebuilds > 0)   # start() wrote the first table
            from kubeweft.proxy import cluster_policy_controller
            cnp = start_component(cluster_policy_controller.start, "cluster policy controller", api, cfg)
            components.append(cnp)
            plugin.pod_hooks.append(cnp)          # and once the Admin and Baseline tiers cover it
    plugin.start()
    sock = Path(args.socket)
    server = serve(plugin, sock, args.workers)
    health.ready_when("cni", lambda: cni_answers(sock))
    log.info("serving CNI on %s: node %s podCIDR %s bridge %s mtu %d data %s",
             sock, args.node_name or "-", plugin.pod_cidr, args.bridge, plugin.mtu, data_dir)
    if args.cni_conf_dir:
        # only now: the runtime reports the node's network ready once a conflist exists
        from kubeweft.cni import install
        conf = install.write_conflist(Path(args.cni_conf_dir), str(sock.absolute()), str(data_dir.absolute()),
                                      args.bridge, args.mtu, args.cni_version or install.DEFAULT_CNI_VERSION)
        log.info("wrote %s", conf)
    while not stop.wait(1.0):
        pass
    log.info("stopping")
    server.stop(grace=3).wait(5)
    for component in [overlay, *components]:
        if component is not None:
            component.stop()
    if health_server is not None:
        health_server.close()
    try:
        sock.unlink()
    except FileNotFoundError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
