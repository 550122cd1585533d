"""The CNI executable (`kubeweft-cni`, installed as "kubeweft"): a thin shim over gRPC.

It checks the environment and the configuration itself (so errors carry the spec's codes even
when the agent is down), answers VERSION itself and forwards ADD, DEL, CHECK, STATUS and GC to
the node agent on its unix socket. It imports only the standard library, grpc and the proto
stubs: pyroute2 costs 120-150 ms (DESIGN.md, decision 1), so the datapath is imported only on
the one path that needs it, DEL with the agent down. stdout carries the result or the error
JSON and nothing else; logs go to stderr, or to the configuration's logFile.
"""
from __future__ import annotations

import json
import os
import sys
import time

from . import spec
from .errors import PLUGIN_NOT_AVAILABLE, TRY_AGAIN_LATER, CniError

DEADLINES = {"ADD": 20.0, "DEL": 10.0, "CHECK": 10.0, "STATUS": 10.0, "GC": 10.0}
AGENT_STATE = "agent.json"     # written by the agent into its data dir: podCIDR, bridge (for DEL)

_log_file: str = ""


def log(msg: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} kubeweft-cni[{os.getpid()}] {msg}\n"
    try:
        if _log_file:
            with open(_log_file, "a") as f:
                f.write(line)
        else:
            sys.stderr.write(line)
    except OSError:
        pass


def main() -> int:
    stdin = b"" if sys.stdin is None or sys.stdin.closed else sys.stdin.buffer.read()
    version = spec.peek_version(stdin) or spec.LATEST
    if version not in spec.SUPPORTED_VERSIONS:
        version = spec.LATEST
    try:
        if os.environ.get("CNI_COMMAND") == "VERSION":
            _emit(spec.render_version_info(spec.peek_version(stdin)))
            return 0
        inv = spec.parse_env(os.environ)
        conf = spec.parse_config(stdin, inv.command)
        global _log_file
        _log_file = conf.log_file
        result = forward(inv, conf, stdin)
        if result:
            sys.stdout.buffer.write(result)
            sys.stdout.flush()
        return 0
    except CniError as e:
        log(f"{os.environ.get('CNI_COMMAND', '?')} {os.environ.get('CNI_CONTAINERID', '')}: "
            f"error {e.code}: {e}")
        _emit(e.to_dict(version))
        return 1
    except Exception as e:  # noqa: BLE001 - never a traceback on stdout: the runtime parses it
        log(f"internal error: {e!r}")
        _emit(CniError(100, "internal error", repr(e)).to_dict(version))
        return 1


def _emit(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc))
    sys.stdout.flush()


def forward(inv: spec.Invocation, conf: spec.NetConf, stdin: bytes) -> bytes:
    """Send the call to the agent; return the result bytes (empty for all but ADD)."""
    import grpc

    from proto import kubeweft_pb2, kubeweft_pb2_grpc

    req = kubeweft_pb2.CniRequest(command=inv.command, container_id=inv.container_id,
                                  netns=inv.netns, ifname=inv.ifname, args=inv.raw_args,
                                  path=":".join(inv.path), config=stdin)
    try:
        with grpc.insecure_channel(f"unix:{conf.socket}") as channel:
            stub = kubeweft_pb2_grpc.CniStub(channel)
            call = getattr(stub, {"GC": "GC"}.get(inv.command, inv.command.capitalize()))
            resp = call(req, timeout=DEADLINES[inv.command])
    except grpc.RpcError as e:
        return agent_down(inv, conf, f"{e.code().name}: {e.details()}")
    if resp.HasField("error"):
        raise CniError(resp.error.code, resp.error.msg, resp.error.details)
    return resp.result


def agent_down(inv: spec.Invocation, conf: spec.NetConf, why: str) -> bytes:
    """The agent is unreachable: ADD, CHECK, GC ask to try again, STATUS says unavailable, and DEL
    cleans up in this process (DEL must always succeed)."""
    log(f"{inv.command} {inv.container_id}: agent at {conf.socket} unreachable ({why})")
    if inv.command == "DEL":
        delete_in_process(inv, conf)
        return b""
    if inv.command == "STATUS":
        raise CniError(PLUGIN_NOT_AVAILABLE, "Plugin not available",
                       f"kubeweft agent at {conf.socket} is not answering: {why}")
    raise CniError(TRY_AGAIN_LATER, "Try again later",
                   f"kubeweft agent at {conf.socket} is not answering: {why}")


def delete_in_process(inv: spec.Invocation, conf: spec.NetConf) -> None:
    """DEL without the agent: the same datapath and IPAM code, imported only here. Best-effort:
    every step runs even if an earlier one failed."""
    from pathlib import Path

    from . import datapath

    steps = []
    host_veth = datapath.host_veth_name(inv.container_id, inv.ifname)
    data_dir = Path(conf.data_dir) if conf.data_dir else None
    state = _agent_state(data_dir)
    alloc = None
    if state.get("podCIDR"):
        try:
            from . import ipam
            alloc = ipam.Allocator(data_dir, state["podCIDR"])
        except Exception as e:  # noqa: BLE001 - best-effort: still remove the veth
            log(f"DEL {inv.container_id}: IPAM store unusable: {e!r}")
    # the sandbox's ifname is ours only if we hold a reservation for it (see plugin.delete)
    netns = inv.netns or None
    if netns and alloc is not None and alloc.lookup(inv.container_id, inv.ifname) is None:
        netns = None
    steps.append(("unwire", lambda: datapath.unwire_pod(netns, inv.ifname, host_veth)))
    if alloc is not None:
        steps.append(("release", lambda: alloc.release(inv.container_id, inv.ifname)))

    def hostports() -> None:
        try:
            from . import nft
        except ImportError:
            return
        nft.clear_hostports(inv.container_id)
    steps.append(("hostports", hostports))
    for name, step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - best-effort: log and go on
            log(f"DEL {inv.container_id} in-process {name} failed: {e!r}")
    log(f"DEL {inv.container_id}/{inv.ifname} done in-process")


def _agent_state(data_dir) -> dict:
    if data_dir is None:
        return {}
    try:
        return json.loads((data_dir / AGENT_STATE).read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
