"""The cluster under test, reached only as a user reaches it: the Kubernetes API (the
`kubernetes` client) and `kubectl`, both with the KUBECONFIG the run was given.

Every wait is bounded; every namespace a check makes carries the run's label and is deleted at
the end of the check (or of the session, for the shared one)."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.integration.waiting import wait_for

RUN_LABEL = "kubeweft.io/e2e-run"
# agnhost, the image Kubernetes' own e2e tests run; override for a cluster that pulls from a mirror
AGNHOST = os.environ.get("KUBEWEFT_E2E_AGNHOST", "registry.k8s.io/e2e-test-images/agnhost:2.53")
# a first pull of agnhost on a fresh kind node takes tens of seconds
POD_READY_TIMEOUT = float(os.environ.get("KUBEWEFT_E2E_POD_TIMEOUT", "180"))


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    ip: str
    node: str


class Cluster:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        self.run_id = secrets.token_hex(3)
        self.namespaces: list[str] = []
        kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
        if not kubectl:
            raise RuntimeError("kubectl is not on PATH (or set KUBECTL)")
        self.kubectl_path = kubectl

    # --- kubectl ----------------------------------------------------------------------------
    def kubectl(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([self.kubectl_path, "--kubeconfig", self.kubeconfig, *args],
                           check=False, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
        return p

    def exec(self, pod: PodRef, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """`argv` inside the pod's container (its tools: agnhost's image has bash and curl)."""
        return self.kubectl("exec", "-n", pod.namespace, pod.name, "--", *argv, timeout=timeout, check=False)

    def http_get(self, pod: PodRef, url: str, seconds: float = 5) -> tuple[bool, str]:
        """GET `url` from inside `pod` on a new connection: (answered 2xx, body or curl's error)."""
        return self.http_get_many(pod, url, 1, seconds)[0]

    def http_get_many(self, pod: PodRef, url: str, count: int, seconds: float = 5) -> list[tuple[bool, str]]:
        """`count` GETs of `url` from inside `pod`, each on a new connection, in one exec."""
        script = ('for _ in $(seq "$1"); do if out=$(curl -sS -f --connect-timeout "$2" -m "$3" "$4" 2>&1); '
                  'then echo "ok $out"; else echo "fail $out"; fi; done')
        p = self.exec(pod, "bash", "-c", script, "get", str(count), f"{seconds:g}", f"{seconds + 1:g}", url,
                      timeout=count * (seconds + 1) + 20)
        answers = [(line.startswith("ok "), line.partition(" ")[2]) for line in p.stdout.splitlines()]
        assert len(answers) == count, f"{pod.name}: {count} GETs of {url} gave {p.stdout!r} {p.stderr!r}"
        return answers

    # --- namespaces -------------------------------------------------------------------------
    def make_namespace(self, purpose: str) -> str:
        name = f"kw-e2e-{self.run_id}-{purpose}"
        self.core.create_namespace({"metadata": {"name": name, "labels": {RUN_LABEL: self.run_id}}})
        self.namespaces.append(name)
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise

    def leftover_namespaces(self) -> list[str]:
        items = self.core.list_namespace(label_selector=f"{RUN_LABEL}={self.run_id}").items
        return sorted(ns.metadata.name for ns in items)

    def wait_namespaces_gone(self, timeout: float = 120) -> list[str]:
        """Wait until this run's namespaces are gone; return those still there after `timeout`."""
        deadline = time.monotonic() + timeout
        left = self.leftover_namespaces()
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = self.leftover_namespaces()
        return left

    # --- nodes and pods ---------------------------------------------------------------------
    def schedulable_nodes(self) -> list[client.V1Node]:
        """Ready Linux nodes with no NoSchedule/NoExecute taint (kind's control plane has one),
        by name."""
        out = []
        for node in self.core.list_node().items:
            labels = node.metadata.labels or {}
            if labels.get("kubernetes.io/os", "linux") != "linux" or node.spec.unschedulable:
                continue
            if any(t.effect in ("NoSchedule", "NoExecute") for t in node.spec.taints or []):
                continue
            if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
                out.append(node)
        return sorted(out, key=lambda n: n.metadata.name)

    def create_pods(self, namespace: str, pods: list[dict]) -> None:
        for body in pods:
            self.core.create_namespaced_pod(namespace, body)

    def wait_pods_ready(self, namespace: str, names: list[str],
                        timeout: float = POD_READY_TIMEOUT) -> dict[str, PodRef]:
        def ready() -> dict[str, PodRef] | None:
            pods = {p.metadata.name: p for p in self.core.list_namespaced_pod(namespace).items}
            out = {}
            for name in names:
                p = pods.get(name)
                conds = (p.status.conditions or []) if p else []
                if not (p and p.status.pod_ip and any(c.type == "Ready" and c.status == "True" for c in conds)):
                    return None
                out[name] = PodRef(namespace, name, p.status.pod_ip, p.spec.node_name)
            return out

        try:
            return wait_for(f"pods {names} Ready in {namespace}", ready, timeout=timeout, interval=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.describe_pods(namespace)}") from None

    def describe_pods(self, namespace: str) -> str:
        p = self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
        return p.stdout + p.stderr

    def wait_endpoints(self, namespace: str, service: str, count: int, timeout: float = 60) -> None:
        def ready_addresses() -> int:
            slices = client.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice(
                namespace, label_selector=f"kubernetes.io/service-name={service}").items
            return sum(1 for s in slices for ep in s.endpoints or []
                       if ep.conditions is None or ep.conditions.ready is not False) >= count

        wait_for(f"{count} ready endpoints of Service {namespace}/{service}", ready_addresses,
                 timeout=timeout, interval=0.5)

    def daemonset(self, namespace: str, name: str):
        try:
            return self.apps.read_namespaced_daemon_set(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise


def agnhost_pod(name: str, node_hostname: str, labels: dict[str, str]) -> dict:
    """A pod running agnhost's netexec (HTTP on 8080: /hostname, /clientip; UDP on 8081),
    pinned to one node."""
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node_hostname},
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "agnhost", "image": AGNHOST, "imagePullPolicy": "IfNotPresent",
                "args": ["netexec", "--http-port=8080", "--udp-port=8081"],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 8081, "protocol": "UDP"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2},
            }],
        },
    }


def service(name: str, selector: dict[str, str], kind: str = "ClusterIP") -> dict:
    return {"metadata": {"name": name},
            "spec": {"type": kind, "selector": selector,
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def address_of(body: str) -> str:
    """netexec's /clientip answer 'IP:PORT' (IPv6: '[IP]:PORT') -> 'IP'."""
    return body.rsplit(":", 1)[0].strip("[]")
