"""The probe's pure part: errors -> outcomes, answers -> (pod, client), argument parsing."""
import errno
import json

import pytest
from kubeweft.lab.probe import (
    ProbeError,
    classify_error,
    parse_answer,
    parse_source,
    parse_target,
    plan_resolver,
    render_line,
)
from kubeweft.lab.workload import Workload, parse_ports


@pytest.mark.parametrize("exc,outcome", [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
    (ConnectionResetError(errno.ECONNRESET, "reset"), "refused"),
    (OSError(errno.EHOSTUNREACH, "no route to host"), "unreachable"),
    (OSError(errno.ENETUNREACH, "network unreachable"), "unreachable"),
    (TimeoutError("timed out"), "timeout"),  # what socket.timeout is
    (TimeoutError(errno.ETIMEDOUT, "timed out"), "timeout"),
    (PermissionError(errno.EPERM, "dropped on output"), "timeout"),
])
def test_classify_error(exc, outcome):
    assert classify_error(exc) == outcome


def test_parse_http_whoami_answer():
    body = json.dumps({"pod": "default/web-0", "client": "10.244.1.5:40000"})
    data = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}").encode()
    assert parse_answer(data) == ("default/web-0", "10.244.1.5:40000")


def test_parse_bare_json_and_garbage():
    assert parse_answer(b'{"pod": "a/b", "client": "1.2.3.4:5"}\n') == ("a/b", "1.2.3.4:5")
    assert parse_answer(b"HTTP/1.1 404 Not Found\r\n\r\n{\"pod\": \"x/y\"}") == (None, None)
    assert parse_answer(b"SSH-2.0-OpenSSH\r\n") == (None, None)
    assert parse_answer(b"[1, 2]") == (None, None)
    assert parse_answer(b'{"pod": 7}') == (None, None)


def test_parse_target_and_source():
    assert parse_target("10.96.0.10:80") == ("10.96.0.10", 80)
    assert parse_target("[fd00::1]:443") == ("fd00::1", 443)
    # names, resolved as the source pod resolves them
    assert parse_target("web:80") == ("web", 80)
    assert parse_target("web.default.svc.cluster.local.:8080") == ("web.default.svc.cluster.local.", 8080)
    assert parse_target("_http._tcp.web:80") == ("_http._tcp.web", 80)
    for bad in ("10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", ":80", "x:y", "a b:80", "-web:80", "a..b:80",
                "web/x:80", f"{'a' * 64}:80", "fd00::1:80", "[10.0.0.1]:80", "[web]:80"):
        with pytest.raises(ProbeError):
            parse_target(bad)
    assert render_line({"outcome": "connected", "proto": "udp", "target": "[fd00::1]:80", "pod": "a/b",
                        "client": "[fd00::2]:5000", "ms": 1.0}).startswith("connected    udp [fd00::1]:80 -> a/b (it saw [fd00::2]:5000)")
    assert parse_source("external") == ("external", "")
    assert parse_source("node:node2") == ("node", "node2")
    assert parse_source("kube-system/dns") == ("pod", "kube-system/dns")
    assert parse_source("web-0") == ("pod", "default/web-0")


def test_render_line():
    ok = {"outcome": "connected", "pod": "a/b", "client": "1.2.3.4:5", "target": "9.9.9.9:80",
          "proto": "tcp", "ms": 1.25}
    assert render_line(ok).startswith("connected") and "a/b" in render_line(ok) and "1.2.3.4:5" in render_line(ok)
    bad = {"outcome": "timeout", "pod": None, "client": None, "target": "9.9.9.9:80", "proto": "udp",
           "ms": 1000.0, "error": "timed out"}
    assert render_line(bad).startswith("timeout") and "udp 9.9.9.9:80" in render_line(bad)


def test_workload_ports_and_answers():
    assert parse_ports("") == ([8080], [])
    assert parse_ports("80/TCP,81/UDP,80/UDP,9/SCTP") == ([80, 81], ["9/SCTP"])
    assert parse_ports("9/SCTP") == ([], ["9/SCTP"])
    with pytest.raises(ValueError):
        parse_ports("0/TCP")
    wl = Workload.__new__(Workload)          # the protocol methods only, no sockets
    wl.pod, wl.hostname, wl.ready = "ns/p", "p", True
    assert wl.answer("hostname", "1.1.1.1:2") == "p"
    assert wl.answer("clientip", "1.1.1.1:2") == "1.1.1.1:2"
    assert json.loads(wl.answer("whoami", "1.1.1.1:2")) == {"pod": "ns/p", "client": "1.1.1.1:2"}
    assert wl.route("GET", "/nope", "c")[0] == 404
    assert wl.route("GET", "/ready/off", "c")[0] == 200 and wl.route("GET", "/ready", "c")[0] == 503


def test_plan_resolver_follows_a_pods_resolv_conf():
    r = plan_resolver("search ns1.svc.cluster.local svc.cluster.local cluster.local\n"
                      "nameserver 10.96.0.10\noptions ndots:5 timeout:2\n")
    assert r.nameservers == ["10.96.0.10"] and r.ndots == 5
    assert [n.to_text() for n in r.search] == ["ns1.svc.cluster.local.", "svc.cluster.local.", "cluster.local."]
    assert plan_resolver("nameserver 192.0.2.1\n").ndots == 1
