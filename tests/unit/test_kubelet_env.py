"""A container's env as the kubelet builds it: Service links, envFrom, fieldRef, resourceFieldRef,
config references and $(VAR) expansion; the downward API's values and quantities."""
import base64
from fractions import Fraction

import pytest
from kubeweft.lab.kubelet import downward, env, podspec

POD = {"metadata": {"name": "web", "namespace": "demo", "uid": "u-1", "labels": {"b": "2", "a": 'q"x'},
                    "annotations": {"note": "hi"}},
       "spec": {"nodeName": "node2", "serviceAccountName": "sa", "containers": [{
           "name": "app", "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "250m"}},
           "env": [{"name": "FIRST", "value": "one"},
                   {"name": "REF", "value": "$(FIRST)-$(KUBERNETES_SERVICE_HOST)-$(MISSING)-$$(FIRST)"},
                   {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                   {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                   {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                   {"name": "LABEL_A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
                   {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                   {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                   {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                         "divisor": "1Mi"}}},
                   {"name": "REQ_MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
                   {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "color"}}},
                   {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}}],
           "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "sec"}}]}]}}
CM = {"data": {"color": "blue", "bad-name!": "x", "FIRST": "from-cm"}}
SEC = {"data": {"pw": base64.b64encode(b"s3cret").decode()}}
MASTER = env.ServiceView("default", "kubernetes", "10.96.0.1", (("https", 443, "TCP"),))


def facts() -> downward.PodFacts:
    return downward.PodFacts(podspec.parse_pod(POD), "10.244.1.5", "192.168.56.12")


def test_env_order_references_and_service_links():
    f = facts()
    svc_env = env.render_service_env([MASTER, env.ServiceView("demo", "redis-main", "10.96.0.9",
                                                              (("", 6379, "TCP"), ("metrics", 9121, "TCP")))])
    out = env.render_env(f.pod.containers[0], f, svc_env, {("configmap", "cm"): CM, ("secret", "sec"): SEC})
    assert out["REF"] == "one-10.96.0.1-$(MISSING)-$(FIRST)"
    assert (out["NODE"], out["POD_IP"], out["HOST_IP"], out["LABEL_A"]) == ("node2", "10.244.1.5", "192.168.56.12",
                                                                             'q"x')
    assert (out["CPU_M"], out["CPU"], out["MEM_MI"], out["REQ_MEM"]) == ("500", "1", "256", "268435456")
    assert out["KEY"] == "blue" and out["PW"] == "s3cret" and out["pw"] == "s3cret"
    assert out["CM_color"] == "blue" and "CM_bad-name!" not in out
    assert out["FIRST"] == "one"                   # env wins over envFrom
    assert out["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and out["KUBERNETES_SERVICE_PORT"] == "443"
    assert out["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert out["KUBERNETES_PORT"] == out["KUBERNETES_PORT_443_TCP"] == "tcp://10.96.0.1:443"
    assert out["KUBERNETES_PORT_443_TCP_ADDR"] == "10.96.0.1" and out["KUBERNETES_PORT_443_TCP_PROTO"] == "tcp"
    assert out["REDIS_MAIN_SERVICE_HOST"] == "10.96.0.9" and out["REDIS_MAIN_SERVICE_PORT_METRICS"] == "9121"
    assert out["REDIS_MAIN_PORT_9121_TCP_PORT"] == "9121"


def test_headless_services_have_no_variables():
    assert env.render_service_env([env.ServiceView("d", "h", "None", (("", 80, "TCP"),))]) == {}


def test_missing_sources_fail_unless_optional():
    f = facts()
    c = f.pod.containers[0]
    with pytest.raises(env.EnvError, match='configmap "cm" not found'):
        env.render_env(c, f, {}, {("configmap", "cm"): None, ("secret", "sec"): SEC})
    with pytest.raises(env.EnvError, match="couldn't find key pw in Secret demo/sec"):
        env.render_env(c, f, {}, {("configmap", "cm"): CM, ("secret", "sec"): {"data": {}}})
    assert env.referenced_sources(c) == [("configmap", "cm"), ("secret", "sec")]


def test_expand_and_commands():
    assert env.expand("$(A)$(B) $$(A) $(", {"A": "x"}) == "x$(B) $(A) $("
    assert env.expand_command(("echo", "$(A)"), {"A": "1"}) == ["echo", "1"]


def test_quantities_and_downward_fields():
    assert downward.parse_quantity("1.5Gi") == Fraction(3 * 2 ** 29)
    assert downward.parse_quantity("250m") == Fraction(1, 4) and downward.parse_quantity("1e3") == 1000
    with pytest.raises(downward.FieldError):
        downward.parse_quantity("1.5x")
    f = facts()
    assert downward.field_value(f, "metadata.labels") == 'a="q\\"x"\nb="2"'
    assert downward.field_value(f, "metadata.annotations['note']") == "hi"
    assert downward.field_value(f, "spec.serviceAccountName") == "sa"
    with pytest.raises(downward.FieldError, match="unsupported fieldPath"):
        downward.field_value(f, "spec.bogus")
    # no limit: the node's allocatable
    bare = podspec.Container("c")
    assert downward.resource_value(bare, podspec.FieldRef(resource="limits.memory", divisor="1Gi")) == "4"
    assert downward.resource_value(bare, podspec.FieldRef(resource="requests.cpu")) == "0"
