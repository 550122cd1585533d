"""A Pod as the kubelet reads it: containers, probes, env references, volumes, grace."""
from kubeweft.lab.kubelet import podspec


def pod_obj(**spec_extra) -> dict:
    return {
        "metadata": {"name": "web", "namespace": "demo", "uid": "u-1", "resourceVersion": "7",
                     "labels": {"app": "web"}},
        "spec": {"nodeName": "node2", "containers": [{
            "name": "app", "image": "nginx:1.27", "command": ["sh"], "args": ["-c", "echo $(X)"],
            "ports": [{"containerPort": 80, "name": "http"},
                      {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}],
            "env": [{"name": "A", "value": "1"},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                       "divisor": "1Mi"}}},
                    {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": True}}},
                    {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}}],
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "sec"}}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 0},
            "livenessProbe": {"exec": {"command": ["true"]}, "failureThreshold": 2,
                              "terminationGracePeriodSeconds": 5},
            "startupProbe": {"grpc": {"port": 9}},
            "volumeMounts": [{"name": "conf", "mountPath": "/etc/conf", "readOnly": True, "subPath": "x"}],
        }], "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
            "volumes": [{"name": "conf", "configMap": {"name": "cm", "items": [{"key": "k", "path": "k.txt"}],
                                                       "defaultMode": 0o400}},
                        {"name": "host", "hostPath": {"path": "/etc/cni/net.d", "type": "DirectoryOrCreate"}},
                        {"name": "scratch", "emptyDir": {"medium": "Memory"}},
                        {"name": "token", "projected": {"sources": [
                            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                            {"configMap": {"name": "kube-root-ca.crt"}},
                            {"downwardAPI": {"items": [{"path": "namespace",
                                                        "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
                        {"name": "nfs", "nfs": {"server": "x"}}],
            "restartPolicy": "OnFailure", "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]},
            **spec_extra},
        "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                   "containerStatuses": [{"name": "app", "restartCount": 3, "ready": True,
                                          "lastState": {"terminated": {"exitCode": 2}}}]},
    }


def test_containers_probes_and_env_references():
    pod = podspec.parse_pod(pod_obj(terminationGracePeriodSeconds=7))
    assert (pod.key, pod.node_name, pod.container_names, pod.restart_policy) == ("demo/web", "node2", ("app",),
                                                                                 "OnFailure")
    c = pod.containers[0]
    assert (c.image, c.command, c.args) == ("nginx:1.27", ("sh",), ("-c", "echo $(X)"))
    assert c.readiness == podspec.Probe("http", port=80, path="/ready", period=10.0)     # named port; 0: default
    assert c.liveness.kind == "exec" and c.liveness.command == ("true",) and c.liveness.grace == 5
    assert c.liveness.failure_threshold == 2
    assert c.startup is None                                 # gRPC probes are not run
    assert c.env[0] == podspec.EnvVar("A", "1")
    assert c.env[1].field == podspec.FieldRef(field_path="spec.nodeName")
    assert c.env[2].field == podspec.FieldRef(resource="limits.memory", divisor="1Mi")
    assert c.env[3].key == podspec.KeyRef("configmap", "cm", "k", True)
    assert c.env[4].key == podspec.KeyRef("secret", "sec", "pw", False)
    assert c.env_from == (podspec.EnvFrom("configmap", "cm", "CM_"), podspec.EnvFrom("secret", "sec"))
    assert c.mounts == (podspec.VolumeMount("conf", "/etc/conf", True, "x"),)
    assert pod.init_containers[0].command == ("true",)
    assert pod.grace_seconds == 7 and pod.labels == (("app", "web"),)
    assert pod.statuses[0].restart_count == 3 and pod.statuses[0].ready and pod.statuses[0].last == {"exitCode": 2}
    assert pod.dns_policy == "None" and pod.dns_nameservers == ("1.1.1.1",) and pod.dns_options == (("ndots", "2"),)


def test_volumes_by_kind():
    vols = {v.name: v for v in podspec.parse_pod(pod_obj()).volumes}
    assert vols["conf"].kind == "configMap" and vols["conf"].default_mode == 0o400
    assert vols["conf"].sources == (podspec.Projection("configmap", "cm", (podspec.KeyToPath("k", "k.txt"),)),)
    assert (vols["host"].kind, vols["host"].path, vols["host"].host_type) == ("hostPath", "/etc/cni/net.d",
                                                                              "DirectoryOrCreate")
    assert vols["scratch"].medium == "Memory"
    kinds = [p.kind for p in vols["token"].sources]
    assert kinds == ["token", "configmap", "downward"]
    assert vols["token"].sources[0].expiration == 3607 and vols["token"].sources[0].path == "token"
    assert vols["nfs"].kind == "other"


def test_deletion_grace_wins_over_spec_and_defaults():
    obj = pod_obj(terminationGracePeriodSeconds=7)
    obj["metadata"].update(deletionTimestamp="2026-01-01T00:01:00Z", deletionGracePeriodSeconds=2)
    pod = podspec.parse_pod(obj)
    assert pod.deleting and pod.grace_seconds == 2
    bare = podspec.parse_pod({"metadata": {"name": "x", "namespace": "d", "uid": "u"}, "spec": {}})
    assert bare.grace_seconds == podspec.DEFAULT_GRACE and bare.container_names == ("main",)
    assert bare.restart_policy == "Always" and bare.service_links


def test_tcp_probe_and_unknown_named_port():
    ports = (podspec.Port(8080, name="web"),)
    assert podspec.parse_probe({"tcpSocket": {"port": 8080}, "timeoutSeconds": 2}, ports).kind == "tcp"
    assert podspec.parse_probe({"tcpSocket": {"port": "nope"}}, ports) is None
    assert podspec.parse_probe({"exec": {"command": []}}, ports) is None


def test_a_stand_in_pod_from_the_kubelet_record():
    pod = podspec.pod_from_record("u", {"namespace": "d", "name": "x", "containers": {"a": {}, "b": {}}}, "node1")
    assert pod.container_names == ("a", "b") and pod.grace_seconds == 2
