"""`python -m kubeweft.lab.ingress --kubeconfig K --listen-http 80 --listen-https 443 --state-dir DIR`:
the Ingress controller with its nginx, in the network namespace it is started in.

Flags are ingress-nginx's where they mean the same (--ingress-class, --controller-class,
--watch-ingress-without-class, --publish-service, --publish-status-address, --update-status,
--http-port/--https-port, --healthz-port), so its controller image's arguments run as they are;
flags of ingress-nginx this controller has no use for (--election-id, --configmap,
--validating-webhook...) are accepted and ignored, with a log line. Without --kubeconfig the
in-cluster configuration (the pod's ServiceAccount) is used. POD_NAME and POD_NAMESPACE, as
ingress-nginx reads them, name the pod whose node address the status shows when nothing is
published. SIGTERM stops nginx gracefully, then the controller.
"""
from __future__ import annotations

import argparse
import http.server
import logging
import os
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger("kubeweft.lab.ingress")


def _flag(text: str) -> bool:
    """A Go boolean flag's value."""
    if text.lower() in ("1", "t", "true"):
        return True
    if text.lower() in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m kubeweft.lab.ingress")
    p.add_argument("--kubeconfig", default="", help="kubeconfig file; in-cluster config when empty")
    p.add_argument("--listen-http", "--http-port", dest="http_port", type=int, default=80)
    p.add_argument("--listen-https", "--https-port", dest="https_port", type=int, default=443)
    p.add_argument("--state-dir", default="",
                   help="nginx's configuration, pid, logs and temp files (default /run/kubeweft-ingress/<pod>)")
    p.add_argument("--ingress-class", default="nginx", help="the IngressClass name (and annotation value)")
    p.add_argument("--controller-class", default="k8s.io/ingress-nginx", help="spec.controller of our classes")
    p.add_argument("--watch-ingress-without-class", type=_flag, nargs="?", const=True, default=False)
    p.add_argument("--publish-service", default="", metavar="NS/NAME",
                   help="the Service whose address the Ingresses' status shows")
    p.add_argument("--publish-status-address", default="", help="addresses the status shows, comma-separated")
    p.add_argument("--update-status", type=_flag, nargs="?", const=True, default=True)
    p.add_argument("--healthz-port", type=int, default=10254, help="/healthz for probes; 0: none")
    p.add_argument("--nginx", default="nginx", help="the nginx binary")
    p.add_argument("-v", "--v", type=int, default=1, help="log verbosity (2: debug)")
    return p.parse_known_args(argv)


def serve_healthz(port: int, healthy) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == "/healthz" and healthy()
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b"ok" if ok else b"not ready")

        def log_message(self, *args) -> None:
            pass
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    args, ignored = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.v >= 2 else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s ingress %(levelname)s %(message)s")
    if ignored:
        log.info("ignoring flags of ingress-nginx this controller does not use: %s", " ".join(ignored))
    from kubernetes import config

    from .controller import IngressController, Options

    pod_name, pod_ns = os.environ.get("POD_NAME", ""), os.environ.get("POD_NAMESPACE", "")
    state = Path(args.state_dir) if args.state_dir else \
        Path("/run/kubeweft-ingress") / (f"{pod_ns}-{pod_name}" if pod_name else str(os.getpid()))
    api = (config.new_client_from_config(config_file=args.kubeconfig) if args.kubeconfig
           else _in_cluster_client())
    ctl = IngressController(api, Options(
        state_dir=state, ingress_class=args.ingress_class, controller_class=args.controller_class,
        watch_ingress_without_class=args.watch_ingress_without_class, publish_service=args.publish_service,
        publish_status_address=args.publish_status_address, update_status=args.update_status,
        http_port=args.http_port, https_port=args.https_port, pod_name=pod_name, pod_namespace=pod_ns,
        nginx_binary=args.nginx))
    signal.signal(signal.SIGTERM, lambda *_: ctl.stopping.set() or ctl.changed.set())
    signal.signal(signal.SIGINT, lambda *_: ctl.stopping.set() or ctl.changed.set())
    healthz = serve_healthz(args.healthz_port, lambda: ctl.nginx.running) if args.healthz_port else None
    try:
        ctl.start()
        log.info("listening on :%d (HTTP) and :%d (HTTPS), state in %s, nginx pid %d", args.http_port,
                 args.https_port, state, ctl.nginx.proc.pid)
        print("ready", flush=True)
        ctl.run()
    finally:
        ctl.stop()
        if healthz is not None:
            healthz.shutdown()
    return 1 if ctl.failed else 0


def _in_cluster_client():
    from kubernetes import client, config
    config.load_incluster_config()
    return client.ApiClient()


if __name__ == "__main__":
    sys.exit(main())
