"""The agent as deploy/lab's DaemonSet runs it, against a lab API server whose address is in a
scratch netns (the lab's underlay), with nothing but what a kubelet would give the pod:

- RBAC: deploy/'s ServiceAccount, ClusterRole, ClusterRoleBinding, Role and RoleBinding (the
  Lease that elects the agent writing ClusterNetworkPolicy status), rendered by the real
  kubectl's kustomize and applied with kubectl; the agent runs under a token of that
  ServiceAccount (TokenRequest, `kubectl create token`) through its whole start (the Node, the
  overlay annotation, the service proxy's and the policy controller's lists and watches) and the
  API server answers it no 403; its annotations reach the Node through nodes/status, while the
  same token may not change a Node's spec;
- the in-cluster path: no kubeconfig; the token and CA where the kubelet mounts them
  (/var/run/secrets/kubernetes.io/serviceaccount, in a mount namespace of the agent's own with a
  tmpfs on /run), the API server at KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT from the
  overlay's kubeweft-api-endpoint ConfigMap, and every other variable as the DaemonSet's env
  and envFrom resolve;
- the probes: /livez answers while the agent waits for its Node and podCIDR and /readyz is 503,
  naming what it waits for; once the Node has its podCIDR /readyz turns 200 (the CNI server
  answers STATUS, the first service and policy syncs are in the kernel).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kubeweft.lab import netns

from . import agent_helpers
from .agent_helpers import health
from .apiserver_proc import terminate
from .services_helpers import http_get
from .waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
KUBEWEFT = ROOT / ".venv" / "bin" / "kubeweft"
NODE = "deployed1"
SERVICE_ACCOUNT = "system:serviceaccount:kube-system:kubeweft"
SECRETS = "/var/run/secrets/kubernetes.io/serviceaccount"
# one request per line: METHOD PATH STATUS DURATIONms (USER), the user only when not the admin
REQUEST_LINE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (\S+) (\d{3}) [\d.]+ms \(([^)]+)\)")
# what deploy/ sends to the API server, of what it renders: the rest (the DaemonSet) the lab's
# API server does not serve
APPLIED = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap")


def render(overlay: str) -> list[dict]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(ROOT / "deploy" / overlay)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def container_env(docs: list[dict], container: str, fields: dict[str, str]) -> dict[str, str]:
    """The environment the kubelet gives `container` of the rendered DaemonSet: envFrom's
    ConfigMaps, then env (fieldRef from `fields`, configMapKeyRef from the rendered ConfigMaps;
    optional ones that are missing left out)."""
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (c,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == container]
    env: dict[str, str] = {}
    for source in c.get("envFrom") or []:
        ref = source["configMapRef"]
        assert ref["name"] in maps or ref.get("optional"), ref
        env.update(maps.get(ref["name"], {}))
    for var in c.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        value_from = var["valueFrom"]
        if "fieldRef" in value_from:
            env[var["name"]] = fields[value_from["fieldRef"]["fieldPath"]]
        else:
            ref = value_from["configMapKeyRef"]
            if ref["key"] in maps.get(ref["name"], {}):
                env[var["name"]] = maps[ref["name"]][ref["key"]]
            else:
                assert ref.get("optional"), ref
    return env


def container_argv(docs: list[dict], container: str, root: Path) -> list[str]:
    """The container's command with this checkout's kubeweft, and every absolute path in it under
    `root` (the host's /run, /var/lib and CNI dirs are not the test's)."""
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (c,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == container]
    assert c["command"][0] == "kubeweft"
    return [str(KUBEWEFT)] + [str(root / a.lstrip("/")) if a.startswith("/") else a for a in c["command"][1:]]


def project_config_maps(docs: list[dict], container: str, root: Path) -> None:
    """What the kubelet mounts of the container's configMap volumes: each key a file under the
    mount path (under `root`, as container_argv maps absolute paths)."""
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    (c,) = [c for c in pod["containers"] if c["name"] == container]
    for mount in c.get("volumeMounts") or []:
        if mount["name"] in volumes:
            folder = root / mount["mountPath"].lstrip("/")
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in maps[volumes[mount["name"]]].items():
                (folder / key).write_text(value)


def in_cluster_launcher(secrets: Path) -> list[str]:
    """argv prefix: a mount namespace of the agent's own (private propagation: nothing reaches the
    root one) with a tmpfs on /run holding the ServiceAccount's token and CA where the kubelet
    mounts them, then exec the rest."""
    script = (f'mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p {SECRETS} && '
              f'cp "$0/token" "$0/ca.crt" "$0/namespace" {SECRETS}/ && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, str(secrets)]


def sa_requests(log_text: str) -> list[tuple[str, str, int]]:
    """(method, path without the query, status) of each request the ServiceAccount made."""
    return [(m[1], m[2].partition("?")[0], int(m[3])) for m in REQUEST_LINE.finditer(log_text)
            if m[4] == SERVICE_ACCOUNT]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The agent started as above before its Node exists; it waits (observed), the Node registers
    and gets its podCIDR, the agent turns ready (observed), and is stopped. Yields what was seen, with the server and its log."""
    tmp = tmp_path_factory.mktemp("deployed")
    with agent_helpers.lab_api(tmp, f"h12d{os.getpid() % 100000}") as (server, ns, cfg):
        docs = render("lab")
        server.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([d for d in docs if d["kind"] in APPLIED]))
        secrets = tmp / "secrets"
        secrets.mkdir()
        token = server.kubectl("create", "token", "kubeweft", "-n", "kube-system").stdout.strip()
        (secrets / "token").write_text(token)
        (secrets / "namespace").write_text("kube-system")
        (secrets / "ca.crt").write_bytes((server.state / "pki" / "ca.crt").read_bytes())
        env = container_env(docs, "agent", {"spec.nodeName": NODE, "status.hostIP": cfg.control_plane_ip})
        argv = container_argv(docs, "agent", tmp / "host")
        project_config_maps(docs, "agent", tmp / "host")
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KUBE", "NODE_NAME"))}
        log_path = tmp / "agent.log"
        seen: dict = {"env": env, "token": token, "argv": argv}
        with open(log_path, "wb") as log:
            agent = subprocess.Popen(in_cluster_launcher(secrets) + argv, env={**base_env, **env}, cwd=tmp,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     preexec_fn=netns.preexec(ns))  # noqa: PLW1509 - the main thread
        try:
            def alive() -> None:
                assert agent.poll() is None, f"the agent exited {agent.returncode}:\n{log_path.read_text()[-4000:]}"

            wait_for("the agent waiting for the podCIDR", lambda: alive() or
                     "waiting for the podCIDR" in log_path.read_text(), timeout=60)
            seen["waiting"] = {"livez": health(ns, "/livez"), "readyz": http_get(ns, "127.0.0.1", 10256, "/readyz")}
            # the Node registers now; the lab's node IPAM controller gives it a podCIDR
            server.kubectl("create", "-f", "-", input=json.dumps(
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}))
            t0 = time.monotonic()
            wait_for("/readyz 200", lambda: alive() or health(ns, "/readyz") == 200, timeout=120, interval=0.5)
            seen["ready_after"] = time.monotonic() - t0
            seen["ready"] = http_get(ns, "127.0.0.1", 10256, "/readyz")
            seen["livez"] = health(ns, "/livez")
            seen["rss_kib"] = agent_rss_kib(agent.pid)
            seen["node"] = json.loads(server.kubectl("get", "node", NODE, "-o", "json").stdout)
        finally:
            seen["rc"] = terminate(agent)
            seen["agent_log"] = log_path.read_text()
        yield seen, server


def agent_rss_kib(launcher_pid: int) -> int:
    """The agent's resident memory (the process the launcher exec'd into: same PID)."""
    for line in Path(f"/proc/{launcher_pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_livez_answers_while_the_agent_waits_for_its_pod_cidr_and_readyz_does_not(deployed):
    seen, _ = deployed
    assert seen["waiting"]["livez"] == 200
    status, body = seen["waiting"]["readyz"]
    assert status == 503, body
    assert json.loads(body)["checks"] == {"cni": "waiting", "services": "waiting", "policy": "waiting"}


def test_readyz_once_the_cni_answers_and_the_first_syncs_are_in(deployed):
    seen, _ = deployed
    status, body = seen["ready"]
    assert status == 200 and json.loads(body)["checks"] == {"cni": "ok", "services": "ok", "policy": "ok"}
    assert seen["livez"] == 200
    print(f"ready {seen['ready_after']:.1f} s after the podCIDR; agent RSS {seen['rss_kib'] / 1024:.0f} MiB")


def test_the_in_cluster_client_used_the_overlays_endpoint_and_the_mounted_token(deployed):
    seen, _ = deployed
    assert seen["env"]["KUBERNETES_SERVICE_HOST"] == "192.168.56.1"
    assert "API server https://192.168.56.1:6443 (in-cluster" in seen["agent_log"]
    assert seen["env"]["KUBEWEFT_NODE_IP"] == "192.168.56.1"
    assert "chosen by the node's address 192.168.56.1" in seen["agent_log"]


def test_the_agent_read_the_mounted_proxy_configuration(deployed):
    """The DaemonSet's mount of kube-system/kubeweft, not the API (whose ConfigMap the
    ServiceAccount may not read)."""
    seen, server = deployed
    assert "--config" in seen["argv"]
    assert "service proxy: mode nftables, scheduler random" in seen["agent_log"]
    requests = sa_requests((server.root / "apiserver.log").read_text())
    assert not [r for r in requests if "/configmaps" in r[1]], requests


def test_every_request_of_the_service_account_was_allowed(deployed):
    seen, server = deployed
    requests = sa_requests((server.root / "apiserver.log").read_text())
    denied = [r for r in requests if r[2] == 403]
    assert not denied, denied
    assert "403" not in seen["agent_log"] and "Forbidden" not in seen["agent_log"], seen["agent_log"][-4000:]
    paths = {(method, path) for method, path, status in requests if status < 400}
    # the lists of each informer (watches are logged when they end, which a SIGTERM may cut)
    for path in ("/api/v1/nodes", "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices",
                 "/api/v1/pods", "/api/v1/namespaces", "/apis/networking.k8s.io/v1/networkpolicies",
                 f"/api/v1/nodes/{NODE}"):
        assert ("GET", path) in paths, (path, sorted(paths))
    assert ("PATCH", f"/api/v1/nodes/{NODE}/status") in paths
    # the status writer's election, under the Role in kube-system
    assert ("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kubeweft-cnp-status") in paths
    assert seen["rc"] == 0, seen["agent_log"][-4000:]


def test_the_overlay_annotation_went_through_node_status(deployed):
    seen, _ = deployed
    annotations = seen["node"]["metadata"]["annotations"]
    assert annotations["kubeweft.io/public-ip"] == "192.168.56.1"
    assert annotations["kubeweft.io/backend-type"] == "vxlan"
    assert annotations["kubeweft.io/vtep-mac"]


def test_the_service_account_cannot_change_a_nodes_spec(deployed):
    """The counterpart of the no-403 test: the same token, a write the role does not grant, is
    refused, and the API server's log shows that 403 for the ServiceAccount."""
    seen, server = deployed
    as_agent = ("--token", seen["token"])
    proc = server.kubectl(*as_agent, "patch", "node", NODE, "--type", "merge", "-p",
                          '{"spec":{"unschedulable":true}}', check=False)
    assert proc.returncode != 0 and "Forbidden" in proc.stderr, proc.stderr
    assert server.kubectl(*as_agent, "auth", "can-i", "patch", "nodes", "--subresource=status").stdout.strip() == "yes"
    assert server.kubectl(*as_agent, "auth", "can-i", "create", "events", check=False).stdout.strip() == "no"
    log = (server.root / "apiserver.log").read_text()
    assert ("PATCH", f"/api/v1/nodes/{NODE}", 403) in sa_requests(log)
