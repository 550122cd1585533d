"""Ingress views -> nginx.conf text and the certificate files it names. Pure.

The semantics are ingress-nginx's (internal/ingress/controller: createServers,
updateServerLocations, extractTLSSecretName; rootfs/etc/nginx/template/nginx.tmpl):

- Ingresses are taken oldest first; for one host and one path and pathType, the first wins.
- One `server` per host; a rule without a host, and every unmatched host, go to the catch-all
  server `_`. Each host's `location /` is the default backend of the Ingress that first named
  the host (404 when it has none); the catch-all's is the last Ingress's spec.defaultBackend
  (ingress-nginx overwrites it Ingress by Ingress), 404 when none has one.
- Prefix `/foo` becomes `location /foo/` plus `location = /foo`, so it matches by path element
  (`/foobar` does not match) and nginx's own rules give the longest match first and an exact
  location before any prefix one. An Exact path of the same text keeps its own backend.
  ImplementationSpecific is an nginx prefix location as written.
- A wildcard host `*.example.com` matches one label, as the Ingress API says (nginx's own
  `*.example.com` would match any depth): a regex server_name, as ingress-nginx writes it.
- TLS: a host's certificate comes from the first Ingress naming the host in its rules that has
  a tls section: the Secret of the entry listing the host, else one whose certificate names
  it; a missing or broken Secret means the default certificate. Every server listens for TLS
  (SNI picks the server); a host with TLS redirects plain HTTP with 308 unless the Ingress says
  nginx.ingress.kubernetes.io/ssl-redirect: "false".
- Backends are the Service's endpoints from its EndpointSlices (ready addresses, the slice
  port named as the Service port), one upstream per Service port, as ingress-nginx balances
  them; a backend with no endpoint answers 503, a missing default backend 404.
- A path with other characters than letters, digits and `-._~/` is left out (ingress-nginx's
  strict-validate-path-type; nginx would read `;`, `{` or a space in it as syntax).
- Towards the backend: Host as the client sent it, X-Real-IP and X-Forwarded-For the client's
  address (a client's own X-Forwarded-For is not trusted), X-Forwarded-Proto/-Host/-Port.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .views import Backend, IngressView, Key, SecretView, ServiceView, SliceView

CATCH_ALL = "_"
SAFE_PATH = re.compile(r"^/[A-Za-z0-9\-._~/]*$")
NOT_FOUND, UNAVAILABLE, PROXY = "not-found", "unavailable", "proxy"
DEFAULT_CERT = "certs/default.pem"


@dataclass(frozen=True)
class Location:
    path: str
    exact: bool
    action: str                 # PROXY, UNAVAILABLE (503: no endpoint) or NOT_FOUND (404)
    upstream: str = ""
    ssl_redirect: bool = False
    source: str = ""            # the Ingress and path it comes from, for the comment above it


@dataclass(frozen=True)
class Server:
    host: str
    cert: str                   # its certificate file, relative to the config directory
    tls: bool                   # named in an Ingress's tls section (then plain HTTP redirects)
    locations: tuple[Location, ...]


@dataclass(frozen=True)
class Upstream:
    name: str
    servers: tuple[str, ...]    # "address:port", never empty


@dataclass(frozen=True)
class Plan:
    servers: tuple[Server, ...]
    upstreams: tuple[Upstream, ...]
    certs: tuple[tuple[str, bytes], ...]        # (file, PEM) of every Secret certificate in use


@dataclass(frozen=True)
class Settings:
    """Where nginx keeps its state, and what it listens on: the shell's choice, rendered."""
    state_dir: str              # absolute; pid, logs and temp files live here
    conf_dir: str               # absolute; the directory of nginx.conf and certs/
    http_port: int = 80
    https_port: int = 443
    worker_user: str = ""       # `user` directive; "" leaves nginx's default
    worker_processes: int = 1


# --- planning ---------------------------------------------------------------------------------

@dataclass
class _Entry:
    path: str
    path_type: str
    action: str
    upstream: str
    ssl_redirect: bool
    source: str
    default: bool = False       # the host's root location from a default backend


def upstream_name(namespace: str, backend: Backend) -> str:
    return f"{namespace}-{backend.service}-{backend.port}"


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def plan_endpoints(namespace: str, backend: Backend, services: Mapping[Key, ServiceView],
                   slices: Mapping[Key, list[SliceView]]) -> tuple[str, ...]:
    """The ready endpoints of the Service port an Ingress backend names (serviceEndpoints)."""
    svc = services.get((namespace, backend.service))
    if svc is None or svc.type == "ExternalName":
        return ()
    port = next((p for p in svc.ports if backend.port in (str(p.port), p.name, p.target_port)), None)
    if port is None or port.protocol != "TCP":
        return ()
    out = {_address(ip, sp.port) for sl in slices.get((namespace, svc.name), ())
           for sp in sl.ports if sp.name == port.name and sp.protocol == "TCP" for ip in sl.ready}
    return tuple(sorted(out))


def cert_file(secret: SecretView) -> str:
    digest = hashlib.sha256(secret.pem).hexdigest()[:12]
    return f"certs/{secret.namespace}-{secret.name}-{digest}.pem"


def host_matches(pattern: str, host: str) -> bool:
    """A certificate name or TLS host against a host: exact, or "*." and exactly one label."""
    pattern, host = pattern.lower(), host.lower()
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return pattern == host


def _tls_secret(ing: IngressView, host: str, secrets: Mapping[Key, SecretView]) -> SecretView | None:
    """extractTLSSecretName: the entry listing the host, else a Secret whose certificate names it."""
    for tls in ing.tls:
        if any(h.lower() == host.lower() for h in tls.hosts) and tls.secret:
            return secrets.get((ing.namespace, tls.secret))
    for tls in ing.tls:
        secret = secrets.get((ing.namespace, tls.secret)) if tls.secret else None
        if secret is not None and not secret.problem and any(host_matches(n, host) for n in secret.names):
            return secret
    return None


def plan_config(ingresses: Iterable[IngressView], services: Mapping[Key, ServiceView],
                slices: Iterable[SliceView], secrets: Mapping[Key, SecretView]) -> Plan:
    """What nginx should serve for these Ingresses (already the ones of this controller's class)."""
    ordered = sorted(ingresses, key=lambda i: (i.created, i.namespace, i.name))
    by_service: dict[Key, list[SliceView]] = {}
    for sl in slices:
        by_service.setdefault((sl.namespace, sl.service), []).append(sl)
    upstreams: dict[str, Upstream] = {}

    def target(namespace: str, backend: Backend | None) -> tuple[str, str]:
        if backend is None:
            return NOT_FOUND, ""
        name = upstream_name(namespace, backend)
        servers = plan_endpoints(namespace, backend, services, by_service)
        if not servers:
            return UNAVAILABLE, name
        upstreams[name] = Upstream(name, servers)
        return PROXY, name

    catch_all = _Entry("/", "Prefix", NOT_FOUND, "", False, "default backend", default=True)
    entries: dict[str, list[_Entry]] = {CATCH_ALL: [catch_all]}
    for ing in ordered:
        if ing.default_backend is not None:
            action, up = target(ing.namespace, ing.default_backend)
            entries[CATCH_ALL][0] = _Entry("/", "Prefix", action, up, False,
                                           f"{ing.namespace}/{ing.name} defaultBackend", default=True)
        for rule in ing.rules:
            host = rule.host or CATCH_ALL
            if host not in entries:
                action, up = target(ing.namespace, ing.default_backend)
                source = f"{ing.namespace}/{ing.name} defaultBackend" if ing.default_backend else "default backend"
                entries[host] = [_Entry("/", "Prefix", action, up, ing.ssl_redirect, source, default=True)]
    for ing in ordered:
        for rule in ing.rules:
            host = rule.host or CATCH_ALL
            for p in rule.paths:
                path = p.path or "/"
                if not SAFE_PATH.match(path):
                    continue
                action, up = target(ing.namespace, p.backend)
                entries[host].append(_Entry(path, p.path_type, action, up, ing.ssl_redirect,
                                            f"{ing.namespace}/{ing.name} {path} ({p.path_type})"))

    certs: dict[str, bytes] = {}
    servers = []
    for host in sorted(entries, key=lambda h: (h != CATCH_ALL, h)):
        cert, tls = DEFAULT_CERT, False
        if host != CATCH_ALL:
            cert, tls = _plan_cert(host, ordered, secrets, certs)
        locations = _plan_locations(entries[host], tls)
        servers.append(Server(host, cert, tls, locations))
    return Plan(tuple(servers), tuple(upstreams[n] for n in sorted(upstreams)), tuple(sorted(certs.items())))


def _plan_cert(host: str, ordered: list[IngressView], secrets: Mapping[Key, SecretView],
               certs: dict[str, bytes]) -> tuple[str, bool]:
    for ing in ordered:
        if not ing.tls or not any(r.host == host for r in ing.rules):
            continue
        secret = _tls_secret(ing, host, secrets)
        if secret is None or secret.problem:
            return DEFAULT_CERT, True
        name = cert_file(secret)
        certs[name] = secret.pem
        return name, True
    return DEFAULT_CERT, False


def _plan_locations(entries: list[_Entry], tls: bool) -> tuple[Location, ...]:
    """updateServerLocations: Prefix paths to nginx locations; the first of equal locations wins,
    a default root location only when no rule wrote `location /`."""
    exact_paths = {e.path for e in entries if e.path_type == "Exact"}
    out: dict[tuple[str, bool], Location] = {}

    def add(path: str, exact: bool, e: _Entry) -> None:
        out.setdefault((path, exact), Location(path, exact, e.action, e.upstream, tls and e.ssl_redirect, e.source))

    for e in sorted(entries, key=lambda e: e.default):     # rules first, then the default root
        if e.path_type == "Exact":
            add(e.path, True, e)
        elif e.path_type == "Prefix" and e.path != "/":
            add(e.path if e.path.endswith("/") else e.path + "/", False, e)
            if e.path not in exact_paths:
                add(e.path, True, e)
        else:
            add(e.path, False, e)
    return tuple(out[k] for k in sorted(out, key=lambda k: (k[0], not k[1])))


# --- rendering --------------------------------------------------------------------------------

_WILDCARD = re.compile(r"^\*\.")


def render_server_name(host: str) -> str:
    """buildServerName: `*.example.com` as a regex matching exactly one label."""
    if _WILDCARD.match(host):
        return "~^(?<subdomain>[\\w-]+)" + re.escape(host[1:]).replace("\\-", "-") + "$"
    return host


def _location(loc: Location, https_port: int) -> list[str]:
    head = f"location = {loc.path}" if loc.exact else f"location {loc.path}"
    out = [f"        # {loc.source}", f"        {head} {{"]
    if loc.ssl_redirect:
        host = "$host" if https_port == 443 else f"$host:{https_port}"
        out.append(f"            if ($scheme = http) {{ return 308 https://{host}$request_uri; }}")
    if loc.action == PROXY:
        out.append(f"            proxy_pass http://{loc.upstream};")
    elif loc.action == UNAVAILABLE:
        out.append("            return 503;")
    else:
        out.append("            return 404;")
    out.append("        }")
    return out


def render_server(server: Server, s: Settings) -> list[str]:
    default = " default_server" if server.host == CATCH_ALL else ""
    out = ["    server {",
           f"        listen {s.http_port}{default};",
           f"        listen {s.https_port} ssl{default};",
           f"        server_name {render_server_name(server.host)};"]
    if server.cert != DEFAULT_CERT:
        path = f"{s.conf_dir}/{server.cert}"
        out += [f"        ssl_certificate {path};", f"        ssl_certificate_key {path};"]
    for loc in server.locations:
        out += _location(loc, s.https_port)
    out.append("    }")
    return out


def render_upstream(up: Upstream) -> list[str]:
    return ([f"    upstream {up.name} {{"] + [f"        server {a} max_fails=0;" for a in up.servers]
            + ["        keepalive 32;", "    }"])


def render_nginx_conf(plan: Plan, s: Settings) -> str:
    state, default_cert = s.state_dir, f"{s.conf_dir}/{DEFAULT_CERT}"
    lines = ["# Written by kubeweft's Ingress controller from the Ingress objects of its class.",
             *([f"user {s.worker_user};"] if s.worker_user else []),
             f"worker_processes {s.worker_processes};",
             f"pid {state}/nginx.pid;",
             f"error_log {state}/logs/error.log notice;",
             "events {", "    worker_connections 1024;", "}",
             "http {",
             "    server_tokens off;",
             "    default_type text/plain;",
             "    log_format upstreaminfo '$remote_addr - [$time_local] \"$request\" $status $body_bytes_sent '",
             "                            '\"$host\" $upstream_addr $upstream_status $request_time';",
             f"    access_log {state}/logs/access.log upstreaminfo;",
             *(f"    {kind}_temp_path {state}/tmp/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                      "uwsgi", "scgi")),
             "    map $http_host $best_http_host { default $http_host; '' $host; }",
             "    map $http_upgrade $connection_upgrade { default upgrade; '' ''; }",
             f"    ssl_certificate {default_cert};",
             f"    ssl_certificate_key {default_cert};",
             "    ssl_protocols TLSv1.2 TLSv1.3;",
             "    ssl_session_cache shared:SSL:1m;",
             "    proxy_http_version 1.1;",
             "    proxy_connect_timeout 5s;",
             "    proxy_read_timeout 60s;",
             "    proxy_send_timeout 60s;",
             "    proxy_next_upstream error timeout;",
             "    proxy_set_header Host $best_http_host;",
             "    proxy_set_header Upgrade $http_upgrade;",
             "    proxy_set_header Connection $connection_upgrade;",
             "    proxy_set_header X-Request-ID $request_id;",
             "    proxy_set_header X-Real-IP $remote_addr;",
             "    proxy_set_header X-Forwarded-For $remote_addr;",
             "    proxy_set_header X-Forwarded-Host $best_http_host;",
             "    proxy_set_header X-Forwarded-Port $server_port;",
             "    proxy_set_header X-Forwarded-Proto $scheme;",
             "    proxy_set_header X-Forwarded-Scheme $scheme;",
             "    proxy_set_header X-Scheme $scheme;",
             "    proxy_set_header X-Original-URI $request_uri;"]
    for up in plan.upstreams:
        lines += render_upstream(up)
    for server in plan.servers:
        lines += render_server(server, s)
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_files(plan: Plan) -> dict[str, bytes]:
    """The certificate files the configuration names, relative to its directory (the default
    certificate is the shell's: it is made once, not from an API object)."""
    return dict(plan.certs)
