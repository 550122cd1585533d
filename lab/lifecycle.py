"""`kubeweft lab up|down|status|kubeconfig`: build, supervise, report on and remove a lab.

Process model and state layout: lab/README.md. Every process `up` starts carries
KUBEWEFT_LAB_ID=<name>:<token> and runs in its own session, so it outlives the CLI; `down`
finds them again by that environment entry alone (also after kill -9, or without state.json).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import addons, install, netns, topology
from .config import LabConfig, check_name
from .errors import LabError
from .kubelet import imagefiles
from .kubelet.layout import hold_path
from .kubelet.model import NodeAddr, node_index, parse_node, plan_pod_routes

LAB_ID_ENV = "KUBEWEFT_LAB_ID"
TERM_GRACE = 3.0                 # seconds between SIGTERM and SIGKILL in `down`
LOG_TAIL_LINES = 30


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- state ------------------------------------------------------------------------------------

def read_state(name: str) -> dict | None:
    """state.json of lab `name`, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(LabConfig(name=name).state_file.read_text())
    except (OSError, ValueError):
        return None


def load_config(name: str) -> LabConfig:
    """The lab's LabConfig from state.json; the defaults for `name` when there is none."""
    state = read_state(name)
    if state and "config" in state:
        return LabConfig(**state["config"])
    return LabConfig(name=name)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def plan_state(cfg: LabConfig, token: str) -> dict:
    return {"config": dataclasses.asdict(cfg), "token": token, "created": time.time()}


def lab_id(name: str, token: str) -> str:
    return f"{name}:{token}"


# --- processes --------------------------------------------------------------------------------

def _proc_environ_has(pid: int, entry: bytes, prefix: bool) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return False
    for item in env.split(b"\0"):
        if item == entry or (prefix and item.startswith(entry)):
            return True
    return False


def find_processes(name: str, token: str | None) -> list[int]:
    """PIDs whose environment holds KUBEWEFT_LAB_ID=<name>:<token> (any token if None)."""
    if token:
        entry, prefix = f"{LAB_ID_ENV}={lab_id(name, token)}".encode(), False
    else:
        entry, prefix = f"{LAB_ID_ENV}={name}:".encode(), True
    me = os.getpid()
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me and _proc_environ_has(int(d), entry, prefix):
            pids.append(int(d))
    return sorted(pids)


def find_agent(name: str, token: str | None, node: str) -> int | None:
    """The PID of this lab's kubeweft agent on `node` (the agent container of the DaemonSet's
    pod there), or None."""
    for pid in find_processes(name, token):
        if install.is_agent(pid, node):
            return pid
    return None


def wait_agent(name: str, node: str, other_than: int | None = None, timeout: float = 60.0) -> int:
    """The PID of the agent of `node` once one runs that is not `other_than` (the kubelet's
    restart of its container). LabError after `timeout` seconds."""
    token = (read_state(name) or {}).get("token")
    deadline = time.monotonic() + timeout
    while True:
        pid = find_agent(name, token, node)
        if pid is not None and pid != other_than and _alive(pid):
            return pid
        if time.monotonic() >= deadline:
            raise LabError(f"lab {name}: no new agent on {node} after {timeout:g} s")
        time.sleep(0.05)


def _kill_agent(name: str, node: str, sig: int) -> int:
    old = find_agent(name, (read_state(name) or {}).get("token"), node)
    if old is None:
        raise LabError(f"lab {name}: no agent runs on {node}")
    _signal(old, sig)
    deadline = time.monotonic() + 10
    while _alive(old) and time.monotonic() < deadline:
        time.sleep(0.02)
    return old


def restart_agent(name: str, node: str, sig: int = signal.SIGKILL, timeout: float = 60.0) -> tuple[int, int]:
    """Kill the agent of `node` with `sig`; its pod's kubelet starts the container again (at
    once the first time, then after CrashLoopBackOff's delay). (old PID, new PID)."""
    old = _kill_agent(name, node, sig)
    return old, wait_agent(name, node, old, timeout)


def hold_agent(name: str, node: str) -> int:
    """SIGKILL the agent of `node` and keep it down: the node's kubelet does not start the
    container again until release_agent. Returns the killed PID."""
    cfg = load_config(name)
    hold = hold_path(cfg.node_dir(node), install.NAMESPACE, install.AGENT_CONTAINER)
    hold.parent.mkdir(parents=True, exist_ok=True)
    hold.touch()
    return _kill_agent(name, node, signal.SIGKILL)


def release_agent(name: str, node: str, old: int | None = None, timeout: float = 60.0) -> int:
    """Let the kubelet start the agent of `node` that hold_agent stopped; its new PID."""
    cfg = load_config(name)
    hold_path(cfg.node_dir(node), install.NAMESPACE, install.AGENT_CONTAINER).unlink(missing_ok=True)
    return wait_agent(name, node, old, timeout)


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def end_processes(pids: list[int], grace: float = TERM_GRACE) -> list[int]:
    """SIGTERM, wait up to `grace` seconds, SIGKILL the rest (all by PID). Returns those killed."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    killed = [p for p in pids if _alive(p)]
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_alive(p) for p in killed):
        time.sleep(0.05)
    return killed


def _spawn(cfg: LabConfig, argv: list[str], log_name: str, token: str,
           inside: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, **{LAB_ID_ENV: lab_id(cfg.name, token), "PYTHONUNBUFFERED": "1"})
    with open(cfg.log_dir / f"{log_name}.log", "ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, close_fds=True,
            preexec_fn=netns.preexec(inside) if inside else None)  # noqa: PLW1509 (no threads here)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"  | {line}" for line in text[-lines:]) or f"  (empty log {path})"


class _StartFailed(LabError):
    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log


# --- up ---------------------------------------------------------------------------------------

def is_up(cfg: LabConfig) -> str | None:
    """Why lab `cfg.name` counts as existing (state, namespaces or processes), or None."""
    if cfg.state_dir.exists():
        return f"its state directory {cfg.state_dir} exists"
    if topology.list_netns(cfg.netns_prefix):
        return f"network namespaces {cfg.netns_prefix}* exist"
    if find_processes(cfg.name, None):
        return "processes of it are running"
    return None



def _wait_apiserver(cfg: LabConfig, proc: subprocess.Popen, deadline: float) -> dict:
    ready = cfg.state_dir / "apiserver.ready"
    log = cfg.log_dir / "apiserver.log"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _StartFailed(f"the API server exited with code {proc.returncode}", log)
        try:
            return json.loads(ready.read_text())
        except (OSError, ValueError):
            time.sleep(0.1)
    raise _StartFailed("the API server did not become ready in time", log)


def _node_summary(node) -> tuple[str, bool, str | None, NodeAddr]:
    """(name, Ready, podCIDRs as one string, its addresses) of a kubernetes V1Node."""
    from kubernetes import client as k8s

    ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
    addr = parse_node(k8s.ApiClient().sanitize_for_serialization(node))
    return node.metadata.name, ready, ",".join(addr.pod_cidrs) or None, addr


def _sync_cloud_routes(cfg: LabConfig, nodes: list[tuple[str, bool, str | None, NodeAddr]]) -> None:
    """The lab's cloud route table: each node's podCIDRs, each via its InternalIP of that family."""
    routes = plan_pod_routes("", [addr for *_, addr in nodes])
    topology.apply_steps(topology.plan_underlay_routes(cfg, routes))


def _wait_nodes_ready(cfg: LabConfig, procs: dict[str, subprocess.Popen], deadline: float,
                      want: list[str] | None = None, ready: bool = True) -> list[tuple[str, bool, str | None, NodeAddr]]:
    """Until every node in `want` is Ready (registered only, with `ready` False)."""
    from kubernetes import client as k8s

    api = k8s.CoreV1Api(api_client(cfg))
    want = want if want is not None else topology.node_names(cfg)
    seen: dict[str, str] = {}
    last_error = ""
    while True:
        for what, proc in procs.items():
            if proc.poll() is not None:
                raise _StartFailed(f"{what} exited with code {proc.returncode}",
                                   cfg.log_dir / f"{what}.log")
        try:
            nodes = {s[0]: s for s in map(_node_summary, api.list_node(_request_timeout=5).items)}
        except Exception as e:  # noqa: BLE001 (the API server is ours: any failure is transient)
            nodes, last_error = {}, str(e).splitlines()[0] if str(e) else type(e).__name__
        for n in want:
            state = "Ready" if n in nodes and nodes[n][1] else ("registered" if n in nodes else "")
            if state and seen.get(n) != state:
                seen[n] = state
                extra = f" (podCIDR {nodes[n][2]})" if state == "Ready" else ""
                _say(f"  {n}: {state}{extra}")
        if all(n in nodes and (nodes[n][1] or not ready) for n in want):
            return [nodes[n] for n in want]
        if time.monotonic() >= deadline:
            late = [n for n in want if seen.get(n) != "Ready"]
            why = f"; last API error: {last_error}" if last_error and not nodes else ""
            raise _StartFailed(f"nodes not Ready in time: {', '.join(late)}{why}",
                               cfg.log_dir / f"kubelet-{late[0]}.log")
        time.sleep(0.25)


def start_kubelet(cfg: LabConfig, node: str, token: str) -> subprocess.Popen:
    """Start node's kubelet as `up` does (also to restart one in a test): in the node's netns,
    own session, KUBEWEFT_LAB_ID set, output appended to logs/kubelet-<node>.log."""
    return _spawn(cfg, [sys.executable, "-m", "kubeweft.lab.kubelet", "--lab", cfg.name, "--node", node],
                  f"kubelet-{node}", token, inside=cfg.node_netns(node))


def up(cfg: LabConfig, timeout: float = 120.0) -> None:
    """Build lab `cfg` and return once every node is Ready (--cni kubeweft: once deploy/lab,
    applied with kubectl, is rolled out); raise LabError otherwise, after removing whatever was
    made. Refuses (LabError, nothing removed) if the lab exists."""
    check_name(cfg.name)
    why = is_up(cfg)
    if why:
        raise LabError(f"lab {cfg.name} is already up ({why}); "
                       f"run `kubeweft lab --name {cfg.name} down` first")
    deadline = time.monotonic() + timeout
    token = secrets.token_hex(8)
    try:
        _up(cfg, token, deadline)
    except BaseException as e:          # KeyboardInterrupt too: never leave half a lab behind
        _say(f"lab up failed: {e}")
        if isinstance(e, _StartFailed) and e.log:
            _say(f"--- tail of {e.log}:\n{log_tail(e.log)}")
        _say(f"removing lab {cfg.name} ...")
        for line in down(cfg.name):
            _say(f"  {line}")
        if isinstance(e, Exception) and not isinstance(e, LabError):
            err = LabError(str(e))
            err.reported = True
            raise err from e
        e.reported = True            # said above: up_command need not repeat it
        raise


def _up(cfg: LabConfig, token: str, deadline: float) -> None:
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    state = plan_state(cfg, token)
    _write_json(cfg.state_file, state)
    for node in topology.node_names(cfg):
        for d in (cfg.cni_conf_dir(node), cfg.cni_bin_dir(node), cfg.cni_data_dir(node)):
            d.mkdir(parents=True, exist_ok=True)

    _say(f"lab {cfg.name}: building {cfg.nodes} nodes, cni {cfg.cni}"
         + (f", backend {cfg.backend}" if cfg.cni == "kubeweft" else "")
         + (f", ip family {cfg.ip_family}" if cfg.ip_family != "ipv4" else ""))
    if cfg.cni == "kubeweft":
        _ensure_image_files()
    topology.build(cfg)

    apiserver = _spawn(cfg, [sys.executable, "-m", "kubeweft.lab.apiserver", "--lab", cfg.name], "apiserver", token)
    ready = _wait_apiserver(cfg, apiserver, deadline)
    state["apiserver"] = {"pid": ready.get("pid", apiserver.pid), "port": ready.get("port")}
    _write_json(cfg.state_file, state)
    _say(f"  apiserver: ready on 127.0.0.1:{ready.get('port')}")

    procs: dict[str, subprocess.Popen] = {"apiserver": apiserver}
    for node in topology.node_names(cfg):
        procs[f"kubelet-{node}"] = start_kubelet(cfg, node, token)
    state["processes"] = {what: p.pid for what, p in procs.items()}
    _write_json(cfg.state_file, state)

    # --cni none: the nodes stay NotReady until someone (a CNI DaemonSet) writes a CNI config
    nodes = _wait_nodes_ready(cfg, procs, deadline, ready=cfg.cni == "reference")
    if cfg.cni == "kubeweft":
        nodes = install_kubeweft(cfg, topology.node_names(cfg), procs, deadline)
    if cfg.cni == "reference":
        # The lab's cloud route table: the external host reaches pods (and pods it)
        # unmasqueraded; node-to-node pod routes are the kubelets' job.
        _sync_cloud_routes(cfg, nodes)
    _say(f"  addons: {addons.apply_addons(cfg, timeout=max(10.0, deadline - time.monotonic()))}")


def _ensure_image_files() -> None:
    """The files of kubeweft's image that the lab builds (kubelet/imagefiles.py), before any
    node starts: the DaemonSet's init container copies them."""
    t0 = time.monotonic()
    where, built = imagefiles.ensure_frozen()
    if built:
        _say(f"  built the frozen CNI executable in {time.monotonic() - t0:.1f} s: {where}")


def install_kubeweft(cfg: LabConfig, want: list[str], procs: dict[str, subprocess.Popen],
                      deadline: float) -> list[tuple[str, bool, str | None, NodeAddr]]:
    """kubeweft as its users install it (kubectl apply -k deploy/lab), then until the DaemonSet
    is rolled out on every node, each of `want` is Ready (the agent wrote its conflist) and every
    agent routes to every other node's pods."""
    _say(f"  kubectl apply -k {install.apply_manifests(cfg)}")

    def alive() -> None:
        for what, proc in procs.items():
            if proc.poll() is not None:
                raise _StartFailed(f"{what} exited with code {proc.returncode}", cfg.log_dir / f"{what}.log")
    everyone = node_list(cfg, read_state(cfg.name) or {})
    _say(f"  waiting for daemon set kube-system/kubeweft on {len(everyone)} node(s) "
         f"(up to {max(0.0, deadline - time.monotonic()):.0f} s more)")
    try:
        install.wait_rollout(cfg, len(everyone), deadline, alive)
    except LabError as e:
        late = next((n for n in want if install.agent_logs(cfg, n)), want[0])
        raise _StartFailed(str(e), install.agent_log(cfg, late)) from None
    _say("  daemon set kube-system/kubeweft rolled out")
    nodes = _wait_nodes_ready(cfg, procs, deadline, want=want)
    _wait_overlay_routes(cfg, everyone, deadline)
    return nodes


def up_command(name: str, nodes: int = 2, cni: str | None = None, timeout: float = 120.0,
               backend: str | None = None, ip_family: str | None = None) -> int:
    try:
        check_name(name)
        if nodes < 1:
            raise LabError("--nodes must be at least 1")
        cfg = LabConfig(name=name, nodes=nodes, cni=cni or LabConfig.cni,
                        backend=backend or LabConfig.backend, ip_family=ip_family or LabConfig.ip_family)
        up(cfg, timeout=timeout)
    except ValueError as e:
        _say(str(e))
        return 1
    except LabError as e:
        if not getattr(e, "reported", False):
            _say(str(e))
        return 1
    state = "registered, NotReady until a CNI config is installed" if cfg.cni == "none" else "Ready"
    print(f"lab {name} is up: {nodes} node(s) {state}; kubeconfig {cfg.kubeconfig}")
    return 0


# --- nodes joining and leaving a running lab ---------------------------------------------------

def node_list(cfg: LabConfig, state: dict) -> list[str]:
    """The lab's current nodes: state["nodes"] once node-add/node-remove ran, else 1..cfg.nodes."""
    return list(state.get("nodes") or topology.node_names(cfg))


def plan_new_nodes(existing: list[str], count: int) -> list[tuple[int, str]]:
    """(index, name) of `count` new nodes, numbered after the highest ever used, so a removed
    node's name (and address) is never reused while its old Node object might linger."""
    top = max((node_index(n) for n in existing), default=0)
    return [(i, f"node{i}") for i in range(top + 1, top + 1 + count)]


def _running_state(name: str) -> tuple[LabConfig, dict]:
    check_name(name)
    state = read_state(name)
    if not state or "token" not in state:
        raise LabError(f"lab {name} is not up (no {LabConfig(name=name).state_file})")
    return LabConfig(**state["config"]), state


def node_add(name: str, count: int = 1, timeout: float = 120.0) -> list[str]:
    """Add `count` nodes to running lab `name` as `up` builds them (netns on the LAN, kubelet;
    kubeweft's DaemonSet puts its pod there) and return their names once they are Ready. On failure the new nodes are
    removed again and LabError says why."""
    cfg, state = _running_state(name)
    token = state["token"]
    nodes = node_list(cfg, state)
    new = plan_new_nodes(nodes, count)
    deadline = time.monotonic() + timeout
    procs: dict[str, subprocess.Popen] = {}
    try:
        for index, node in new:
            for d in (cfg.cni_conf_dir(node), cfg.cni_bin_dir(node), cfg.cni_data_dir(node)):
                d.mkdir(parents=True, exist_ok=True)
            topology.apply_steps(topology.plan_add_node(cfg, index, node))
            procs[f"kubelet-{node}"] = start_kubelet(cfg, node, token)
        state = read_state(name) or state
        state["nodes"] = nodes + [n for _, n in new]
        state.setdefault("processes", {}).update({what: p.pid for what, p in procs.items()})
        _write_json(cfg.state_file, state)
        added = [n for _, n in new]
        if cfg.cni == "kubeweft":
            # the DaemonSet puts its pod on each new node, whose agent turns it Ready
            _wait_nodes_ready(cfg, procs, deadline, want=added, ready=False)
            ready = install_kubeweft(cfg, added, procs, deadline)
        else:
            ready = _wait_nodes_ready(cfg, procs, deadline, want=added, ready=cfg.cni != "none")
    except BaseException as e:
        if isinstance(e, _StartFailed) and e.log:
            _say(f"node-add failed: {e}\n--- tail of {e.log}:\n{log_tail(e.log)}")
        for _, node in new:
            node_remove(name, node, missing_ok=True)
        if isinstance(e, Exception) and not isinstance(e, LabError):
            raise LabError(f"node-add: {e}") from e
        raise
    if cfg.cni == "reference":
        everyone = _wait_nodes_ready(cfg, {}, time.monotonic() + 10, want=state["nodes"])
        _sync_cloud_routes(cfg, everyone)
    return [n for n, *_ in ready]


def _wait_overlay_routes(cfg: LabConfig, nodes: list[str], deadline: float) -> None:
    """Until every node's agent routes to every other node's pods (one kubeweft route, protocol
    0xAF, per other node, in the primary family): then cross-node pod traffic works the moment
    a pod is Ready."""
    from kubeweft.proxy.overlay.kernel import RTPROT_KUBEWEFT

    pending = list(nodes)
    while pending:
        have = {}
        for node in pending:
            proc = subprocess.run(["ip", "-n", cfg.node_netns(node), f"-{cfg.families[0]}", "route", "show", "proto",
                                   str(RTPROT_KUBEWEFT)], capture_output=True, text=True, timeout=10,
                                  check=False)
            have[node] = len(proc.stdout.splitlines())
        pending = [n for n in pending if have[n] < len(nodes) - 1]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise _StartFailed(f"the agent of {pending[0]} routes to {have[pending[0]]} of "
                               f"{len(nodes) - 1} other nodes", cfg.log_dir / f"agent-{pending[0]}.log")
        time.sleep(0.1)


def _lab_pid(name: str, token: str, pid: int | None) -> int | None:
    """`pid` if it is alive and one of this lab's processes (never end a stranger reusing it)."""
    if not pid or not _alive(pid):
        return None
    entry = f"{LAB_ID_ENV}={lab_id(name, token)}".encode()
    return pid if _proc_environ_has(pid, entry, False) else None


def node_remove(name: str, node: str, missing_ok: bool = False) -> list[str]:
    """Remove `node` from running lab `name`: stop its kubelet (so it cannot re-register), delete
    its Node object (the other agents drop their routes to it), stop its agent and workloads,
    delete its pods from the API (the pod GC of a real cluster), its namespaces and its state."""
    cfg, state = _running_state(name)
    token = state["token"]
    nodes = node_list(cfg, state)
    if node not in nodes and not missing_ok:
        raise LabError(f"lab {name} has no node {node!r} (nodes: {', '.join(nodes) or 'none'})")
    done: list[str] = []
    procs = state.get("processes", {})
    kubelet = _lab_pid(name, token, procs.get(f"kubelet-{node}"))
    if kubelet:
        end_processes([kubelet])
        done.append(f"stopped kubelet-{node} ({kubelet})")
    try:
        pods_on_node = json.loads((cfg.node_dir(node) / "pods.json").read_text())
    except (OSError, ValueError):
        pods_on_node = {}
    from kubernetes import client as k8s

    client = api_client(cfg)
    try:
        core = k8s.CoreV1Api(client)
        try:
            core.delete_node(node, _request_timeout=10)
            done.append(f"deleted Node {node}")
        except k8s.ApiException as e:
            if e.status != 404:
                raise LabError(f"delete Node {node}: {e.reason}") from e
        others = [_lab_pid(name, token, pid) for p in pods_on_node.values()
                   for pid in p.get("pids") or [p.get("pid")]]
        others = [p for p in others if p]
        if others:
            end_processes(others)
            done.append(f"ended processes {' '.join(map(str, others))}")
        pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}",
                                                _request_timeout=10).items
        for p in pods:
            try:
                core.delete_namespaced_pod(p.metadata.name, p.metadata.namespace,
                                           grace_period_seconds=0, _request_timeout=10)
                done.append(f"deleted pod {p.metadata.namespace}/{p.metadata.name}")
            except k8s.ApiException as e:
                if e.status != 404:
                    raise LabError(f"delete pod {p.metadata.name}: {e.reason}") from e
    finally:
        client.close()
    names = [p["netns"] for p in pods_on_node.values() if p.get("netns")] + [cfg.node_netns(node)]
    done += [f"deleted netns {n}" for n in topology.remove_exact(names)]
    if cfg.node_dir(node).exists():
        shutil.rmtree(cfg.node_dir(node), ignore_errors=True)
    state = read_state(name) or state
    state["nodes"] = [n for n in node_list(cfg, state) if n != node]
    state.get("processes", {}).pop(f"kubelet-{node}", None)
    _write_json(cfg.state_file, state)
    return done


def node_add_command(name: str, count: int = 1, timeout: float = 120.0) -> int:
    try:
        if count < 1:
            raise LabError("--count must be at least 1")
        added = node_add(name, count, timeout)
    except (ValueError, LabError) as e:
        _say(str(e))
        return 1
    print(f"lab {name}: {' '.join(added)} Ready")
    return 0


def node_remove_command(name: str, node: str) -> int:
    try:
        lines = node_remove(name, node)
    except (ValueError, LabError) as e:
        _say(str(e))
        return 1
    for line in lines:
        print(line)
    return 0


# --- a node rebooted --------------------------------------------------------------------------

def _net_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def find_node_processes(name: str, token: str, netns_names: list[str]) -> list[int]:
    """This lab's processes whose network namespace is one of `netns_names` (a node's own and
    its pods'): the kubelet, its containers, exec sessions and CNI plugins of that node."""
    inodes = set()
    for ns in netns_names:
        try:
            inodes.add(os.stat(netns.path(ns)).st_ino)
        except OSError:
            pass
    return [p for p in find_processes(name, token) if _net_inode(p) in inodes]


def _wait_link_gone(cfg: LabConfig, link: str, deadline: float) -> None:
    """Until the underlay's end of a deleted node netns' cable is gone: the kernel destroys a
    netns (and the veths with an end in it) asynchronously once its last user is gone."""
    while subprocess.run(["ip", "-n", cfg.underlay_netns, "link", "show", link], capture_output=True,
                         timeout=10, check=False).returncode == 0:
        if time.monotonic() >= deadline:
            raise LabError(f"{link} still exists in {cfg.underlay_netns}: the old node netns lives on")
        time.sleep(0.05)


def _lease_renewed_since(cfg: LabConfig, node: str, since: float) -> bool:
    """True once the node's Lease was renewed after `since` (time.time()): its kubelet runs."""
    import datetime

    from kubernetes import client as k8s

    from .kubelet.model import LEASE_NAMESPACE

    client = api_client(cfg)
    try:
        lease = k8s.CoordinationV1Api(client).read_namespaced_lease(node, LEASE_NAMESPACE, _request_timeout=5)
    except Exception:  # noqa: BLE001 (the API server is ours: retried by the caller)
        return False
    finally:
        client.close()
    renew = lease.spec.renew_time
    if renew is None:
        return False
    if renew.tzinfo is None:
        renew = renew.replace(tzinfo=datetime.UTC)
    return renew.timestamp() >= since


def node_restart(name: str, node: str, timeout: float = 120.0) -> dict[str, float]:
    """Reboot `node` of running lab `name`: every process in its netns and its pods' netns is
    ended (the kubelet first, with SIGKILL, so it tears nothing down; the rest with SIGTERM then
    SIGKILL, as a shutdown does), those namespaces are deleted, the node's /run is emptied and its
    /var/lib (IPAM store, pods.json, pod dirs) kept. Then the node netns is built again on the
    LAN with the same address and the kubelet started: it finds its pods' sandboxes gone, DELs
    them (releasing their addresses) and makes new ones with a CNI ADD each, and restarts the
    DaemonSet's agent container. Returns once the node's kubelet posts Ready again and (with
    kubeweft) its new agent routes to every other node: {"ready": s, "agent": s} since the start."""
    cfg, state = _running_state(name)
    token = state["token"]
    nodes = node_list(cfg, state)
    if node not in nodes:
        raise LabError(f"lab {name} has no node {node!r} (nodes: {', '.join(nodes) or 'none'})")
    t0, wall0 = time.monotonic(), time.time()
    deadline = t0 + timeout
    try:
        pods_on_node = json.loads((cfg.node_dir(node) / "pods.json").read_text())
    except (OSError, ValueError):
        pods_on_node = {}
    old_agent = find_agent(name, token, node)
    names = [cfg.node_netns(node)] + sorted({p["netns"] for p in pods_on_node.values()
                                             if p.get("netns") and not p.get("hostNetwork")})
    kubelet = _lab_pid(name, token, state.get("processes", {}).get(f"kubelet-{node}"))
    if kubelet:
        _signal(kubelet, signal.SIGKILL)
        while _alive(kubelet) and time.monotonic() < deadline:
            time.sleep(0.02)
    end_processes(find_node_processes(name, token, names), grace=1.0)
    left = find_node_processes(name, token, names)
    if left:
        raise LabError(f"node {node}: processes {left} outlived SIGKILL")
    topology.remove_exact(names)
    _wait_link_gone(cfg, topology.node_port(node), deadline)
    run_dir = cfg.node_host_dir(node) / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)

    topology.apply_steps(topology.plan_add_node(cfg, node_index(node), node))
    proc = start_kubelet(cfg, node, token)
    state = read_state(name) or state
    state.setdefault("processes", {})[f"kubelet-{node}"] = proc.pid
    _write_json(cfg.state_file, state)
    while not _lease_renewed_since(cfg, node, wall0):
        if proc.poll() is not None:
            raise LabError(f"kubelet-{node} exited with code {proc.returncode}\n"
                           f"{log_tail(cfg.log_dir / f'kubelet-{node}.log')}")
        if time.monotonic() >= deadline:
            raise LabError(f"node {node}: its kubelet did not come back in {timeout:g} s")
        time.sleep(0.1)
    _wait_nodes_ready(cfg, {f"kubelet-{node}": proc}, deadline, want=[node])
    times = {"ready": time.monotonic() - t0}
    if cfg.cni == "kubeweft":
        wait_agent(name, node, other_than=old_agent, timeout=max(1.0, deadline - time.monotonic()))
        _wait_overlay_routes(cfg, nodes, deadline)
        times["agent"] = time.monotonic() - t0
    return times


def node_restart_command(name: str, node: str, timeout: float = 120.0) -> int:
    try:
        times = node_restart(name, node, timeout)
    except (ValueError, LabError) as e:
        _say(str(e))
        return 1
    agent = f", its agent routing after {times['agent']:.1f} s" if "agent" in times else ""
    print(f"lab {name}: {node} restarted: Ready after {times['ready']:.1f} s{agent}")
    return 0


# --- the API server stopped and started again ------------------------------------------------

API_STOP_GRACE = 30.0   # seconds for the API server to stop serving and write its snapshot


def api_stop(name: str) -> str:
    """Stop lab `name`'s API server with SIGTERM: it stops serving and saves its store
    (apiserver-store.json) before it exits. Everything else of the lab keeps running, on what
    it last learnt. LabError if it does not exit in API_STOP_GRACE seconds (then SIGKILL, and
    the store is as of the last stop)."""
    cfg, state = _running_state(name)
    pid = _lab_pid(name, state["token"], (state.get("apiserver") or {}).get("pid"))
    if pid is None:
        raise LabError(f"lab {name}: its API server is not running")
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + API_STOP_GRACE
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        end_processes([pid], grace=0)
        raise LabError(f"lab {name}: the API server ({pid}) did not stop in {API_STOP_GRACE:.0f} s; "
                       f"killed, its last changes are lost\n{log_tail(cfg.log_dir / 'apiserver.log')}")
    return f"stopped apiserver ({pid})"


def api_start(name: str, timeout: float = 60.0) -> str:
    """Start lab `name`'s API server again on the addresses it had (the loopback port in
    state.json, the control-plane address) with the same PKI and token; it loads the store the
    last stop saved. Returns once it serves."""
    cfg, state = _running_state(name)
    token = state["token"]
    old = state.get("apiserver") or {}
    if _lab_pid(name, token, old.get("pid")):
        raise LabError(f"lab {name}: its API server is running ({old['pid']})")
    port = old.get("port") or 0
    (cfg.state_dir / "apiserver.ready").unlink(missing_ok=True)    # a killed server's leftover
    proc = _spawn(cfg, [sys.executable, "-m", "kubeweft.lab.apiserver", "--lab", cfg.name,
                        "--port", str(port)], "apiserver", token)
    try:
        ready = _wait_apiserver(cfg, proc, time.monotonic() + timeout)
    except _StartFailed as e:
        end_processes([proc.pid])
        raise LabError(f"{e}\n{log_tail(e.log)}" if e.log else str(e)) from None
    state = read_state(name) or state
    state["apiserver"] = {"pid": ready.get("pid", proc.pid), "port": ready.get("port")}
    state.setdefault("processes", {})["apiserver"] = proc.pid
    _write_json(cfg.state_file, state)
    return f"started apiserver ({proc.pid}) on 127.0.0.1:{ready.get('port')}"


def api_command(name: str, verb: str) -> int:
    try:
        line = api_stop(name) if verb == "api-stop" else api_start(name)
    except (ValueError, LabError) as e:
        _say(str(e))
        return 1
    print(line)
    return 0


# --- down -------------------------------------------------------------------------------------

def down(name: str) -> list[str]:
    """Remove lab `name`: its processes, namespaces and state. Returns what it removed, one
    line each; harmless to call for a lab that is half there or not there at all."""
    cfg = LabConfig(name=name)
    state = read_state(name) or {}
    removed = []
    # again until none is found: a kubelet may start a CNI plugin while it is being ended, and
    # that plugin would outlive the first round and write under the state directory after it
    # is removed (seen after a soak bench: empty plugin-root directories left in /run)
    for _ in range(5):
        pids = find_processes(name, state.get("token"))
        if not pids:
            break
        killed = end_processes(pids)
        removed.append(f"ended processes {' '.join(map(str, pids))}"
                       + (f" (SIGKILL: {' '.join(map(str, killed))})" if killed else ""))
    for ns in topology.remove(cfg.netns_prefix):
        removed.append(f"deleted netns {ns}")
    left = topology.list_netns(cfg.netns_prefix)
    if left:
        removed.append(f"could not delete netns {' '.join(left)}")
    if cfg.state_dir.exists():
        shutil.rmtree(cfg.state_dir, ignore_errors=True)
        removed.append(f"removed {cfg.state_dir}")
    return removed


def down_command(name: str) -> int:
    try:
        check_name(name)
    except ValueError as e:
        _say(str(e))
        return 1
    lines = down(name)
    for line in lines:
        print(line)
    if not lines:
        print(f"lab {name}: nothing to remove")
    return 1 if any(line.startswith("could not") for line in lines) else 0


# --- status -----------------------------------------------------------------------------------

def api_client(cfg: LabConfig):
    """A kubernetes ApiClient for the host kubeconfig of this lab."""
    from kubernetes import config as k8s_config
    return k8s_config.new_client_from_config(config_file=str(cfg.kubeconfig))


def read_pods_json(cfg: LabConfig) -> dict[str, dict]:
    """All kubelets' pods.json merged: uid -> {namespace, name, netns, ip, containerID, pid}."""
    pods: dict[str, dict] = {}
    for f in sorted((cfg.state_dir / "nodes").glob("*/pods.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for uid, entry in data.items():
            pods[uid] = dict(entry, node=entry.get("node", f.parent.name))
    return pods


def plan_node_addresses(cfg: LabConfig, node: str) -> list[str]:
    """Every address `node` has on the underlay, with its prefix length: IPv4 always, IPv6 when
    the lab's family includes it."""
    i = node_index(node)
    out = [f"{cfg.node_ip(i)}/{ipaddress.ip_network(cfg.node_subnet).prefixlen}"]
    if cfg.has_ipv6:
        out.append(f"{cfg.node_ip6(i)}/{ipaddress.ip_network(cfg.node_subnet6).prefixlen}")
    return out


def render_status(cfg: LabConfig, nodes: list[dict], pods: list[dict], local: dict[str, dict]) -> dict:
    """The `status --json` document from API objects (plain dicts) and the kubelets' pods.json."""
    by_key = {(p.get("namespace"), p.get("name")): p for p in local.values()}
    out_nodes = []
    for n in sorted(nodes, key=lambda o: o["metadata"]["name"]):
        name = n["metadata"]["name"]
        addr = next((a["address"] for a in n.get("status", {}).get("addresses", [])
                     if a.get("type") == "InternalIP"), None)
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in n.get("status", {}).get("conditions") or [])
        out_nodes.append({"name": name, "status": "Ready" if ready else "NotReady", "address": addr,
                          "addresses": plan_node_addresses(cfg, name),
                          "podCIDR": n.get("spec", {}).get("podCIDR"),
                          "podCIDRs": list(parse_node(n).pod_cidrs),
                          "netns": cfg.node_netns(name), "cniConfDir": str(cfg.cni_conf_dir(name)),
                          "cniBinDir": str(cfg.cni_bin_dir(name)),
                          "agentSocket": str(cfg.agent_socket(name))})
    out_pods = []
    for p in sorted(pods, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
        meta = p["metadata"]
        entry = local.get(meta.get("uid")) or by_key.get((meta.get("namespace"), meta["name"])) or {}
        out_pods.append({"namespace": meta.get("namespace"), "name": meta["name"],
                         "node": p.get("spec", {}).get("nodeName"), "netns": entry.get("netns"),
                         "ip": p.get("status", {}).get("podIP") or entry.get("ip"),
                         "ips": [i.get("ip") for i in p.get("status", {}).get("podIPs") or []
                                 if isinstance(i, dict) and i.get("ip")]
                                or list(entry.get("ips") or ([entry["ip"]] if entry.get("ip") else []))})
    return {"nodes": out_nodes, "pods": out_pods}


def render_table(doc: dict) -> str:
    """The `status` table: a row per node and per pod, every address of each. A column holding
    several values joins them with commas, primary family first, as kubectl joins a LoadBalancer's
    EXTERNAL-IPs: one row per object keeps the table greppable, and a dual-stack pod's row
    grows by its IPv6 address (~20 characters) instead of becoming two rows."""
    def table(header: list[str], rows: list[list]) -> list[str]:
        rows = [header] + [["<none>" if v in (None, "") else str(v) for v in r] for r in rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines = table(["NODE", "STATUS", "ADDRESS", "PODCIDR", "NETNS"],
                  [[n["name"], n["status"], ",".join(plan_table_addresses(n)),
                    ",".join(n["podCIDRs"]) or n["podCIDR"], n["netns"]] for n in doc["nodes"]])
    lines.append("")
    lines += table(["NAMESPACE", "POD", "NODE", "IP", "NETNS"],
                   [[p["namespace"], p["name"], p["node"], ",".join(p["ips"]) or p["ip"], p["netns"]]
                    for p in doc["pods"]])
    return "\n".join(lines)


def plan_table_addresses(node: dict) -> list[str]:
    """A status node's underlay addresses without their prefix lengths, its Node's InternalIP
    first (an ipv6 lab's underlay keeps IPv4, which its Nodes do not report)."""
    bare = [a.partition("/")[0] for a in node["addresses"]]
    return sorted(bare, key=lambda a: a != node["address"])


def status(name: str) -> dict:
    """The lab's nodes and pods (see render_status). Raises LabError if it is not up."""
    cfg = load_config(name)
    if not cfg.kubeconfig.exists():
        raise LabError(f"lab {name} is not up (no {cfg.kubeconfig})")
    from kubernetes import client as k8s

    client = api_client(cfg)
    try:
        # Raw JSON (_preload_content=False): plain dicts with the API's own field names.
        api = k8s.CoreV1Api(client)
        nodes = json.loads(api.list_node(_preload_content=False, _request_timeout=10).data)["items"]
        pods = json.loads(api.list_pod_for_all_namespaces(
            _preload_content=False, _request_timeout=10).data)["items"]
    except Exception as e:
        raise LabError(f"lab {name}: the API server does not answer: {e}") from e
    finally:
        client.close()
    return render_status(cfg, nodes, pods, read_pods_json(cfg))


def status_command(name: str, as_json: bool = False) -> int:
    try:
        doc = status(name)
    except LabError as e:
        _say(str(e))
        return 1
    print(json.dumps(doc, indent=2) if as_json else render_table(doc))
    return 0


def kubeconfig_command(name: str) -> int:
    path = LabConfig(name=name).kubeconfig
    if not path.exists():
        _say(f"lab {name} is not up (no {path})")
        return 1
    print(path)
    return 0
