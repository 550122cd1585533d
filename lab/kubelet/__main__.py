"""`python -m kubeweft.lab.kubelet --lab NAME --node NODE`: started by lab.lifecycle inside the
node's netns."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from ..config import LabConfig
from .kubelet import Kubelet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kubeweft.lab.kubelet")
    p.add_argument("--lab", required=True, help="the lab's name")
    p.add_argument("--node", required=True, help="this node's name, e.g. node1")
    p.add_argument("--verbose", "-v", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format=f"%(asctime)s %(levelname)s kubelet[{args.node}] %(threadName)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    cfg = LabConfig(name=args.lab)
    try:
        cfg = LabConfig(**json.loads(cfg.state_file.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        logging.getLogger("kubelet").error("cannot read the lab's config from %s: %s", cfg.state_file, e)
        return 1
    # SIGTERM ends the kubelet only: pods keep running, as with a real kubelet restart
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Kubelet(cfg, args.node).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
