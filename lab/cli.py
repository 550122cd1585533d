"""`kubeweft lab VERB`: the lab's command line. Parsing only; each verb lives in its module.

Every verb takes --name (default $KUBEWEFT_LAB or "kw") to pick one of several labs.
"""
from __future__ import annotations

import argparse
import sys

from .config import DEFAULT_NAME


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeweft lab", description="the embedded netns cluster")
    p.add_argument("--name", default=DEFAULT_NAME, help="which lab (prefix of its namespaces)")
    sub = p.add_subparsers(dest="verb", required=True)

    up = sub.add_parser("up", help="build the lab; returns when every node is Ready")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--cni", choices=("reference", "kubeweft", "none"), default=None,
                    help="the CNI plugin the kubelets run (default: kubeweft, installed with kubectl "
                         "apply -k deploy/lab); none: the nodes stay NotReady until a CNI config appears "
                         "in their conf dir (a CNI DaemonSet's job)")
    up.add_argument("--backend", choices=("vxlan", "host-gw"), default=None,
                    help="kubeweft's cross-node backend (kubeweft-config's backend; default vxlan)")
    up.add_argument("--ip-family", default=None, metavar="ipv4|ipv6|dual",
                    help="the cluster's IP families, as kind's ipFamily (default ipv4; dual: IPv4 "
                         "primary). The underlay keeps its IPv4 addresses in every mode")
    up.add_argument("--timeout", type=float, default=120.0)

    na = sub.add_parser("node-add", help="add nodes to a running lab; returns when they are Ready")
    na.add_argument("--count", type=int, default=1)
    na.add_argument("--timeout", type=float, default=120.0)
    nr = sub.add_parser("node-remove", help="stop a node's kubelet and agent, delete its Node, "
                        "pods, netns and state")
    nr.add_argument("node", metavar="NODE")

    rs = sub.add_parser("node-restart", help="reboot a node: its processes and namespaces gone, its "
                        "/run emptied, /var/lib kept; returns when it is Ready again")
    rs.add_argument("node", metavar="NODE")
    rs.add_argument("--timeout", type=float, default=120.0)

    sub.add_parser("down", help="remove everything the lab made")
    sub.add_parser("api-stop", help="stop the API server, keeping its objects (the rest of the "
                   "lab runs on)")
    sub.add_parser("api-start", help="start the stopped API server again on the same addresses "
                   "and token, with the objects it had")

    st = sub.add_parser("status", help="nodes and pods")
    st.add_argument("--json", action="store_true")

    sub.add_parser("kubeconfig", help="print the path of a kubeconfig for the host's kubectl")

    for verb, target in (("exec", "NS/POD"), ("node-exec", "NODE")):
        e = sub.add_parser(verb, help=f"run a command in {target}'s network namespace")
        e.add_argument("target", metavar=target)
        e.add_argument("cmd", nargs=argparse.REMAINDER)
    e = sub.add_parser("ext-exec", help="run a command on the external client host")
    e.add_argument("cmd", nargs=argparse.REMAINDER)

    pr = sub.add_parser("probe", help="connect from a pod, a node or the external host")
    pr.add_argument("--from", dest="source", required=True, metavar="NS/POD|node:NAME|external")
    pr.add_argument("target", metavar="TARGET:PORT")
    pr.add_argument("--udp", action="store_true")
    pr.add_argument("--count", type=int, default=1)
    pr.add_argument("--timeout", type=float, default=2.0)
    pr.add_argument("--json", action="store_true")

    mx = sub.add_parser("matrix", help="probe every pod pair on their ports and draw the table")
    mx.add_argument("--json", action="store_true")
    mx.add_argument("--timeout", type=float, default=1.0)
    mx.add_argument("--namespace", "-n", action="append", default=None,
                    help="only pods in these namespaces (repeatable)")
    mx.add_argument("--world", choices=["xyz"], default=None,
                    help="the upstream netpol world (namespaces x y z, pods a b c, ports 80/81 "
                         "TCP+UDP), created if missing")
    mx.add_argument("--via", choices=["pod", "service"], default="pod",
                    help="with --world: probe pod IPs or the pods' ClusterIP Services")
    mx.add_argument("--expect", metavar="FILE", default=None,
                    help="with --world: NetworkPolicies (YAML/JSON, '-' stdin) to compare with")

    dm = sub.add_parser("demo", help="the walkthrough: up, pods, a Service, probes, the matrix, down")
    dm.add_argument("--ip-family", default=None, metavar="ipv4|ipv6|dual",
                    help="the demo lab's IP families (as `up --ip-family`; default ipv4)")
    dm.add_argument("--cni", choices=("reference", "kubeweft"), default=None,
                    help="the demo lab's CNI (as `up --cni`; default kubeweft)")
    sub.add_parser("tour", help="run docs/tour.md's commands against the lab --name and check "
                   "what they print (a lab of that name is brought up, and removed after, if none runs)")
    return p


def _strip_dashdash(cmd: list[str]) -> list[str]:
    return cmd[1:] if cmd and cmd[0] == "--" else cmd


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verb == "up":
        from . import lifecycle
        return lifecycle.up_command(args.name, nodes=args.nodes, cni=args.cni, timeout=args.timeout,
                                    backend=args.backend, ip_family=args.ip_family)
    if args.verb == "node-add":
        from . import lifecycle
        return lifecycle.node_add_command(args.name, count=args.count, timeout=args.timeout)
    if args.verb == "node-remove":
        from . import lifecycle
        return lifecycle.node_remove_command(args.name, args.node)
    if args.verb == "node-restart":
        from . import lifecycle
        return lifecycle.node_restart_command(args.name, args.node, timeout=args.timeout)
    if args.verb == "down":
        from . import lifecycle
        return lifecycle.down_command(args.name)
    if args.verb in ("api-stop", "api-start"):
        from . import lifecycle
        return lifecycle.api_command(args.name, args.verb)
    if args.verb == "status":
        from . import lifecycle
        return lifecycle.status_command(args.name, as_json=args.json)
    if args.verb == "kubeconfig":
        from . import lifecycle
        return lifecycle.kubeconfig_command(args.name)
    if args.verb in ("exec", "node-exec", "ext-exec"):
        from . import shell
        cmd = _strip_dashdash(args.cmd)
        if not cmd:
            print(f"kubeweft lab {args.verb}: no command given", file=sys.stderr)
            return 2
        return shell.exec_command(args.name, args.verb, getattr(args, "target", None), cmd)
    if args.verb == "probe":
        from . import probe
        return probe.probe_command(args.name, args.source, args.target, udp=args.udp,
                                   count=args.count, timeout=args.timeout, as_json=args.json)
    if args.verb == "matrix":
        from . import matrix
        if args.world:
            return matrix.world_command(args.name, via=args.via, expect=args.expect,
                                        as_json=args.json, timeout=args.timeout)
        return matrix.matrix_command(args.name, as_json=args.json, timeout=args.timeout,
                                     namespaces=args.namespace)
    if args.verb == "demo":
        from . import demo
        return demo.demo_command(args.name, ip_family=args.ip_family, cni=args.cni)
    if args.verb == "tour":
        from . import tour
        return tour.tour_command(args.name)
    return 2


if __name__ == "__main__":
    sys.exit(main())
