"""The cluster DNS as `lab up` installs it (kubeadm's CoreDNS addon, lab/manifests/coredns.yaml),
asked from pods through glibc's resolver and the pod's own /etc/resolv.conf (tests/integration/
dns_in_pod.py, run with `kubectl exec`), on one 2-node lab with kubeweft's CNI and service proxy:
the Kubernetes DNS specification's records, a new Service answered within 2 s, CoreDNS's
metric names, `lab probe` by name, and a rollout restart of the DNS Deployment that a client
keeping one UDP socket rides out."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubeweft.lab.probe import read_pods
from prometheus_client.parser import text_string_to_metric_families

from .conftest import KUBEWEFT, fresh_lab, unique_lab_name
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "dnsx"
DNS_IP = "10.96.0.10"
IN_POD = str(Path(__file__).with_name("dns_in_pod.py"))
ZONE = "cluster.local"


def pod(name: str, labels: dict, ports=(), **spec) -> dict:
    c = {"name": "c", "image": "any", "ports": [dict(p) for p in ports]}
    if "readinessProbe" in spec:
        c["readinessProbe"] = spec.pop("readinessProbe")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"containers": [c], "terminationGracePeriodSeconds": 1, **spec}}


def service(name: str, spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS}, "spec": spec}


HTTP = {"name": "http", "containerPort": 80, "protocol": "TCP"}
PG = {"name": "pg", "containerPort": 5432, "protocol": "TCP"}
OBJECTS = [
    pod("web-1", {"app": "web"}, [HTTP]),
    pod("db-0", {"app": "db"}, [PG], hostname="db-0", subdomain="db"),
    pod("db-1", {"app": "db"}, [PG]),
    pod("db-late", {"app": "db"}, [PG], readinessProbe={"exec": {"command": ["false"]}, "periodSeconds": 1}),
    pod("client", {"app": "client"}),
    service("web", {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 80}]}),
    service("db", {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}),
    service("ext", {"type": "ExternalName", "externalName": f"web.{NS}.svc.{ZONE}"}),
]


@pytest.fixture(scope="module")
def lab():
    with fresh_lab(unique_lab_name(), nodes=2, cni="kubeweft", timeout=150) as made:
        made.kubectl("create", "namespace", NS)
        made.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": OBJECTS}))
        made.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/web-1", "pod/db-0", "pod/db-1",
                     "pod/client", "--timeout=60s", timeout=70)
        yield made


def in_pod(lab, *args: str, timeout: float = 30) -> dict:
    proc = lab.kubectl("exec", "-n", NS, "client", "--", sys.executable, IN_POD, *args, timeout=timeout)
    return json.loads(proc.stdout)


def get(lab, kind: str, name: str, path: str, ns: str = NS) -> str:
    return lab.kubectl("get", kind, "-n", ns, name, "-o", f"jsonpath={path}").stdout


def test_the_dns_addon_runs_as_kubeadms_with_its_service_account(lab):
    deploy = json.loads(lab.kubectl("get", "deploy", "-n", "kube-system", "coredns", "-o", "json").stdout)
    assert deploy["status"].get("readyReplicas") == 2, deploy["status"]
    assert get(lab, "svc", "kube-dns", "{.spec.clusterIP}", "kube-system") == DNS_IP
    pods = json.loads(lab.kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o", "json").stdout)
    for p in pods["items"]:
        # in-cluster: the ServiceAccount's token, mounted by the kubelet; no kubeconfig is given
        assert p["spec"]["serviceAccountName"] == "coredns"
        assert p["spec"]["containers"][0]["args"] == ["-conf", "/etc/coredns/Corefile"]
        mounts = {m["mountPath"] for m in p["spec"]["containers"][0]["volumeMounts"]}
        assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts
    names = {p["metadata"]["name"] for p in pods["items"]}
    dns_pods = [e for e in read_pods(lab.cfg).values() if e["namespace"] == "kube-system" and e["name"] in names]
    assert len(dns_pods) == 2, dns_pods
    for entry in dns_pods:
        environ = Path(f"/proc/{entry['pid']}/environ").read_bytes().split(b"\0")
        assert b"KUBERNETES_SERVICE_HOST=10.96.0.1" in environ
        assert not [e for e in environ if e.startswith(b"KUBECONFIG=")]
        assert Path(f"/proc/{entry['pid']}/root/var/run/secrets/kubernetes.io/serviceaccount/token").is_file()
    sa = "--as=system:serviceaccount:kube-system:coredns"
    for verb, what, allowed in (("watch", "endpointslices.discovery.k8s.io", "yes"), ("list", "services", "yes"),
                                ("create", "services", "no"), ("get", "secrets", "no")):
        out = lab.kubectl("auth", "can-i", verb, what, "-A", sa, check=False).stdout.strip()
        assert out == allowed, (verb, what, out)
    # 10.96.0.10 is a frontend of kubeweft's own service proxy, UDP and TCP, on every node
    for node in ("node1", "node2"):
        table = lab.cli("node-exec", node, "--", KUBEWEFT, "services").stdout
        assert f"{DNS_IP}:53/udp" in table and f"{DNS_IP}:53/tcp" in table, table


def test_records_of_the_specification_from_a_pod(lab):
    web_ip = get(lab, "svc", "web", "{.spec.clusterIP}")
    db0, db1, late = (get(lab, "pod", n, "{.status.podIP}") for n in ("db-0", "db-1", "db-late"))
    fqdn = f"web.{NS}.svc.{ZONE}"
    # A for a ClusterIP Service: short name (the search list), namespace-qualified, FQDN
    for name in ("web", f"web.{NS}", fqdn, f"{fqdn}."):
        assert in_pod(lab, "addrs", name) == {"addresses": [web_ip], "canonname": fqdn}, name
    assert in_pod(lab, "addrs", "kubernetes.default")["addresses"] == ["10.96.0.1"]
    # a headless Service: its ready endpoints only (db-late never passes its readiness probe)
    assert get(lab, "pod", "db-late", "{.status.conditions[?(@.type=='Ready')].status}") == "False"
    assert in_pod(lab, "addrs", "db")["addresses"] == sorted([db0, db1])
    assert late not in in_pod(lab, "addrs", f"db.{NS}.svc.{ZONE}")["addresses"]
    # pod hostname/subdomain: db-0 under its headless Service; an endpoint without a hostname
    # by its dashed address
    assert in_pod(lab, "addrs", "db-0.db")["addresses"] == [db0]
    assert in_pod(lab, "addrs", f"{db1.replace('.', '-')}.db.{NS}.svc.{ZONE}")["addresses"] == [db1]
    assert in_pod(lab, "addrs", f"{db1.replace('.', '-')}.{NS}.pod.{ZONE}")["addresses"] == [db1]
    # SRV for named ports, through res_search (the search list applies)
    assert in_pod(lab, "search", "_http._tcp.web", "SRV") == \
        {"answer": [[f"_http._tcp.{fqdn}.", "SRV", f"0 100 80 {fqdn}."]]}
    srv = in_pod(lab, "search", "_pg._tcp.db", "SRV")["answer"]
    assert sorted(r[2] for r in srv) == sorted([f"0 50 5432 db-0.db.{NS}.svc.{ZONE}.",
                                                f"0 50 5432 {db1.replace('.', '-')}.db.{NS}.svc.{ZONE}."])
    # PTR: a ClusterIP and a headless endpoint
    assert in_pod(lab, "ptr", web_ip)["name"] == fqdn
    assert in_pod(lab, "ptr", db0)["name"] == f"db-0.db.{NS}.svc.{ZONE}"
    # CNAME for ExternalName, which glibc follows to the target's address
    assert in_pod(lab, "query", f"ext.{NS}.svc.{ZONE}", "CNAME") == \
        {"answer": [[f"ext.{NS}.svc.{ZONE}.", "CNAME", f"{fqdn}."]]}
    assert in_pod(lab, "addrs", "ext") == {"addresses": [web_ip], "canonname": fqdn}
    # NXDOMAIN for a name that does not exist; no data for a type a name does not have
    assert in_pod(lab, "query", f"nothere.{NS}.svc.{ZONE}", "A") == {"h_errno": "NXDOMAIN"}
    assert in_pod(lab, "query", f"_http._udp.{fqdn}", "SRV") == {"h_errno": "NXDOMAIN"}
    assert in_pod(lab, "query", fqdn, "AAAA") == {"h_errno": "NO_DATA"}
    assert "error" in in_pod(lab, "addrs", "nothere")
    # over TCP, through the service proxy's TCP frontend
    assert in_pod(lab, "tcp", DNS_IP, f"{fqdn}.") == {"rcode": 0, "answer": [web_ip]}


def test_a_new_service_answers_within_two_seconds(lab):
    waiter = subprocess.Popen([lab.kubectl_path, "--kubeconfig", str(lab.kubeconfig), "exec", "-n", NS, "client",
                               "--", sys.executable, IN_POD, "wait", "fresh", "20"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)                     # the waiter polls: NXDOMAIN until the Service exists
        assert waiter.poll() is None, waiter.communicate()
        created = time.time()
        lab.kubectl("create", "service", "clusterip", "fresh", "-n", NS, "--tcp=80")
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
        lab.kubectl("delete", "service", "-n", NS, "fresh", "--ignore-not-found", check=False)
    doc = json.loads(out)
    assert "resolved_at" in doc, (doc, err)
    print(f"a new Service resolved from a pod {doc['resolved_at'] - created:.2f} s after `kubectl create` began")
    assert doc["resolved_at"] - created < 2.0


def _sum(text: str, name: str, **labels) -> float:
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_coredns_metric_names_on_9153(lab):
    ips = [p["status"]["podIP"] for p in json.loads(lab.kubectl(
        "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o", "json").stdout)["items"]]

    def scrape() -> str:
        return "\n".join(in_pod(lab, "get", f"http://{ip}:9153/metrics")["body"] for ip in ips)

    before = scrape()
    for name in ("coredns_dns_requests_total", "coredns_dns_responses_total",
                 "coredns_dns_request_duration_seconds_bucket", "coredns_dns_request_size_bytes_bucket",
                 "coredns_dns_response_size_bytes_bucket", "coredns_build_info"):
        assert f"\n{name}{{" in before, name
    in_pod(lab, "query", f"nothere.{NS}.svc.{ZONE}", "A")
    in_pod(lab, "query", f"web.{NS}.svc.{ZONE}", "SRV")
    after = scrape()
    assert _sum(after, "coredns_dns_responses_total", rcode="NXDOMAIN", plugin="kubernetes") >= \
        _sum(before, "coredns_dns_responses_total", rcode="NXDOMAIN", plugin="kubernetes") + 1
    assert _sum(after, "coredns_dns_requests_total", type="SRV", proto="udp") >= \
        _sum(before, "coredns_dns_requests_total", type="SRV", proto="udp") + 1


def test_lab_probe_takes_a_service_name(lab):
    proc = lab.cli("probe", "--from", f"{NS}/client", "web:80", "--json")
    result = json.loads(proc.stdout)
    assert (result["outcome"], result["pod"], result["name"]) == ("connected", f"{NS}/web-1", "web")
    assert result["target"] == f"{get(lab, 'svc', 'web', '{.spec.clusterIP}')}:80"
    proc = lab.cli("probe", "--from", f"{NS}/client", "nothere:80", check=False)
    assert proc.returncode == 2 and "does not resolve from pod" in proc.stderr


def _dns_pods(lab) -> dict[str, bool]:
    """name -> terminating, of every pod of the DNS Deployment."""
    items = json.loads(lab.kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o",
                                   "json").stdout)["items"]
    return {p["metadata"]["name"]: bool(p["metadata"].get("deletionTimestamp")) for p in items}


def test_a_dns_rollout_restart_while_a_client_keeps_one_udp_socket(lab):
    old = set(_dns_pods(lab))
    seconds = 30
    client = subprocess.Popen([lab.kubectl_path, "--kubeconfig", str(lab.kubeconfig), "exec", "-n", NS, "client",
                               "--", sys.executable, IN_POD, "udp", DNS_IP, f"web.{NS}.svc.{ZONE}.", str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        lab.kubectl("rollout", "restart", "deploy/coredns", "-n", "kube-system")
        lab.kubectl("rollout", "status", "deploy/coredns", "-n", "kube-system", "--timeout=60s", timeout=70)
        ready = time.time()
        wait_for("the old DNS pods to be gone", lambda: not (old & set(_dns_pods(lab))), 30, 0.2)
        gone = time.time()
        out, err = client.communicate(timeout=seconds + 30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert out.strip(), err
    queries = json.loads(out)["queries"]
    failures = [q for q in queries if q[1] is None or q[2] != 0]
    worst = max(q[1] - q[0] for q in queries if q[1] is not None)
    late = [q for q in queries if q[1] is not None and q[1] > max(q[0], ready) + 2.0]
    after_gone = [q for q in queries if q[0] > gone]
    print(f"DNS rollout restart, one UDP socket: {len(queries)} queries, worst latency {worst * 1000:.0f} ms, "
          f"{len(failures)} failures; new pods ready {ready - queries[0][0]:.1f} s and old ones gone "
          f"{gone - queries[0][0]:.1f} s into the run, {len(after_gone)} queries after that")
    assert not failures, failures[:5]
    assert not late, f"answered more than 2 s after the new pods were ready: {late[:5]}"
    # the socket's flow left the old pods' addresses: its queries are answered after they are gone
    assert len(after_gone) >= 20 and all(q[1] is not None for q in after_gone)
