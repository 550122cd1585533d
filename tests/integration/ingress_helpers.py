"""Helpers of the Ingress tests: one HTTP or HTTPS request from inside a netns to a controller,
what answered it, and ingress-nginx's manifest applied with the real kubectl."""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import time
from pathlib import Path

from kubeweft.lab import netns

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "lab" / "manifests" / "ingress-nginx.yaml"


def fetch(ns: str, address: str, host: str, path: str, tls: bool = False, sni: str | None = None,
          headers: dict | None = None, port: int = 0) -> dict:
    """One request from netns `ns` to `address` (`port`; by default 80, or 443 with TLS): status,
    Location, body (and its JSON when it is), and the certificate served (DER) for TLS."""
    def go() -> dict:
        sock = socket.create_connection((address, port or (443 if tls else 80)), timeout=5)
        cert = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=sni or host)
            cert = sock.getpeercert(binary_form=True)
        try:
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            body = resp.read().decode(errors="replace")
            out = {"status": resp.status, "location": resp.getheader("Location"), "body": body, "cert": cert}
        finally:
            sock.close()
        with contextlib.suppress(ValueError):
            out["json"] = json.loads(body)
        return out
    return netns.call_in(ns, go, timeout=15)


def backend_of(resp: dict) -> str | None:
    """The pod ("NS/NAME") of the lab workload that answered."""
    return (resp.get("json") or {}).get("pod")


def nginx_404(resp: dict) -> bool:
    """nginx's own 404 page (the default backend), not a backend's."""
    return resp["status"] == 404 and "<center>nginx</center>" in resp["body"]


@contextlib.contextmanager
def ingress_nginx(lab, timeout: float = 90):
    """ingress-nginx applied from its manifest, as a user of kind applies it, its controller rolled
    out; deleted afterwards (the namespace takes its objects with it)."""
    try:
        lab.kubectl("apply", "-f", str(MANIFEST))
        lab.kubectl("rollout", "status", "-n", "ingress-nginx", "deployment/ingress-nginx-controller",
                    f"--timeout={int(timeout)}s", timeout=timeout + 10)
        yield
    finally:
        lab.kubectl("delete", "-f", str(MANIFEST), "--ignore-not-found", "--wait=true", "--timeout=60s",
                    check=False, timeout=90)


def steady(what: str, fn, times: int = 5, timeout: float = 30.0):
    """fn() until it returns something true `times` calls in a row; that last value. After a
    reload, nginx's old workers (the configuration before it) accept connections for a few
    milliseconds beside the new ones: one answer of the new configuration does not mean the
    next request gets it too (a CI run's next request got the old one's 404)."""
    deadline = time.monotonic() + timeout
    run, last = 0, None
    while True:
        last = fn()
        run = run + 1 if last else 0
        if run >= times:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} {times} times in a row "
                                 f"(last: {last!r})")
        time.sleep(0.05 if last else 0.2)
