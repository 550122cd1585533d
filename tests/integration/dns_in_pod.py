"""Run inside a pod (`kubectl exec POD -- PYTHON dns_in_pod.py VERB ...`): DNS questions asked
through glibc's resolver, which reads the pod's own /etc/resolv.conf (search list, ndots, the
cluster DNS), and a client that keeps one UDP socket. Prints one JSON document.

    addrs NAME                 getaddrinfo (AI_CANONNAME): {"addresses", "canonname"} or {"error"}
    ptr ADDRESS                gethostbyaddr: {"name", "aliases"} or {"error"}
    search NAME TYPE           res_search (search list applied): {"answer": [[owner, type, rdata]]}
                               or {"h_errno"}: 1 NXDOMAIN, 4 no data, 2 try again, 3 refused
    query NAME TYPE            res_query, the name as given
    tcp SERVER NAME            one A query over TCP (dnspython): {"rcode", "answer"}
    get URL                    an HTTP GET: {"status", "body"}
    wait NAME SECONDS          getaddrinfo every 20 ms until NAME resolves: {"resolved_at": epoch}
    udp SERVER NAME SECONDS    one UDP socket, one query after another for SECONDS, each sent again
                               every 0.2 s until answered: {"queries": [[sent, answered|null, rcode]]}
"""
from __future__ import annotations

import ctypes
import json
import random
import socket
import sys
import time

import dns.message
import dns.rdatatype

H_ERRNO = {1: "NXDOMAIN", 2: "TRY_AGAIN", 3: "NO_RECOVERY", 4: "NO_DATA"}


def _libc():
    libc = ctypes.CDLL("libc.so.6")
    libc.__h_errno_location.restype = ctypes.POINTER(ctypes.c_int)
    return libc


def res(fn: str, name: str, rdtype: str) -> dict:
    libc = _libc()
    buf = ctypes.create_string_buffer(65535)
    n = getattr(libc, fn)(name.encode(), 1, dns.rdatatype.from_text(rdtype), buf, len(buf))
    if n < 0:
        code = libc.__h_errno_location().contents.value
        return {"h_errno": H_ERRNO.get(code, str(code))}
    msg = dns.message.from_wire(buf.raw[:n])
    return {"answer": sorted([rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text()]
                             for rrset in msg.answer for rd in rrset)}


def addrs(name: str) -> dict:
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
    except socket.gaierror as e:
        return {"error": e.args[1]}
    return {"addresses": sorted({i[4][0] for i in infos}), "canonname": infos[0][3]}


def ptr(address: str) -> dict:
    try:
        name, aliases, _ = socket.gethostbyaddr(address)
    except OSError as e:
        return {"error": str(e)}
    return {"name": name, "aliases": sorted(aliases)}


def wait(name: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.getaddrinfo(name, None, socket.AF_INET)
            return {"resolved_at": time.time()}
        except socket.gaierror:
            time.sleep(0.02)
    return {"error": "timeout"}


def udp(server: str, name: str, seconds: float) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((server, 53))
    out = []
    end = time.time() + seconds
    while time.time() < end:
        q = dns.message.make_query(name, "A")
        q.id = random.randrange(65536)
        sent = time.time()
        answered, rcode = None, None
        while answered is None and time.time() < sent + 10:
            sock.send(q.to_wire())
            sock.settimeout(0.2)
            try:
                while True:
                    r = dns.message.from_wire(sock.recv(65535))
                    if r.id == q.id:
                        answered, rcode = time.time(), r.rcode()
                        break
            except (TimeoutError, ConnectionRefusedError):
                continue
        out.append([sent, answered, rcode])
        time.sleep(0.02)
    return {"queries": out}


def tcp(server: str, name: str) -> dict:
    import dns.query
    r = dns.query.tcp(dns.message.make_query(name, "A"), server, timeout=3)
    return {"rcode": r.rcode(), "answer": sorted(rd.to_text() for rrset in r.answer for rd in rrset)}


def get(url: str) -> dict:
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as resp:
        return {"status": resp.status, "body": resp.read().decode()}


def main(argv: list[str]) -> None:
    verb, args = argv[0], argv[1:]
    if verb == "addrs":
        doc = addrs(args[0])
    elif verb == "ptr":
        doc = ptr(args[0])
    elif verb in ("search", "query"):
        doc = res(f"res_{verb}", args[0], args[1])
    elif verb == "wait":
        doc = wait(args[0], float(args[1]))
    elif verb == "tcp":
        doc = tcp(args[0], args[1])
    elif verb == "get":
        doc = get(args[0])
    else:
        doc = udp(args[0], args[1], float(args[2]))
    print(json.dumps(doc))


if __name__ == "__main__":
    main(sys.argv[1:])
