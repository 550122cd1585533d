"""The Ingress controller with real nginx, end to end in scratch network namespaces:

    <lab>-underlay   bridge lan0 192.168.56.1/24: the lab API server listens here (6443)
    ingress          192.168.56.20: `python -m kubeweft.lab.ingress` and its nginx (80, 443)
    web, api         192.168.56.31 / .32: the lab workload on 8080 (answers /headers)
    client           192.168.56.40: HTTP and HTTPS requests (SNI), from a thread in this netns

IngressClass, Services, EndpointSlices, a TLS Secret and the Ingresses are written through the
API (kubectl, and `kubectl create ingress`'s protobuf body). Every process is ended by PID and
every namespace removed, also on failure. Also: `nginx -t` on a rendered configuration, and a
refused configuration never going live.
"""
from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubeweft.lab import netns
from kubeweft.lab.ingress import certs, render
from kubeweft.lab.ingress.controller import IngressController, Options
from kubeweft.lab.ingress.nginx import Nginx
from kubeweft.lab.ingress.views import ingress_view, secret_view, service_view, slice_view

from .apiserver_proc import Server, terminate
from .ingress_helpers import backend_of, nginx_404, steady
from .ingress_helpers import fetch as fetch_from
from .netns_helpers import scratch_netns
from .overlay_helpers import workload_in
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

ROOT = Path(__file__).resolve().parents[2]
INGRESS_IP, CLIENT_IP = "192.168.56.20", "192.168.56.40"
WEB_IP, API_IP = "192.168.56.31", "192.168.56.32"


# --- the topology -----------------------------------------------------------------------------

def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, timeout=10)


def wire(underlay: str, target: str, address: str, index: int) -> None:
    """A veth made inside the underlay, its peer moved straight into `target` as eth0."""
    port = f"v{index}"
    ip(underlay, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", target)
    ip(underlay, "link", "set", port, "master", "lan0", "up")
    ip(target, "addr", "add", f"{address}/24", "dev", "eth0")
    ip(target, "link", "set", "eth0", "up")
    ip(target, "link", "set", "lo", "up")


@contextlib.contextmanager
def process(argv: list[str], ns: str, log: Path, env: dict | None = None):
    """argv inside netns `ns`, logging to `log`; SIGTERM then SIGKILL by PID afterwards."""
    out = open(log, "wb")  # noqa: SIM115 (open while the process runs)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=out, env=env, text=True,
                            preexec_fn=netns.preexec(ns))  # noqa: PLW1509
    try:
        yield proc
    finally:
        terminate(proc)
        out.close()


def children(pid: int) -> list[int]:
    try:
        return [int(c) for t in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def fetch(ns: str, host: str, path: str, **kw) -> dict:
    return fetch_from(ns, INGRESS_IP, host, path, **kw)


# --- API objects --------------------------------------------------------------------------------

def selectorless_service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpoint_slice(service: str, address: str) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}]}


def apply(server: Server, *objs: dict) -> None:
    server.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


@pytest.fixture
def world(tmp_path):
    """The API server in its underlay, the two backends, the controller; yields what the test needs."""
    with scratch_netns("h4i", suffix="-underlay") as [underlay], scratch_netns("h4j", 4) as spaces:
        lab = underlay.removesuffix("-underlay")
        ingress_ns, web_ns, api_ns, client_ns = spaces
        ip(underlay, "link", "set", "lo", "up")
        ip(underlay, "link", "add", "lan0", "type", "bridge")
        ip(underlay, "addr", "add", "192.168.56.1/24", "dev", "lan0")
        ip(underlay, "link", "set", "lan0", "up")
        for i, (ns, addr) in enumerate(((ingress_ns, INGRESS_IP), (web_ns, WEB_IP), (api_ns, API_IP),
                                        (client_ns, CLIENT_IP))):
            wire(underlay, ns, addr, i)
        server = Server(tmp_path, lab)
        try:
            with workload_in(web_ns, 8080, "default/web-1"), workload_in(api_ns, 8080, "default/api-1"):
                state = tmp_path / "ingress"
                apply(server, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ingress-nginx"}},
                      {"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
                       "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                                "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}})
                argv = [sys.executable, "-m", "kubeweft.lab.ingress", "--kubeconfig",
                        str(tmp_path / lab / "kubeconfig-nodes"), "--listen-http", "80", "--listen-https", "443",
                        "--state-dir", str(state), "--publish-service=ingress-nginx/ingress-nginx-controller",
                        "--election-id=ingress-nginx-leader", "--healthz-port", "0"]
                env = dict(os.environ, HOME=str(tmp_path))
                with process(argv, ingress_ns, tmp_path / "controller.log", env) as ctl:
                    ready = concurrent.futures.ThreadPoolExecutor(1).submit(ctl.stdout.readline)
                    assert "ready" in ready.result(timeout=60), (tmp_path / "controller.log").read_text()
                    master = int((state / "nginx.pid").read_text())
                    workers = children(master)
                    try:
                        yield {"server": server, "client": client_ns, "ingress": ingress_ns, "ctl": ctl,
                               "master": master, "workers": workers, "state": state, "tmp": tmp_path}
                    finally:
                        ctl.send_signal(signal.SIGTERM)
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            ctl.wait(15)
                        for pid in [master, *workers]:
                            if alive(pid):                  # never left behind, even if the test failed
                                os.kill(pid, signal.SIGKILL)
        finally:
            server.stop()


def test_ingress_routes_http_and_https_to_the_services_endpoints(world):
    server, client = world["server"], world["client"]
    tmp = world["tmp"]

    # nginx is the controller's child, in the controller's netns, on 80 and 443
    assert Path(f"/proc/{world['master']}/stat").read_text().split()[3] == str(world["ctl"].pid)
    assert os.stat(f"/proc/{world['master']}/ns/net").st_ino == os.stat(netns.path(world["ingress"])).st_ino
    listening = netns.run(world["ingress"], ["ss", "-Hltnp"], capture_output=True, text=True, timeout=10).stdout
    assert ":80 " in listening and ":443 " in listening and "nginx" in listening

    # nothing yet: every host gets the 404 default backend
    assert fetch(client, "a.example", "/headers")["status"] == 404

    cert, key = certs.make_certificate("a.example", ("a.example",))
    (tmp / "a.crt").write_bytes(cert)
    (tmp / "a.key").write_bytes(key)
    server.kubectl("create", "secret", "tls", "a-tls", "--cert", str(tmp / "a.crt"), "--key", str(tmp / "a.key"))
    apply(server, {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                   "metadata": {"name": "nginx", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
                   "spec": {"controller": "k8s.io/ingress-nginx"}},
          selectorless_service("web"), selectorless_service("api"),
          endpoint_slice("web", WEB_IP), endpoint_slice("api", API_IP))
    # Prefix /headers (by path element), Exact /whoami, TLS for a.example: kubectl's protobuf body
    server.kubectl("create", "ingress", "site", "--class=nginx", "--rule=a.example/headers*=web:http,tls=a-tls",
                   "--rule=a.example/whoami=api:http")
    apply(server, {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                   "metadata": {"name": "plain", "namespace": "default"},
                   "spec": {"rules": [{"host": "b.example", "http": {"paths": [
                       {"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}})

    def served_by_web() -> dict | None:
        r = fetch(client, "a.example", "/headers/page", tls=True)
        return r if backend_of(r) == "default/web-1" else None
    hit = steady("a.example/headers over HTTPS", served_by_web, timeout=15)
    # the certificate served for SNI a.example is the Secret's
    assert hit["cert"] == ssl.PEM_cert_to_DER_cert(cert.decode())
    seen = hit["json"]["headers"]
    assert seen["x-forwarded-for"] == CLIENT_IP and seen["x-real-ip"] == CLIENT_IP
    assert seen["x-forwarded-proto"] == "https" and seen["host"] == "a.example"
    assert hit["json"]["client"].startswith(INGRESS_IP + ":")        # nginx connects to the pod itself

    # host and path routing, Prefix by path element, Exact exactly
    # (the host's own default backend is nginx's 404 page, never a backend's)
    assert backend_of(fetch(client, "a.example", "/headers", tls=True)) == "default/web-1"
    assert nginx_404(fetch(client, "a.example", "/headersx", tls=True))
    assert backend_of(fetch(client, "a.example", "/whoami", tls=True)) == "default/api-1"
    assert nginx_404(fetch(client, "a.example", "/whoami/x", tls=True))
    # a host with TLS redirects plain HTTP; a host without serves it
    redirect = fetch(client, "a.example", "/headers/x")
    assert redirect["status"] == 308 and redirect["location"] == "https://a.example/headers/x"
    def plain_by_web() -> dict | None:
        r = fetch(client, "b.example", "/headers", headers={"X-Forwarded-For": "203.0.113.66"})
        return r if backend_of(r) == "default/web-1" else None
    plain = wait_for("b.example over HTTP", plain_by_web, timeout=10)
    # the client's own X-Forwarded-For is not trusted: the backend sees the client's address
    assert plain["json"]["headers"]["x-forwarded-for"] == CLIENT_IP
    assert plain["json"]["headers"]["x-forwarded-proto"] == "http"
    # an SNI no Secret serves gets the default (fake) certificate
    other = fetch(client, "c.example", "/headers", tls=True)
    assert nginx_404(other) and other["cert"] != hit["cert"]
    assert certs.FAKE_CN.encode() in other["cert"]

    # the default backend: an Ingress with only spec.defaultBackend takes every unmatched host;
    # it names no class, so the API server gives it the default one
    apply(server, {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                   "metadata": {"name": "fallback", "namespace": "default"},
                   "spec": {"defaultBackend": {"service": {"name": "api", "port": {"number": 80}}}}})
    wait_for("the default backend", lambda: backend_of(fetch(client, "c.example", "/headers")) == "default/api-1",
             timeout=10)
    assert backend_of(fetch(client, "b.example", "/headers")) == "default/web-1"

    # an Ingress update is served within 2 s
    started = time.monotonic()
    server.kubectl("patch", "ingress", "plain", "--type=json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/rules/0/http/paths/0/backend/service/name", "value": "api"}]))
    wait_for("b.example moved to api", lambda: backend_of(fetch(client, "b.example", "/headers")) == "default/api-1",
             timeout=2.0, interval=0.05)
    assert time.monotonic() - started < 2.0

    # kubectl get ingress shows the published Service's load-balancer address on every Ingress
    lb_ip = wait_for("the LoadBalancer IP", lambda: server.kubectl(
        "get", "svc", "-n", "ingress-nginx", "ingress-nginx-controller", "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}").stdout.strip())

    def published() -> dict[str, list[str]] | None:
        lines = server.kubectl("get", "ingress", "--no-headers").stdout.splitlines()
        rows = {r[0]: r for r in (line.split() for line in lines if line.strip())}
        return rows if len(rows) == 3 and all(lb_ip in r for r in rows.values()) else None
    rows = wait_for("status addresses", published, timeout=10)
    assert rows["fallback"][1] == "nginx" and rows["fallback"][2] == "*"
    assert rows["site"][1:5] == ["nginx", "a.example", lb_ip, "80,"]

    # SIGTERM: the controller stops its nginx (master and workers) and exits
    ctl = world["ctl"]
    ctl.send_signal(signal.SIGTERM)
    assert ctl.wait(20) == 0
    wait_for("nginx gone", lambda: not any(alive(p) for p in [world["master"], *world["workers"]]), timeout=10)

    # with nothing published, the status shows the address of the node its pod (POD_NAME,
    # POD_NAMESPACE) runs on, as ingress-nginx's
    apply(server, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node7"},
                   "status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.17"}]}},
          {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "controller-0", "namespace": "ingress-nginx"},
           "spec": {"nodeName": "node7", "containers": [{"name": "controller", "image": "x"}]}})
    server.kubectl("patch", "node", "node7", "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.17"}]}}))
    from kubernetes import config
    api = config.new_client_from_config(config_file=str(server.kubeconfig))
    try:
        local = IngressController(api, Options(state_dir=tmp / "local", pod_name="controller-0",
                                               pod_namespace="ingress-nginx"))
        local.ensure_node_address()
        assert local.addresses() == (("192.168.56.17", ""),)
    finally:
        api.close()


def test_rendered_configuration_passes_nginx_t_and_a_refused_one_never_goes_live(tmp_path):
    cert, key = certs.make_certificate("a.example", ("a.example", "*.w.example"))
    secret = secret_view({"metadata": {"namespace": "default", "name": "a-tls"},
                          "data": {"tls.crt": base64.b64encode(cert).decode(),
                                   "tls.key": base64.b64encode(key).decode()}})
    ing = ingress_view({"metadata": {"namespace": "default", "name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}},
                                 "tls": [{"hosts": ["a.example"], "secretName": "a-tls"}],
                                 "rules": [{"host": h, "http": {"paths": [
                                     {"path": p, "pathType": t, "backend": {"service": {"name": s,
                                                                                      "port": {"number": 80}}}}
                                     for p, t, s in (("/", "Prefix", "web"), ("/a", "Exact", "web"),
                                                     ("/a", "Prefix", "none"), ("/b/", "Prefix", "web"),
                                                     ("/c", "ImplementationSpecific", "web"))]}}
                                           for h in ("a.example", "*.w.example", "")]}})
    svc = service_view({"metadata": {"namespace": "default", "name": "web"},
                        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
    sl = slice_view({"metadata": {"namespace": "default", "name": "web-1",
                                  "labels": {"kubernetes.io/service-name": "web"}},
                     "ports": [{"port": 8080}], "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["fd00::1"]}]})
    plan = render.plan_config([ing], {("default", "web"): svc}, [sl], {("default", "a-tls"): secret})
    nginx = Nginx(tmp_path / "state")
    (nginx.conf_dir / render.DEFAULT_CERT).write_bytes(certs.make_default_certificate())
    settings = render.Settings(str(nginx.state_dir), str(nginx.conf_dir), 18080, 18443)
    ok, out = nginx.apply(render.render_nginx_conf(plan, settings), render.render_files(plan))
    assert ok, out
    live = nginx.conf.read_text()
    assert "server_name ~^(?<subdomain>[\\w-]+)\\.w\\.example$;" in live and "server [fd00::1]:8080" in live
    # nginx refuses this one (an unknown directive): the live configuration stays as it was
    ok, out = nginx.apply(live.replace("server_tokens off;", "server_tokens off; no_such_directive on;"), {})
    assert not ok and "no_such_directive" in out
    assert nginx.conf.read_text() == live
    # nothing of nginx's went to the host's default places
    assert (nginx.state_dir / "logs" / "error.log").exists()
