"""ingress-nginx deployed in the lab as on kind: `kubectl apply -f lab/manifests/ingress-nginx.yaml`
on the shared 3-node lab (kubeweft's CNI and service proxy). The controller runs in its pod with
its ServiceAccount's token, behind the LoadBalancer Service ingress-nginx-controller
(externalTrafficPolicy Local); every request comes from the lab's external host to the Service's
announced address:

    external host --> router --> node of the controller --> service proxy --> controller pod (nginx)
                                                                               --> web / api pods

Host and path routing (Exact and Prefix), the default backend, TLS with the Secret's certificate,
the external client's address in X-Forwarded-For and X-Real-IP, and `kubectl get ingress` showing
the address.
"""
from __future__ import annotations

import base64
import json
import ssl

import pytest
from kubeweft.lab.ingress import certs

from .ingress_helpers import backend_of, fetch, ingress_nginx, nginx_404, steady
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "h14-ingress"


def ingress(name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": NS}, "spec": {"ingressClassName": "nginx", **spec}}


def path(p: str, kind: str, service: str) -> dict:
    return {"path": p, "pathType": kind, "backend": {"service": {"name": service, "port": {"number": 80}}}}


@pytest.fixture(scope="module")
def world(labk, tmp_path_factory):
    """ingress-nginx, two backends (the lab workload of the nginx image, answering on 80) behind
    their Services, a TLS Secret for a.example; yields the controller's address and the cert."""
    lab = labk
    tmp = tmp_path_factory.mktemp("ingress")
    lab.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s", timeout=90)
    lab.kubectl("create", "namespace", NS)
    try:
        with ingress_nginx(lab):
            for app in ("web", "api"):
                lab.kubectl("create", "deployment", app, "-n", NS, "--image=nginx:1.27", "--port=80")
                lab.kubectl("expose", "deployment", app, "-n", NS, "--port=80")
            cert, key = certs.make_certificate("a.example", ("a.example",))
            (tmp / "tls.crt").write_bytes(cert)
            (tmp / "tls.key").write_bytes(key)
            lab.kubectl("create", "secret", "tls", "site-tls", "-n", NS, "--cert", str(tmp / "tls.crt"),
                        "--key", str(tmp / "tls.key"))
            for app in ("web", "api"):
                lab.kubectl("rollout", "status", "-n", NS, f"deployment/{app}", "--timeout=90s", timeout=100)
            address = wait_for("the controller's LoadBalancer address", lambda: lab.kubectl(
                "get", "service", "-n", "ingress-nginx", "ingress-nginx-controller",
                "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}").stdout.strip())
            controller = json.loads(lab.kubectl("get", "pods", "-n", "ingress-nginx", "-o", "json").stdout)["items"]
            yield {"lab": lab, "address": address, "controller": controller[0], "tmp": tmp}
    finally:
        lab.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s",
                    check=False, timeout=90)


def test_the_controller_runs_in_cluster_under_its_service_account(world):
    lab, pod = world["lab"], world["controller"]
    assert pod["spec"]["serviceAccountName"] == "ingress-nginx"
    assert pod["spec"]["containers"][0]["image"].startswith("registry.k8s.io/ingress-nginx/controller:v1.")
    sa = "--as=system:serviceaccount:ingress-nginx:ingress-nginx"
    # what it writes (status) and reads (Secrets everywhere) is granted; the Ingress spec is not
    assert lab.kubectl("auth", "can-i", "patch", "ingresses.networking.k8s.io", "--subresource=status",
                       "-n", NS, sa).stdout.strip() == "yes"
    assert lab.kubectl("auth", "can-i", "watch", "secrets", "-A", sa).stdout.strip() == "yes"
    assert lab.kubectl("auth", "can-i", "patch", "ingresses.networking.k8s.io", "-n", NS, sa,
                       check=False).stdout.strip() == "no"
    # the IngressClass the manifest made names ingress-nginx's controller
    klass = json.loads(lab.kubectl("get", "ingressclass", "nginx", "-o", "json").stdout)
    assert klass["spec"]["controller"] == "k8s.io/ingress-nginx"
    svc = json.loads(lab.kubectl("get", "service", "-n", "ingress-nginx", "ingress-nginx-controller",
                                 "-o", "json").stdout)
    assert (svc["spec"]["type"], svc["spec"]["externalTrafficPolicy"]) == ("LoadBalancer", "Local")


def test_routing_tls_and_the_client_address_from_the_external_host(world):
    lab, address, ext = world["lab"], world["address"], world["lab"].cfg.external_netns
    client_ip = lab.cfg.external_ip

    def apply(*objs: dict) -> None:
        lab.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))

    # before any Ingress, every request gets nginx's 404 (the controller's default backend)
    assert nginx_404(wait_for("the controller answering on its LoadBalancer address",
                              lambda: fetch(ext, address, "a.example", "/headers")))

    apply(ingress("site", {"tls": [{"hosts": ["a.example"], "secretName": "site-tls"}],
                           "rules": [{"host": "a.example", "http": {"paths": [
                               path("/headers", "Prefix", "web"), path("/whoami", "Exact", "api")]}}]}),
          ingress("plain", {"rules": [{"host": "b.example", "http": {"paths": [path("/", "Prefix", "web")]}}]}))
    # a user's `kubectl create ingress` (its protobuf body): only a default backend, for every other host
    lab.kubectl("create", "ingress", "fallback", "-n", NS, "--class=nginx", "--default-backend=api:80")

    def pod_of(host: str, p: str, tls: bool = False) -> str:
        return backend_of(fetch(ext, address, host, p, tls=tls)) or ""

    def from_web(host: str, p: str, tls: bool) -> dict | None:
        r = fetch(ext, address, host, p, tls=tls)
        return r if (backend_of(r) or "").startswith(f"{NS}/web-") else None
    hit = steady("a.example/headers over HTTPS", lambda: from_web("a.example", "/headers/page", True))

    # TLS: the certificate served for SNI a.example is the Secret's, as the API holds it
    secret = json.loads(lab.kubectl("get", "secret", "site-tls", "-n", NS, "-o", "json").stdout)
    served = base64.b64decode(secret["data"]["tls.crt"]).decode()
    assert hit["cert"] == ssl.PEM_cert_to_DER_cert(served)
    # another SNI gets the controller's own (fake) certificate
    assert fetch(ext, address, "c.example", "/", tls=True)["cert"] != hit["cert"]

    # the backend sees the external host's address: Local kept it through the service proxy,
    # nginx put it in X-Forwarded-For and X-Real-IP; nginx itself connects from the controller's pod
    headers = hit["json"]["headers"]
    assert headers["x-forwarded-for"] == client_ip and headers["x-real-ip"] == client_ip
    assert headers["x-forwarded-proto"] == "https" and headers["host"] == "a.example"
    assert hit["json"]["client"].rpartition(":")[0] == world["controller"]["status"]["podIP"]

    # host and path routing: Prefix by path element, Exact exactly, nginx's 404 for the rest of the host
    assert pod_of("a.example", "/headers", tls=True).startswith(f"{NS}/web-")
    assert nginx_404(fetch(ext, address, "a.example", "/headersx", tls=True))
    assert pod_of("a.example", "/whoami", tls=True).startswith(f"{NS}/api-")
    assert nginx_404(fetch(ext, address, "a.example", "/whoami/x", tls=True))
    # plain HTTP for the TLS host is redirected; the other host is served over HTTP
    redirect = fetch(ext, address, "a.example", "/headers/x")
    assert redirect["status"] == 308 and redirect["location"] == "https://a.example/headers/x"
    plain = wait_for("b.example over HTTP", lambda: from_web("b.example", "/headers", False))
    assert plain["json"]["headers"]["x-forwarded-for"] == client_ip
    # every other host goes to the default backend
    wait_for("the default backend", lambda: pod_of("c.example", "/whoami").startswith(f"{NS}/api-"))

    # kubectl get ingress shows the controller Service's address on every Ingress
    def rows() -> dict[str, list[str]] | None:
        lines = lab.kubectl("get", "ingress", "-n", NS, "--no-headers").stdout.splitlines()
        out = {r[0]: r for r in (line.split() for line in lines if line.strip())}
        return out if len(out) == 3 and all(address in r for r in out.values()) else None
    table = wait_for("the address in kubectl get ingress", rows)
    assert table["site"][1:5] == ["nginx", "a.example", address, "80,"]
    assert table["fallback"][1:4] == ["nginx", "*", address]

    # the Service's NodePort on the controller's node, as the articles reach it, keeps the client too
    svc = json.loads(lab.kubectl("get", "service", "-n", "ingress-nginx", "ingress-nginx-controller",
                                 "-o", "json").stdout)
    node_port = next(p["nodePort"] for p in svc["spec"]["ports"] if p["name"] == "http")
    via_node = fetch(ext, world["controller"]["status"]["hostIP"], "b.example", "/headers", port=node_port)
    assert backend_of(via_node).startswith(f"{NS}/web-")
    assert via_node["json"]["headers"]["x-forwarded-for"] == client_ip

    # with externalTrafficPolicy Cluster the service proxy masquerades the external client (the
    # node's address reaches nginx); Local again brings its address back
    def real_ip() -> str:
        return wait_for("b.example answering", lambda: from_web("b.example", "/headers", False))[
            "json"]["headers"]["x-real-ip"]

    def set_policy(policy: str) -> None:
        lab.kubectl("patch", "service", "-n", "ingress-nginx", "ingress-nginx-controller", "-p",
                    json.dumps({"spec": {"externalTrafficPolicy": policy}}))
    set_policy("Cluster")
    try:
        wait_for("the client masqueraded under Cluster", lambda: real_ip() != client_ip)
    finally:
        set_policy("Local")
    wait_for("the client's address under Local again", lambda: real_ip() == client_ip)
