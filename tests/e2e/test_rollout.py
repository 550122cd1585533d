"""An upgrade as users do it: `kubectl rollout restart ds/kubeweft` replaces the agent on every
node while a client keeps one connection to a ClusterIP open and opens new ones. Every request
on the established connection and every new connection is answered, and no pod changes address."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest

NAMESPACE, NAME = "kube-system", "kubeweft"
ROLLOUT_TIMEOUT = 300
STOP_FILE = "/tmp/kw-e2e-stop"

# Runs in the client pod (agnhost's image has bash and curl): one HTTP/1.1 connection kept open
# ("flow N ok|fail"), and a new connection beside it ("new N ok|fail"), every half second until
# STOP_FILE exists or MAX seconds passed. Writes to a broken connection must fail, not kill bash.
FLOW_SCRIPT = r"""
trap '' PIPE
host=$1 port=$2 max=$3 stop=$4
rm -f "$stop"
exec 3<>"/dev/tcp/$host/$port" || { echo "open fail"; exit 1; }
i=0
end=$((SECONDS + max))
while [ ! -e "$stop" ] && [ "$SECONDS" -lt "$end" ]; do
  i=$((i + 1))
  r=fail
  if printf 'GET /hostname HTTP/1.1\r\nHost: e2e\r\n\r\n' >&3 && IFS= read -r -t 5 status <&3; then
    len=0
    while IFS= read -r -t 5 line <&3; do
      line=${line%$'\r'}
      [ -z "$line" ] && break
      case ${line,,} in content-length:*) len=${line#*:}; len=${len//[!0-9]/};; esac
    done
    body=
    [ "${len:-0}" -gt 0 ] && IFS= read -r -N "$len" -t 5 body <&3
    case $status in *" 200 "*) r="ok $body";; esac
  fi
  echo "flow $i $r"
  if out=$(curl -sS -f --connect-timeout 3 -m 4 "http://$host:$port/hostname" 2>&1); then
    echo "new $i ok $out"
  else
    echo "new $i fail $out"
  fi
  sleep 0.5
done
echo "end $i"
"""


def count_lines(lines: list[str], kind: str) -> tuple[int, list[str]]:
    """('flow'|'new') -> (how many tried, the lines that are not "KIND N ok ...")."""
    mine = [ln.split() for ln in lines if ln.startswith(kind + " ")]
    return len(mine), [" ".join(w) for w in mine if w[2:3] != ["ok"]]


def agent_pods(cluster, ds) -> dict[str, str]:
    """node -> uid of its kubeweft pod."""
    selector = ",".join(f"{k}={v}" for k, v in (ds.spec.selector.match_labels or {}).items())
    return {p.spec.node_name: p.metadata.uid
            for p in cluster.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
            if p.metadata.deletion_timestamp is None}


@pytest.mark.disruptive
@pytest.mark.timeout(ROLLOUT_TIMEOUT + 120)
def test_rollout_restart_keeps_flows(cluster, net, record_property):
    ds = cluster.daemonset(NAMESPACE, NAME)
    assert ds is not None, (
        f"no DaemonSet {NAMESPACE}/{NAME} to restart: kubeweft is not installed the way its users "
        f"install it (kubectl apply -k deploy/kind, deploy/k3s or deploy/lab)")
    before = agent_pods(cluster, ds)
    client = net.clients["b" if net.two_nodes else "a"]     # across nodes where there are two
    pods_before = {p.name: p.ip for p in [*net.servers.values(), *net.clients.values()]}

    proc = subprocess.Popen(
        [cluster.kubectl_path, "--kubeconfig", cluster.kubeconfig, "exec", "-n", client.namespace, client.name,
         "--", "bash", "-c", FLOW_SCRIPT, "flow", net.cluster_ip, "80", str(ROLLOUT_TIMEOUT + 60), STOP_FILE],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(ln.rstrip("\n") for ln in proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while not any(ln.startswith("flow 1 ") for ln in lines):
            assert proc.poll() is None or reader.is_alive(), f"the client's flow ended at once: {lines}"
            assert time.monotonic() < deadline, f"no first answer on the flow in 20 s: {lines}"
            time.sleep(0.2)
        assert lines[0].startswith("flow 1 ok"), f"the flow failed before the rollout: {lines}"

        started = time.monotonic()
        cluster.kubectl("rollout", "restart", f"ds/{NAME}", "-n", NAMESPACE)
        status = cluster.kubectl("rollout", "status", f"ds/{NAME}", "-n", NAMESPACE,
                                 f"--timeout={ROLLOUT_TIMEOUT}s", timeout=ROLLOUT_TIMEOUT + 30, check=False)
        rollout_seconds = time.monotonic() - started
        assert status.returncode == 0, f"rollout did not finish: {status.stdout}{status.stderr}"
        time.sleep(3)                 # the flow and new connections after the last agent is back
    finally:
        cluster.exec(client, "touch", STOP_FILE)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=10)

    flows, flow_failed = count_lines(lines, "flow")
    news, new_failed = count_lines(lines, "new")
    record_property("rollout_seconds", round(rollout_seconds, 1))
    record_property("established_requests", flows)
    record_property("established_failed", len(flow_failed))
    record_property("new_connections", news)
    record_property("new_failed", len(new_failed))
    assert lines and lines[-1].startswith("end "), f"the client's flow did not end cleanly: {lines[-5:]}"
    assert not flow_failed, f"{len(flow_failed)} of {flows} requests on the established connection failed: " \
                            f"{flow_failed[:5]}"
    assert not new_failed, f"{len(new_failed)} of {news} new connections failed: {new_failed[:5]}"

    after = agent_pods(cluster, cluster.daemonset(NAMESPACE, NAME))
    assert set(after) == set(before), f"kubeweft pods on {sorted(before)} before, {sorted(after)} after"
    kept = [n for n in after if after[n] == before[n]]
    assert not kept, f"the rollout left the old kubeweft pod on {kept}"
    pods_after = {p.metadata.name: p.status.pod_ip for p in cluster.core.list_namespaced_pod(net.namespace).items}
    moved = {n: (ip, pods_after.get(n)) for n, ip in pods_before.items() if pods_after.get(n) != ip}
    assert not moved, f"pods changed address across the rollout: {moved}"
