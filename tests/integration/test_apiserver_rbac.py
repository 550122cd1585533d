"""Identities and RBAC on the lab API server, through a real kubectl and the real kubernetes
client: ServiceAccount tokens (TokenRequest, audience, expiry), 401 and 403 with the real bodies,
impersonation and `kubectl auth can-i`. One server for the module, on loopback; no namespaces.
"""
from __future__ import annotations

import base64
import json
import os
import ssl
import time
import urllib.error
import urllib.request

import jwt
import kubernetes
import pytest
from kubernetes.client.rest import ApiException
from kubeweft.lab.apiserver import tokens

from .apiserver_proc import ROOT, Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NS, OTHER = "team", "elsewhere"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("rbac"), f"rb{os.getpid()}")
    try:
        s.kubectl("create", "namespace", NS)
        s.kubectl("create", "namespace", OTHER)
        s.kubectl("create", "serviceaccount", "reader", "-n", NS)
        s.kubectl("create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods", "-n", NS)
        s.kubectl("create", "rolebinding", "reader-pods", "--role=pod-reader",
                  f"--serviceaccount={NS}:reader", "-n", NS)
        yield s
    finally:
        assert s.stop() == 0


@pytest.fixture(scope="module")
def admin(server):
    client = kubernetes.config.new_client_from_config(str(server.kubeconfig))
    try:
        yield client
    finally:
        client.close()


def client_with_token(server, token: str) -> kubernetes.client.ApiClient:
    conf = kubernetes.client.Configuration()
    conf.host = f"https://127.0.0.1:{server.ready['port']}"
    conf.ssl_ca_cert = str(server.state / "pki" / "ca.crt")
    conf.api_key = {"authorization": f"Bearer {token}"}
    return kubernetes.client.ApiClient(conf)


def request_token(admin, name="reader", audiences=None, seconds=None) -> tuple[str, object]:
    spec = {}
    if audiences:
        spec["audiences"] = audiences
    if seconds:
        spec["expirationSeconds"] = seconds
    tr = kubernetes.client.CoreV1Api(admin).create_namespaced_service_account_token(
        name, NS, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
    return tr.status.token, tr


def raw_get(server, path: str, token: str | None) -> tuple[int, dict]:
    ctx = ssl.create_default_context(cafile=str(server.state / "pki" / "ca.crt"))
    req = urllib.request.Request(f"https://127.0.0.1:{server.ready['port']}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_role_grants_list_pods_in_its_namespace_only(server, admin):
    token, _ = request_token(admin)
    with client_with_token(server, token) as c:
        core = kubernetes.client.CoreV1Api(c)
        assert core.list_namespaced_pod(NS).items == []
        with pytest.raises(ApiException) as e:
            core.list_namespaced_pod(OTHER)
        assert e.value.status == 403
        body = json.loads(e.value.body)
        assert body["reason"] == "Forbidden" and body["details"] == {"kind": "pods"}
        assert body["message"] == (f'pods is forbidden: User "system:serviceaccount:{NS}:reader" cannot list '
                                   f'resource "pods" in API group "" in the namespace "{OTHER}"')
        with pytest.raises(ApiException) as e:
            core.list_pod_for_all_namespaces()
        assert json.loads(e.value.body)["message"] == (
            f'pods is forbidden: User "system:serviceaccount:{NS}:reader" cannot list resource "pods" in API '
            'group "" at the cluster scope')
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map(NS, {"metadata": {"name": "x"}})
        assert e.value.status == 403
    # kubectl with the token prints the same message
    p = server.kubectl("--token", token, "get", "pods", "-n", OTHER, check=False)
    assert p.returncode != 0
    assert (f'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:{NS}:reader" '
            f'cannot list resource "pods" in API group "" in the namespace "{OTHER}"') in p.stderr
    # discovery is open to every authenticated identity, so kubectl can resolve kinds
    p = server.kubectl("--token", token, "get", "pods", "-n", NS)
    assert "No resources found" in p.stderr


def test_kubectl_auth_can_i_agrees(server):
    who = f"system:serviceaccount:{NS}:reader"

    def can_i(*args: str) -> str:
        return server.kubectl("auth", "can-i", *args, check=False).stdout.strip()
    assert can_i("list", "pods", "--as", who, "-n", NS) == "yes"
    assert can_i("list", "pods", "--as", who, "-n", OTHER) == "no"
    assert can_i("list", "pods", "--as", who, "-A") == "no"
    assert can_i("delete", "pods", "--as", who, "-n", NS) == "no"
    assert can_i("list", "pods") == "yes"               # the admin
    assert can_i("create", "clusterroles") == "yes"
    # the ServiceAccount asking about itself with its own token
    token = server.kubectl("create", "token", "reader", "-n", NS).stdout.strip()
    assert server.kubectl("--token", token, "auth", "can-i", "watch", "pods", "-n", NS).stdout.strip() == "yes"
    listing = server.kubectl("--token", token, "auth", "can-i", "--list", "-n", NS).stdout
    assert any(line.split()[0] == "pods" and "[get list watch]" in line for line in listing.splitlines() if line)
    whoami = server.kubectl("--token", token, "auth", "whoami", "-o", "json").stdout
    info = json.loads(whoami)["status"]["userInfo"]
    assert info["username"] == who
    assert info["groups"] == ["system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated"]


def test_impersonation_needs_the_impersonate_verb(server, admin):
    token, _ = request_token(admin)
    p = server.kubectl("--token", token, "get", "pods", "-n", NS, "--as", "bob", check=False)
    assert p.returncode != 0
    assert (f'users "bob" is forbidden: User "system:serviceaccount:{NS}:reader" cannot impersonate resource '
            '"users" in API group "" at the cluster scope') in p.stderr
    # the admin may, and then acts as bob (who may do nothing)
    p = server.kubectl("get", "pods", "-n", NS, "--as", "bob", check=False)
    assert 'User "bob" cannot list resource "pods"' in p.stderr
    p = server.kubectl("get", "pods", "-n", NS, "--as", "bob", "--as-group", "system:masters")
    assert p.returncode == 0


def test_token_request_audience_and_expiry(server, admin):
    token, tr = request_token(admin, audiences=["vault"], seconds=600)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == ["vault"] and claims["exp"] - claims["iat"] == 600
    assert claims["sub"] == f"system:serviceaccount:{NS}:reader" and claims["iss"] == tokens.ISSUER
    assert claims["kubernetes.io"]["namespace"] == NS
    assert abs(tr.status.expiration_timestamp.timestamp() - (time.time() + 600)) < 30
    assert tr.spec.audiences == ["vault"] and tr.spec.expiration_seconds == 600
    # a token for another audience does not authenticate to the API server
    status, body = raw_get(server, f"/api/v1/namespaces/{NS}/pods", token)
    assert (status, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")
    # the default audience is the API server's, valid for an hour
    token, _ = request_token(admin)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == [tokens.ISSUER] and claims["exp"] - claims["iat"] == 3600
    assert raw_get(server, f"/api/v1/namespaces/{NS}/pods", token)[0] == 200
    # too short a duration is refused as the real server words it
    with pytest.raises(ApiException) as e:
        request_token(admin, seconds=60)
    assert e.value.status == 422
    assert "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes" \
        in json.loads(e.value.body)["message"]


def test_expired_and_foreign_tokens_are_401(server, admin):
    sa = kubernetes.client.CoreV1Api(admin).read_namespaced_service_account("reader", NS)
    signer = tokens.Signer.from_pem((server.state / "pki" / "sa.key").read_bytes())
    now = int(time.time())
    claims = tokens.plan_claims(NS, "reader", sa.metadata.uid, list(tokens.API_AUDIENCES), now - 7200, 3600)
    assert raw_get(server, f"/api/v1/namespaces/{NS}/pods", signer.issue(claims))[0] == 401
    fresh = tokens.plan_claims(NS, "reader", sa.metadata.uid, list(tokens.API_AUDIENCES), now, 3600)
    assert raw_get(server, f"/api/v1/namespaces/{NS}/pods", signer.issue(fresh))[0] == 200
    assert raw_get(server, f"/api/v1/namespaces/{NS}/pods", tokens.Signer.generate().issue(fresh))[0] == 401


def test_token_dies_with_its_service_account(server, admin):
    server.kubectl("create", "serviceaccount", "shortlived", "-n", NS)
    server.kubectl("create", "rolebinding", "shortlived", "--role=pod-reader",
                   f"--serviceaccount={NS}:shortlived", "-n", NS)
    token = server.kubectl("create", "token", "shortlived", "-n", NS).stdout.strip()
    assert raw_get(server, f"/api/v1/namespaces/{NS}/pods", token)[0] == 200
    server.kubectl("delete", "serviceaccount", "shortlived", "-n", NS)
    assert raw_get(server, f"/api/v1/namespaces/{NS}/pods", token)[0] == 401
    server.kubectl("create", "serviceaccount", "shortlived", "-n", NS)      # same name, another uid
    assert raw_get(server, f"/api/v1/namespaces/{NS}/pods", token)[0] == 401


def test_anonymous_is_401(server):
    for path in ("/api/v1/pods", "/api", "/version"):
        status, body = raw_get(server, path, None)
        assert status == 401
        assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    assert raw_get(server, "/api/v1/pods", "not-a-token")[0] == 401


def test_default_service_account_and_root_ca_in_every_namespace(server):
    server.kubectl("create", "namespace", "fresh")
    deadline = time.monotonic() + 10
    while True:
        p = server.kubectl("get", "serviceaccount", "default", "-n", "fresh", check=False)
        if p.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert p.returncode == 0, p.stderr
    ca = server.kubectl("get", "configmap", "kube-root-ca.crt", "-n", "fresh",
                        "-o", "jsonpath={.data.ca\\.crt}").stdout
    assert ca == (server.state / "pki" / "ca.crt").read_text()
    server.kubectl("delete", "serviceaccount", "default", "-n", "fresh")
    deadline = time.monotonic() + 10
    while server.kubectl("get", "serviceaccount", "default", "-n", "fresh", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the default ServiceAccount was not made again"
        time.sleep(0.1)


def test_secret_data_is_base64(server):
    server.kubectl("create", "secret", "generic", "db", "-n", NS, "--from-literal=password=s3cr3t!",
                   "--from-literal=user=admin")
    out = server.kubectl("get", "secret", "db", "-n", NS, "-o", "jsonpath={.data.password}").stdout
    assert base64.b64decode(out).decode() == "s3cr3t!"
    assert server.kubectl("get", "secret", "db", "-n", NS, "-o", "jsonpath={.type}").stdout == "Opaque"
    server.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"user": "root"}}))
    obj = json.loads(server.kubectl("get", "secret", "db", "-n", NS, "-o", "json").stdout)
    assert "stringData" not in obj
    assert base64.b64decode(obj["data"]["user"]).decode() == "root"
    table = server.kubectl("get", "secrets", "-n", NS).stdout.split()
    assert table[:4] == ["NAME", "TYPE", "DATA", "AGE"] and table[4:7] == ["db", "Opaque", "2"]


def test_config_map_round_trip(server, admin):
    server.kubectl("create", "configmap", "settings", "-n", NS, "--from-literal=mode=fast",
                   "--from-literal=level=3")
    assert server.kubectl("get", "cm", "settings", "-n", NS, "-o", "jsonpath={.data.mode}").stdout == "fast"
    core = kubernetes.client.CoreV1Api(admin)
    core.patch_namespaced_config_map("settings", NS, {"data": {"mode": "slow"}})
    assert core.read_namespaced_config_map("settings", NS).data == {"level": "3", "mode": "slow"}
    p = server.kubectl("create", "configmap", "bad", "-n", NS, "--from-literal=a b=1", check=False)
    assert p.returncode != 0


def test_kubectl_get_and_explain_new_kinds(server):
    server.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "node1", "leaseDurationSeconds": 40}}))
    headers = {"endpoints": ["NAME", "ENDPOINTS", "AGE"], "configmaps": ["NAME", "DATA", "AGE"],
               "serviceaccounts": ["NAME", "SECRETS", "AGE"], "roles": ["NAME", "CREATED", "AT"],
               "rolebindings": ["NAME", "ROLE", "AGE"], "clusterroles": ["NAME", "CREATED", "AT"],
               "clusterrolebindings": ["NAME", "ROLE", "AGE"], "leases": ["NAME", "HOLDER", "AGE"]}
    for kind, header in headers.items():
        out = server.kubectl("get", kind, "-n", NS if kind != "endpoints" else "default").stdout
        assert out.split()[:len(header)] == header, (kind, out)
    assert "leader   node1" in server.kubectl("get", "leases", "-n", NS).stdout
    assert "cluster-admin " in server.kubectl("get", "clusterroles").stdout
    explained = server.kubectl("explain", "configmap.data").stdout
    assert "FIELD: data <map[string]string>" in explained
    assert "Data contains the configuration data." in explained
    assert "FIELD: image <string>" in server.kubectl("explain", "pods.spec.containers.image").stdout
    assert "FIELD: rules <[]PolicyRule>" in server.kubectl("explain", "clusterrole.rules").stdout
    for kind in ("secret", "serviceaccount", "endpoints", "role", "clusterrolebinding", "lease",
                 "selfsubjectaccessreview", "pod", "service", "networkpolicy"):
        p = server.kubectl("explain", kind)
        assert "DESCRIPTION:" in p.stdout and "apiVersion" in p.stdout, kind


def test_list_round_trip_through_apply(server):
    for name in ("lr-a", "lr-b"):
        server.kubectl("run", name, "-n", NS, "--image=any", "--labels=round=trip")
    listing = server.kubectl("get", "pods", "-n", NS, "-l", "round=trip", "-o", "yaml").stdout
    assert "kind: List" in listing
    p = server.kubectl("apply", "-f", "-", input=listing)
    assert "pod/lr-a configured" in p.stdout and "pod/lr-b configured" in p.stdout
    pods = json.loads(server.kubectl("get", "pods", "-n", NS, "-l", "round=trip", "-o", "json").stdout)["items"]
    assert [p["metadata"]["name"] for p in pods] == ["lr-a", "lr-b"]
    assert all("kubectl.kubernetes.io/last-applied-configuration" in p["metadata"]["annotations"] for p in pods)
    # a List item with a field no Pod has is refused (each item is sent with fieldValidation=Strict)
    bad = listing.replace("  spec:\n", "  spec:\n    notAField: 1\n", 1)
    p = server.kubectl("apply", "-f", "-", input=bad, check=False)
    assert p.returncode != 0 and 'unknown field "spec.notAField"' in p.stderr


def wait_for(what, check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            assert got, f"timed out waiting for {what}"
            return got
        time.sleep(0.1)


def test_endpoints_follow_endpoint_slices(server, admin):
    core = kubernetes.client.CoreV1Api(admin)
    disc = kubernetes.client.DiscoveryV1Api(admin)
    core.create_namespaced_service(NS, {"metadata": {"name": "web", "labels": {"tier": "front"}}, "spec": {
        "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})

    def set_pod(name, ip, ready):
        core.patch_namespaced_pod_status(name, NS, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})

    for i in (1, 2):
        core.create_namespaced_pod(NS, {"metadata": {"name": f"web-{i}", "labels": {"app": "web"}},
                                        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}})
    set_pod("web-1", "10.1.0.1", True)
    set_pod("web-2", "10.1.0.2", False)

    def endpoints():
        try:
            ep = core.read_namespaced_endpoints("web", NS)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None          # the endpoints controller has not written it yet
            raise
        return [(sorted(a.ip for a in s.addresses or []), sorted(a.ip for a in s.not_ready_addresses or []),
                 [(p.name, p.port) for p in s.ports]) for s in ep.subsets or []]

    def slice_view():
        slices = disc.list_namespaced_endpoint_slice(NS, label_selector="kubernetes.io/service-name=web").items
        eps = [e for s in slices for e in s.endpoints or []]
        ports = sorted({(p.name, p.port) for s in slices for p in s.ports or []})
        return (sorted(a for e in eps if e.conditions.ready for a in e.addresses),
                sorted(a for e in eps if not e.conditions.ready and not e.conditions.terminating
                       for a in e.addresses), ports)

    want = [(["10.1.0.1"], ["10.1.0.2"], [("http", 8080)])]
    wait_for("endpoints with one ready and one not ready address", lambda: endpoints() == want)
    assert [tuple(x) for x in want] == [slice_view()]
    ep = core.read_namespaced_endpoints("web", NS)
    assert ep.metadata.labels == {"tier": "front", "endpointslice.kubernetes.io/skip-mirror": "true"}
    assert ep.subsets[0].addresses[0].target_ref.name == "web-1"
    set_pod("web-2", "10.1.0.2", True)
    wait_for("both ready", lambda: endpoints() == [(["10.1.0.1", "10.1.0.2"], [], [("http", 8080)])])
    out = server.kubectl("get", "endpoints", "web", "-n", NS)
    assert "10.1.0.1:8080,10.1.0.2:8080" in out.stdout
    assert "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice" in out.stderr
    core.delete_namespaced_pod("web-1", NS, grace_period_seconds=0)
    wait_for("web-1 gone", lambda: endpoints() == [(["10.1.0.2"], [], [("http", 8080)])])
    core.delete_namespaced_pod("web-2", NS, grace_period_seconds=0)
    wait_for("no endpoints", lambda: endpoints() == [])
    core.delete_namespaced_service("web", NS)

    def gone():
        try:
            core.read_namespaced_endpoints("web", NS)
            return False
        except ApiException as e:
            return e.status == 404
    wait_for("the Endpoints to go with the Service", gone)


def test_no_escalation_through_roles_and_bindings(server):
    server.kubectl("create", "serviceaccount", "granter", "-n", NS)
    server.kubectl("create", "rolebinding", "granter-admin", "--clusterrole=admin",
                   f"--serviceaccount={NS}:granter", "-n", NS)
    token = server.kubectl("create", "token", "granter", "-n", NS).stdout.strip()
    # what admin holds, it may grant
    server.kubectl("--token", token, "create", "role", "cm-reader", "--verb=get", "--resource=configmaps", "-n", NS)
    server.kubectl("--token", token, "create", "rolebinding", "cm-reader", "--role=cm-reader",
                   f"--serviceaccount={NS}:reader", "-n", NS)
    # what it does not hold, it may not
    p = server.kubectl("--token", token, "create", "role", "node-reader", "--verb=list", "--resource=nodes",
                       "-n", NS, check=False)
    assert p.returncode != 0
    assert ('roles.rbac.authorization.k8s.io "node-reader" is forbidden: user '
            f'"system:serviceaccount:{NS}:granter" (groups=["system:serviceaccounts" "system:serviceaccounts:{NS}" '
            '"system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
            '{APIGroups:[""], Resources:["nodes"], Verbs:["list"]}') in p.stderr
    p = server.kubectl("--token", token, "create", "rolebinding", "root", "--clusterrole=cluster-admin",
                       f"--serviceaccount={NS}:granter", "-n", NS, check=False)
    assert p.returncode != 0 and "is attempting to grant RBAC permissions not currently held" in p.stderr
    assert server.kubectl("auth", "can-i", "get", "configmaps", "--as", f"system:serviceaccount:{NS}:reader",
                          "-n", NS, check=False).stdout.strip() == "yes"


def test_pods_run_as_a_service_account_with_its_token_mounted(server):
    server.kubectl("run", "sa-pod", "-n", NS, "--image=any")
    spec = json.loads(server.kubectl("get", "pod", "sa-pod", "-n", NS, "-o", "json").stdout)["spec"]
    assert spec["serviceAccountName"] == "default"
    volume = next(v for v in spec["volumes"] if v["name"].startswith("kube-api-access-"))
    sources = volume["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": volume["name"], "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}]
    p = server.kubectl("run", "ghost-pod", "-n", NS, "--image=any", "--overrides",
                       json.dumps({"spec": {"serviceAccountName": "ghost"}}), check=False)
    assert p.returncode != 0
    assert (f'pods "ghost-pod" is forbidden: error looking up service account {NS}/ghost: '
            'serviceaccount "ghost" not found') in p.stderr


def test_the_agents_service_account_from_deploy(server):
    server.kubectl("apply", "-f", str(ROOT / "deploy" / "base" / "rbac.yaml"))
    token = server.kubectl("create", "token", "kubeweft", "-n", "kube-system").stdout.strip()
    with client_with_token(server, token) as c:
        core = kubernetes.client.CoreV1Api(c)
        core.list_node()
        core.list_service_for_all_namespaces()
        kubernetes.client.DiscoveryV1Api(c).list_endpoint_slice_for_all_namespaces()
        kubernetes.client.NetworkingV1Api(c).list_network_policy_for_all_namespaces()
        w = kubernetes.watch.Watch()
        for _ in w.stream(core.list_namespace, timeout_seconds=1):
            w.stop()
        with pytest.raises(ApiException) as e:
            core.list_secret_for_all_namespaces()
        assert e.value.status == 403
        with pytest.raises(ApiException) as e:
            core.delete_namespace(NS)
        assert json.loads(e.value.body)["message"] == (
            f'namespaces "{NS}" is forbidden: User "system:serviceaccount:kube-system:kubeweft" cannot delete '
            f'resource "namespaces" in API group "" in the namespace "{NS}"')


def test_long_lived_token_secret(server):
    server.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "reader-token", "annotations": {"kubernetes.io/service-account.name": "reader"}}}))

    def token():
        out = server.kubectl("get", "secret", "reader-token", "-n", NS, "-o", "jsonpath={.data.token}").stdout
        return base64.b64decode(out).decode() if out else ""
    tok = wait_for("the token controller to fill the Secret", token)
    claims = jwt.decode(tok, options={"verify_signature": False})
    assert claims["iss"] == "kubernetes/serviceaccount" and "exp" not in claims
    assert claims["sub"] == f"system:serviceaccount:{NS}:reader"
    ca = server.kubectl("get", "secret", "reader-token", "-n", NS, "-o", "jsonpath={.data.ca\\.crt}").stdout
    assert base64.b64decode(ca).decode() == (server.state / "pki" / "ca.crt").read_text()
    assert raw_get(server, f"/api/v1/namespaces/{NS}/pods", tok)[0] == 200
    server.kubectl("delete", "secret", "reader-token", "-n", NS)
    assert raw_get(server, f"/api/v1/namespaces/{NS}/pods", tok)[0] == 401
