"""`kubeweft VERB ...`: one entry point, each verb owned by the package that implements it.

Imports are deferred to the chosen verb so that `kubeweft lab status` does not pay for grpc and
`kubeweft agent` does not pay for the lab.
"""
from __future__ import annotations

import sys

USAGE = """usage: kubeweft VERB [ARGS...]

verbs:
  agent         run the node agent (CNI server, service proxy, policy)
  install-cni   copy the CNI executable and write the conflist
  cleanup       remove kubeweft's CNI executable and conflist from this node (after an uninstall)
  lab           the embedded cluster: up, down, status, exec, probe, matrix, demo ...
  services      what this node's service table does with each Service frontend (from the kernel)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb == "lab":
        from kubeweft.lab.cli import main as run
    elif verb == "agent":
        from kubeweft.proxy.agent import main as run
    elif verb == "install-cni":
        from kubeweft.cni.install import main as run
    elif verb == "cleanup":
        from kubeweft.cni.cleanup import main as run
    elif verb == "services":
        from kubeweft.proxy.service_proxy import services_command as run
    else:
        print(f"kubeweft: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    return run(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
