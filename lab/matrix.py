"""`kubeweft lab matrix`: probe every (source pod, destination pod, port, protocol) and draw it.

Pure core: `parse_pods` (API pods + the kubelets' pods.json -> PodInfo), `plan_probes`,
`render_table` (a generic glyph table: cells keyed by (row, column), styles keyed by cell
value; the x/y/z world's expected-vs-actual policy tables reuse it with their own styles) and
`render_matrix`. The shell (`list_api_pods`, `run_probes`, `matrix_command`) does the I/O;
the kubernetes client and the socket code are imported only there.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from .config import LabConfig

# --- pure ------------------------------------------------------------------------------------
Column = tuple[str, str]                 # (group, sub): ("default/web-0", "80/TCP")

GREEN, RED, YELLOW, MAGENTA, CYAN = "32", "31", "33", "35", "36"
OUTCOME_STYLES: dict[str, tuple[str, str]] = {   # cell value -> (glyph, ANSI colour)
    "connected": ("✓", GREEN),
    "refused": ("✗", RED),
    "timeout": ("·", YELLOW),
    "unreachable": ("!", MAGENTA),
    "wrong-pod": ("?", CYAN),                    # connected, but another pod answered
}


@dataclass(frozen=True)
class PodInfo:
    key: str                             # "ns/name"
    ip: str
    netns: str | None                    # None: not a source (no netns known)
    node: str
    ports: tuple[tuple[int, str], ...]   # ((80, "TCP"), ...), as probed
    ips: tuple[str, ...] = ()            # every address, primary family first (status.podIPs)

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.ips or (self.ip,)


@dataclass(frozen=True)
class Probe:
    source: str                          # "ns/name"
    source_netns: str
    dest: str
    ip: str
    port: int
    proto: str                           # "TCP" or "UDP"
    family: int = 0                      # 4 or 6 when the pods have several families, else 0

    @property
    def column(self) -> Column:
        return (self.dest, column_sub(self.port, self.proto, self.family))


def column_sub(port: int, proto: str, family: int = 0) -> str:
    """A column's sub heading: '80/TCP', or '80/TCP/v6' on a lab of several families."""
    return f"{port}/{proto}" + (f"/v{family}" if family else "")


def ip_version(ip: str) -> int:
    return 6 if ":" in ip else 4


def parse_ports(containers: Iterable[dict]) -> tuple[tuple[int, str], ...]:
    """Declared containerPorts, each on its declared protocol (SCTP cannot be probed here:
    no SCTP sockets, docs/architecture.md, decision 7); none declared: the workload's 8080 TCP and UDP."""
    declared: list[tuple[int, str]] = []
    probed: list[tuple[int, str]] = []
    for c in containers or ():
        for p in c.get("ports") or ():
            if p.get("containerPort"):
                item = (int(p["containerPort"]), (p.get("protocol") or "TCP").upper())
                declared.append(item)
                if item[1] in ("TCP", "UDP") and item not in probed:
                    probed.append(item)
    if not declared:
        return ((8080, "TCP"), (8080, "UDP"))
    return tuple(probed)


def parse_pods(api_pods: Sequence[dict], running: Mapping[str, dict],
               node_netns: Callable[[str], str]) -> tuple[list[PodInfo], list[str]]:
    """API pod objects (JSON form) joined with the kubelets' pods.json entries ('ns/name' ->
    {netns, ip, node}) -> (probe-able pods sorted by key, notes about the pods left out)."""
    pods, notes = [], []
    for obj in api_pods:
        meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
        key = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
        if meta.get("deletionTimestamp"):
            notes.append(f"{key}: terminating")
            continue
        entry = running.get(key) or {}
        ip = status.get("podIP") or entry.get("ip")
        ips = tuple(i.get("ip") for i in status.get("podIPs") or [] if isinstance(i, dict) and i.get("ip")) \
            or tuple(entry.get("ips") or ())
        if not ip:
            notes.append(f"{key}: no IP yet ({status.get('phase', 'Pending')})")
            continue
        node = spec.get("nodeName") or entry.get("node") or ""
        ns = entry.get("netns") or (node_netns(node) if spec.get("hostNetwork") and node else None)
        pods.append(PodInfo(key, ip, ns, node, parse_ports(spec.get("containers") or ()), ips))
    return sorted(pods, key=lambda p: p.key), notes


def pods_from_running(running: Mapping[str, dict]) -> list[dict]:
    """Without the API: pods.json entries as minimal pod objects (no ports: 8080 TCP+UDP)."""
    out = []
    for key, e in running.items():
        ns, _, name = key.partition("/")
        out.append({"metadata": {"namespace": ns, "name": name},
                    "spec": {"nodeName": e.get("node", "")},
                    "status": {"podIP": e.get("ip"), "podIPs": [{"ip": i} for i in e.get("ips") or ()]}})
    return out


def plan_probes(pods: Sequence[PodInfo]) -> list[Probe]:
    """Every source pod (with a netns) to every destination pod, port and protocol; on a lab of
    several families, over each family the source has an address of (each Probe names it)."""
    several = len({ip_version(ip) for p in pods for ip in p.addresses}) > 1
    out = []
    for src in pods:
        if not src.netns:
            continue
        mine = {ip_version(ip) for ip in src.addresses}
        for dst in pods:
            for port, proto in dst.ports:
                for ip in dst.addresses:
                    if ip_version(ip) in mine:
                        out.append(Probe(src.key, src.netns, dst.key, ip, port, proto,
                                         ip_version(ip) if several else 0))
    return out


def cell_value(result: Mapping) -> str:
    """A probe result -> its cell value: the outcome, or wrong-pod when another pod answered."""
    if result["outcome"] == "connected" and result.get("to") and result.get("pod") != result["to"]:
        return "wrong-pod"
    return result["outcome"]


def _paint(text: str, colour: str, color: bool) -> str:
    return f"\x1b[{colour}m{text}\x1b[0m" if color and colour else text


def render_table(rows: Sequence[str], columns: Sequence[Column], cells: Mapping[tuple[str, Column], str],
                 styles: Mapping[str, tuple[str, str]], *, color: bool = False,
                 corner: tuple[str, str] = ("", "")) -> list[str]:
    """A glyph table: rows down, columns across under two header lines (group, then sub).

    Consecutive columns with the same group share one group heading. A cell's value picks its
    (glyph, colour) from `styles`; a value not there shows its first letter; a missing cell is
    blank. Glyphs are one column wide, so the layout is plain string arithmetic.
    """
    label_w = max([len(r) for r in rows] + [len(c) for c in corner] + [0])
    groups: list[tuple[str, list[Column]]] = []
    for col in columns:
        if groups and groups[-1][0] == col[0]:
            groups[-1][1].append(col)
        else:
            groups.append((col[0], [col]))
    widths: dict[Column, int] = {}
    group_w: list[int] = []
    for name, cols in groups:
        ws = [max(len(c[1]), 1) for c in cols]
        inner = sum(ws) + len(ws) - 1
        for i in range(max(len(name) - inner, 0)):   # a wide group name widens its columns
            ws[i % len(ws)] += 1
        for c, w in zip(cols, ws):
            widths[c] = w
        group_w.append(sum(ws) + len(ws) - 1)
    gap = "  "
    head1 = corner[0].ljust(label_w) + "".join(gap + name.center(w) for (name, _), w in zip(groups, group_w))
    head2 = corner[1].ljust(label_w) + "".join(
        gap + " ".join(c[1].center(widths[c]) for c in cols) for _, cols in groups)
    lines = [head1.rstrip(), head2.rstrip()]
    for row in rows:
        parts = []
        for _, cols in groups:
            cells_txt = []
            for c in cols:
                value = cells.get((row, c))
                glyph, colour = styles.get(value, ((value or " ")[:1], "")) if value is not None else (" ", "")
                w = widths[c]
                left = (w - 1) // 2
                cells_txt.append(" " * left + _paint(glyph, colour, color) + " " * (w - 1 - left))
            parts.append(gap + " ".join(cells_txt))
        lines.append((row.ljust(label_w) + "".join(parts)).rstrip())
    return lines


def render_legend(styles: Mapping[str, tuple[str, str]], *, color: bool = False) -> str:
    return "legend: " + "  ".join(f"{_paint(g, c, color)} {name}" for name, (g, c) in styles.items())


def summarize(values: Sequence[str], good: str = "connected") -> str:
    """'42/42 connected', or '40/42 connected (2 timeout)'."""
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    line = f"{counts.get(good, 0)}/{len(values)} {good}"
    others = [f"{n} {v}" for v, n in sorted(counts.items()) if v != good]
    return line + (f" ({', '.join(others)})" if others else "")


def render_matrix(pods: Sequence[PodInfo], results: Sequence[Mapping], *, color: bool = False) -> list[str]:
    """Probe results -> the connectivity table, its legend and the summary line."""
    namespaces = {p.key.split("/", 1)[0] for p in pods}
    short = (lambda k: k.split("/", 1)[1]) if len(namespaces) == 1 else (lambda k: k)
    title = f"namespace {next(iter(namespaces))}: " if len(namespaces) == 1 else ""
    rows = [short(p.key) for p in pods if p.netns]
    several = len({ip_version(ip) for p in pods for ip in p.addresses}) > 1
    columns = [(short(p.key), column_sub(port, proto, ip_version(ip) if several else 0))
               for p in pods for port, proto in p.ports for ip in p.addresses]
    cells = {(short(r["from"]), (short(r["to"]), column_sub(r["port"], r["proto"], r.get("family", 0)))):
             cell_value(r) for r in results}
    what = "pod:port/protocol/family" if several else "pod:port/protocol"
    lines = [f"{title}from (rows) to {what} (columns)", ""]
    lines += render_table(rows, columns, cells, OUTCOME_STYLES, color=color, corner=("from \\ to", ""))
    lines += ["", render_legend(OUTCOME_STYLES, color=color), summarize([cell_value(r) for r in results])]
    return lines


# --- the x/y/z world of the upstream e2e netpol suite and Cyclonus --------------------------
XYZ_NAMESPACES = ("x", "y", "z")
XYZ_PODS = ("a", "b", "c")
XYZ_PORTS: tuple[tuple[int, str], ...] = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"))

# expected-vs-actual cells: "allow"/"deny" agree with the model; "ALLOW"/"DENY" are what
# happened where the model expected the opposite.
EXPECT_STYLES: dict[str, tuple[str, str]] = {
    "allow": ("✓", GREEN),
    "deny": ("·", YELLOW),
    "ALLOW": ("X", RED),                        # connected, the model says denied
    "DENY": ("x", MAGENTA),                     # denied, the model says allowed
}


def xyz_ns_labels(ns: str) -> dict[str, str]:
    return {"ns": ns, "kubernetes.io/metadata.name": ns}


def xyz_pod_doc(ns: str, pod: str, node: str) -> dict:
    """Pod `pod` of namespace `ns`: label pod=<pod>, ports 80 and 81, TCP and UDP, each named
    serve-<port>-<proto> (as upstream; named-port policies resolve them)."""
    ports = [{"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
             for port, proto in XYZ_PORTS]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns, "labels": {"pod": pod}},
            "spec": {"nodeName": node, "containers": [{"name": "cont", "image": "lab", "ports": ports}]}}


def xyz_service_doc(ns: str, pod: str) -> dict:
    """ClusterIP Service s-<pod> in front of one pod, the four ports straight through, with a
    ClusterIP per family of the lab."""
    ports = [{"name": f"service-port-{proto.lower()}-{port}", "port": port, "targetPort": port,
              "protocol": proto} for port, proto in XYZ_PORTS]
    # PreferDualStack: a ClusterIP of each family the lab has, so the world is probed by Service
    # over IPv6 on a dual lab too (a single-family lab gives its one family)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s-{pod}", "namespace": ns},
            "spec": {"selector": {"pod": pod}, "ports": ports, "ipFamilyPolicy": "PreferDualStack"}}


def xyz_world_docs(nodes: Sequence[str]) -> list[dict]:
    """Namespaces, pods and Services of the world; pod a on the first node, b on the second..."""
    docs: list[dict] = [{"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": ns, "labels": xyz_ns_labels(ns)}} for ns in XYZ_NAMESPACES]
    for ns in XYZ_NAMESPACES:
        for j, pod in enumerate(XYZ_PODS):
            docs.append(xyz_pod_doc(ns, pod, nodes[j % len(nodes)]))
            docs.append(xyz_service_doc(ns, pod))
    return docs


def pod_address(pod_doc: Mapping, version: int = 0) -> str:
    """A pod's address of IP version `version` among status.podIPs; its primary address
    (status.podIP) for 0; "" when it has none of that version."""
    status = pod_doc.get("status") or {}
    if not version:
        return status.get("podIP", "")
    return next((i["ip"] for i in status.get("podIPs") or () if i.get("ip") and ip_version(i["ip"]) == version), "")


def xyz_endpoint(pod_doc: dict, ns_labels: Mapping[str, str] | None = None, version: int = 0):
    """A pod of the world (JSON form, status.podIP set) -> truth_table.Endpoint, with its
    address of IP version `version` (0: the primary)."""
    from dataclasses import replace

    from .truth_table import pod_endpoint
    ns = pod_doc["metadata"]["namespace"]
    ep = pod_endpoint(pod_doc, ns_labels if ns_labels is not None else xyz_ns_labels(ns))
    return replace(ep, ip=pod_address(pod_doc, version)) if version else ep


def plan_world_probes(sources: Sequence[tuple[str, str]], dests: Sequence[tuple[str, str]],
                      ports: Sequence[tuple[int, str]] = XYZ_PORTS) -> list[Probe]:
    """(key, netns) sources x (key, address) destinations x ports."""
    return [Probe(skey, snetns, dkey, dip, port, proto)
            for skey, snetns in sources for dkey, dip in dests for port, proto in ports]


def world_sub(port: int, proto: str) -> str:
    """A narrow column heading: T80, U81 (36 columns must fit a terminal)."""
    return f"{proto[:1].upper()}{port}"


def world_cells(results: Sequence[Mapping], expected: Mapping[tuple, bool] | None) -> dict[tuple[str, Column], str]:
    """Probe results (and the model's table, if any) -> render_table cells."""
    cells: dict[tuple[str, Column], str] = {}
    for r in results:
        col = (r["to"], world_sub(r["port"], r["proto"]))
        if expected is None:
            cells[(r["from"], col)] = cell_value(r)
            continue
        ok = cell_value(r) == "connected"
        want = expected.get((r["from"], r["to"], r["port"], r["proto"]))
        cells[(r["from"], col)] = ("allow" if ok else "deny") if want is None or want == ok else \
            ("ALLOW" if ok else "DENY")
    return cells


def render_world(results: Sequence[Mapping], expected: Mapping[tuple, bool] | None, via: str,
                 *, color: bool = False) -> list[str]:
    """The world's truth table: rows = from pods, columns = to pod, port/protocol."""
    rows = list(dict.fromkeys(r["from"] for r in results))
    columns = list(dict.fromkeys((r["to"], world_sub(r["port"], r["proto"])) for r in results))
    cells = world_cells(results, expected)
    styles = OUTCOME_STYLES if expected is None else EXPECT_STYLES
    lines = [f"x/y/z world by {'ClusterIP' if via == 'service' else 'pod IP'}: "
             "from (rows) to pod, protocol+port (columns: T80 = TCP 80)"
             + ("; expected vs actual" if expected is not None else ""), ""]
    lines += render_table(rows, columns, cells, styles, color=color, corner=("from \\ to", ""))
    values = list(cells.values())
    legend = styles if expected is None else {
        "allowed": EXPECT_STYLES["allow"], "denied": EXPECT_STYLES["deny"],
        "allowed, expected denied": EXPECT_STYLES["ALLOW"], "denied, expected allowed": EXPECT_STYLES["DENY"]}
    lines += ["", render_legend(legend, color=color)]
    if expected is None:
        lines.append(summarize(values))
    else:
        bad = sum(v in ("ALLOW", "DENY") for v in values)
        lines.append(f"{len(values) - bad}/{len(values)} as expected" + (f" ({bad} mismatches)" if bad else ""))
    return lines


def parse_policy_docs(docs: Iterable[object]) -> list[dict]:
    """YAML/JSON documents (single objects or a List) -> the NetworkPolicies among them."""
    out: list[dict] = []
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind", "").endswith("List"):
            out += parse_policy_docs(doc.get("items") or ())
        elif doc.get("kind") == "NetworkPolicy":
            out.append(doc)
    return out


# --- I/O -------------------------------------------------------------------------------------
def list_api_pods(cfg: LabConfig, timeout: float = 10.0) -> list[dict]:
    """Every pod of the lab, from its API server, through the host kubeconfig."""
    from kubernetes import client, config  # ~0.5 s to import: only on this path

    api = config.new_client_from_config(config_file=str(cfg.kubeconfig))
    try:
        resp = client.CoreV1Api(api).list_pod_for_all_namespaces(_preload_content=False,
                                                                  _request_timeout=timeout)
        return json.loads(resp.data).get("items", [])
    finally:
        api.close()


def run_probes(probes: Sequence[Probe], timeout: float, workers: int = 32,
               progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Probe everything in parallel from a bounded thread pool; results in plan order."""
    import concurrent.futures

    from .probe import probe_once

    def one(p: Probe) -> dict:
        r = probe_once(p.source_netns, p.ip, p.port, udp=p.proto == "UDP", timeout=timeout)
        return {**r, "from": p.source, "to": p.dest, "port": p.port, "proto": p.proto, "family": p.family}

    results: list[dict | None] = [None] * len(probes)
    done = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(probes)))) as pool:
        futures = {pool.submit(one, p): i for i, p in enumerate(probes)}
        for fut in concurrent.futures.as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except OSError as e:               # e.g. the source netns vanished meanwhile
                p = probes[i]
                results[i] = {"from": p.source, "to": p.dest, "port": p.port, "proto": p.proto,
                              "family": p.family, "outcome": "unreachable", "pod": None, "client": None, "error": str(e)}
            done += 1
            if progress:
                progress(done, len(probes))
    return results  # type: ignore[return-value]


SYSTEM_NAMESPACE = "kube-system"


def select_pods(api_pods: Sequence[dict], namespaces: Sequence[str] | None) -> list[dict]:
    """The pods of `namespaces`; without any, every pod but kube-system's: the lab's addons (the
    cluster DNS) do not run the workload the probes talk to."""
    def namespace(p: dict) -> str | None:
        return (p.get("metadata") or {}).get("namespace")
    if namespaces:
        return [p for p in api_pods if namespace(p) in namespaces]
    return [p for p in api_pods if namespace(p) != SYSTEM_NAMESPACE]


def collect(cfg: LabConfig, namespaces: Sequence[str] | None = None) -> tuple[list[PodInfo], list[str]]:
    """The lab's pods, from the API (ports) joined with pods.json (netns); pods.json alone if
    the API cannot be reached."""
    from .probe import read_pods

    running = read_pods(cfg)
    notes: list[str] = []
    try:
        api_pods = list_api_pods(cfg)
    except Exception as e:  # noqa: BLE001 - any failure of the API path falls back the same way
        notes.append(f"API not reachable ({type(e).__name__}): pods from pods.json, ports 8080")
        api_pods = pods_from_running(running)
    api_pods = select_pods(api_pods, namespaces)
    pods, more = parse_pods(api_pods, running, cfg.node_netns)
    return pods, notes + more


def matrix_command(name: str, *, as_json: bool = False, timeout: float = 1.0,
                   namespaces: Sequence[str] | None = None) -> int:
    import time

    cfg = LabConfig(name=name)
    if not cfg.state_dir.exists():
        print(f"kubeweft lab matrix: lab {name} is not up ({cfg.state_dir} missing)", file=sys.stderr)
        return 2
    pods, notes = collect(cfg, namespaces)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    probes = plan_probes(pods)
    if not probes:
        print("kubeweft lab matrix: no running pods to probe", file=sys.stderr)
        return 1
    tty = sys.stderr.isatty()
    start = time.monotonic()
    print(f"probing {len(probes)} (pod, pod, port) pairs from {len({p.source for p in probes})} pods, "
          f"timeout {timeout:g} s ...", file=sys.stderr, end="\r" if tty else "\n", flush=True)

    def progress(done: int, total: int) -> None:
        if tty:
            print(f"probing ... {done}/{total}    ", file=sys.stderr, end="\r", flush=True)

    results = run_probes(probes, timeout, progress=progress)
    print(f"probed {len(results)} pairs in {time.monotonic() - start:.1f} s" + " " * 10, file=sys.stderr)
    ok = all(cell_value(r) == "connected" for r in results)
    if as_json:
        print(json.dumps({"pods": [asdict(p) for p in pods], "results": results}, indent=1))
    else:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print("\n".join(render_matrix(pods, results, color=color)))
    return 0 if ok else 1


# --- the x/y/z world: I/O ----------------------------------------------------------------------
@dataclass
class World:
    """The world as it runs: pod objects, namespace labels, Service addresses, pod netns."""
    pods: dict[str, dict]                 # "x/a" -> pod (JSON form)
    ns_labels: dict[str, dict]            # "x" -> labels
    services: dict[str, tuple[str, ...]]  # "x/a" -> ClusterIPs of x/s-a, primary family first
    netns: dict[str, str]                 # "x/a" -> the pod's netns

    def endpoints(self, version: int = 0) -> list:
        """The pods as truth_table Endpoints, by their address of IP version `version` (0: primary)."""
        return [xyz_endpoint(p, self.ns_labels.get(k.split("/")[0], {}), version)
                for k, p in sorted(self.pods.items())]

    def dests(self, via: str, version: int = 0) -> list[tuple[str, str]]:
        """(pod key, address) to probe: the pod's address or its Service's ClusterIP, of IP
        version `version` (0: the primary); pods without one are left out."""
        if via == "service":
            pick = {k: [ip for ip in ips if not version or ip_version(ip) == version]
                    for k, ips in self.services.items()}
            return [(k, pick[k][0]) for k in sorted(self.pods) if pick.get(k)]
        addrs = {k: pod_address(p, version) for k, p in sorted(self.pods.items())}
        return [(k, ip) for k, ip in addrs.items() if ip]

    def sources(self) -> list[tuple[str, str]]:
        return [(k, self.netns[k]) for k in sorted(self.pods) if self.netns.get(k)]


def _json_call(fn, *args, **kw) -> dict:
    return json.loads(fn(*args, _preload_content=False, _request_timeout=10, **kw).data)


def ensure_world(cfg: LabConfig, timeout: float = 90.0) -> None:
    """Create whatever of the world is missing (namespaces, pods, Services) and wait until all
    nine pods are Ready with an address. Idempotent; `kubectl delete ns x y z` removes it."""
    import time

    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(cfg.kubeconfig))
    try:
        core = client.CoreV1Api(api)
        nodes = sorted(n["metadata"]["name"] for n in _json_call(core.list_node).get("items", []))
        if not nodes:
            raise RuntimeError("the lab has no nodes")
        for doc in xyz_world_docs(nodes):
            kind, meta = doc["kind"], doc["metadata"]
            try:
                if kind == "Namespace":
                    core.create_namespace(doc, _request_timeout=10)
                elif kind == "Pod":
                    core.create_namespaced_pod(meta["namespace"], doc, _request_timeout=10)
                else:
                    core.create_namespaced_service(meta["namespace"], doc, _request_timeout=10)
            except client.ApiException as e:
                if e.status != 409:
                    raise
        deadline = time.monotonic() + timeout
        while True:
            ready = set()
            for ns in XYZ_NAMESPACES:
                for p in _json_call(core.list_namespaced_pod, ns).get("items", []):
                    st = p.get("status") or {}
                    if st.get("podIP") and any(c.get("type") == "Ready" and c.get("status") == "True"
                                               for c in st.get("conditions") or ()):
                        ready.add(f"{ns}/{p['metadata']['name']}")
            if len(ready) >= len(XYZ_NAMESPACES) * len(XYZ_PODS):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"x/y/z world not Ready after {timeout:g} s: {len(ready)}/9 pods Ready")
            time.sleep(0.3)
    finally:
        api.close()


def collect_world(cfg: LabConfig) -> World:
    from kubernetes import client, config

    from .probe import read_pods

    running = read_pods(cfg)
    api = config.new_client_from_config(config_file=str(cfg.kubeconfig))
    try:
        core = client.CoreV1Api(api)
        world = World({}, {}, {}, {})
        for ns in XYZ_NAMESPACES:
            nsobj = _json_call(core.read_namespace, ns)
            world.ns_labels[ns] = nsobj["metadata"].get("labels") or {}
            for p in _json_call(core.list_namespaced_pod, ns).get("items", []):
                key = f"{ns}/{p['metadata']['name']}"
                if p["metadata"]["name"] in XYZ_PODS and (p.get("status") or {}).get("podIP"):
                    world.pods[key] = p
                    world.netns[key] = (running.get(key) or {}).get("netns") or ""
            for s in _json_call(core.list_namespaced_service, ns).get("items", []):
                name = s["metadata"]["name"]
                spec = s.get("spec") or {}
                if name.startswith("s-") and spec.get("clusterIP"):
                    world.services[f"{ns}/{name[2:]}"] = tuple(spec.get("clusterIPs") or [spec["clusterIP"]])
        return world
    finally:
        api.close()


def load_policies(path: str) -> list[dict]:
    """NetworkPolicies from a YAML or JSON file ('-': stdin), several documents allowed."""
    import yaml

    if path == "-":
        text = sys.stdin.read()
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    return parse_policy_docs(yaml.safe_load_all(text))


def world_command(name: str, *, via: str = "pod", expect: str | None = None, as_json: bool = False,
                  timeout: float = 1.0, create: bool = True) -> int:
    """`kubeweft lab matrix --world xyz [--via pod|service] [--expect FILE]`."""
    import time

    from .truth_table import expected_table

    cfg = LabConfig(name=name)
    if not cfg.state_dir.exists():
        print(f"kubeweft lab matrix: lab {name} is not up ({cfg.state_dir} missing)", file=sys.stderr)
        return 2
    if create:
        print("ensuring the x/y/z world (namespaces x y z, pods a b c, Services s-a s-b s-c) ...",
              file=sys.stderr)
        ensure_world(cfg)
    world = collect_world(cfg)
    probes = plan_world_probes(world.sources(), world.dests(via))
    if not probes:
        print("kubeweft lab matrix: the x/y/z world has no running pods", file=sys.stderr)
        return 1
    expected = None
    if expect:
        eps = world.endpoints()
        expected = expected_table(load_policies(expect), eps, eps, XYZ_PORTS)
    start = time.monotonic()
    results = run_probes(probes, timeout, workers=64)
    print(f"probed {len(results)} pairs in {time.monotonic() - start:.1f} s", file=sys.stderr)
    cells = world_cells(results, expected)
    if as_json:
        print(json.dumps({"via": via, "results": results,
                          "expected": None if expected is None else
                          [{"from": k[0], "to": k[1], "port": k[2], "proto": k[3], "allowed": v}
                           for k, v in expected.items()]}, indent=1))
    else:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print("\n".join(render_world(results, expected, via, color=color)))
    if expected is not None:
        return 0 if not any(v in ("ALLOW", "DENY") for v in cells.values()) else 1
    return 0
