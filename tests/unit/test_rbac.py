"""RBAC as the real authorizer decides it: rule matching, bindings, request attributes, the 403's
wording, the default roles and their aggregation. Pure."""
from __future__ import annotations

import pytest
from kubeweft.lab.apiserver import policy, rbac
from kubeweft.lab.apiserver.attributes import request_attributes
from kubeweft.lab.apiserver.identity import ADMIN, User
from kubeweft.lab.controllers.clusterroles import plan_aggregated_rules

SA = User("system:serviceaccount:team:reader", "u1",
          ("system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"))


def attrs(verb="list", resource="pods", namespace="", group="", sub="", name="", user=SA):
    return rbac.Attributes(user, verb, True, namespace, group, "v1", resource, sub, name)


@pytest.mark.parametrize("rule,a,allowed", [
    ({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}, attrs(), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, attrs(), False),
    ({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, attrs(group="apps", resource="deployments"), True),
    ({"verbs": ["list"], "apiGroups": ["apps"], "resources": ["pods"]}, attrs(), False),
    # a subresource needs its own entry, "*/sub", or "*"
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, attrs("get", sub="log", name="p"), False),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, attrs("get", sub="log", name="p"), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]}, attrs("get", sub="log", name="p"), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, attrs("get", name="p"), False),
    # resourceNames narrow to names: a list (no name) is not covered
    ({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
     attrs("get", name="a"), True),
    ({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
     attrs("get", name="b"), False),
    ({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}, attrs(), False),
])
def test_rule_allows(rule, a, allowed):
    assert rbac.rule_allows(a, rule) is allowed


@pytest.mark.parametrize("urls,path,allowed", [
    (["/healthz"], "/healthz", True), (["/healthz"], "/healthz/etcd", False),
    (["/apis/*"], "/apis/apps", True), (["/apis/*"], "/api", False), (["*"], "/anything", True),
])
def test_non_resource_urls(urls, path, allowed):
    a = rbac.Attributes(SA, "get", False, path=path)
    assert rbac.rule_allows(a, {"verbs": ["get"], "nonResourceURLs": urls}) is allowed
    # a rule for resources never grants a path, nor a path rule a resource
    assert not rbac.rule_allows(a, {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
    assert not rbac.rule_allows(attrs(), {"verbs": ["*"], "nonResourceURLs": ["*"]})


ROLES = {
    ("Role", "team", "pod-reader"): {"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]},
    ("ClusterRole", "", "secret-reader"): {"rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"]}]},
}


def get_role(kind, ns, name):
    return ROLES.get((kind, ns, name))


def binding(name, ns, role_kind, role, subjects):
    meta = {"name": name, "namespace": ns} if ns else {"name": name}
    return {"metadata": meta, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subjects}


SA_SUBJECT = {"kind": "ServiceAccount", "name": "reader", "namespace": "team"}


def test_role_binding_grants_in_its_namespace_only():
    rb = binding("rb", "team", "Role", "pod-reader", [SA_SUBJECT])
    ok = rbac.authorize(attrs(namespace="team"), [], [rb], get_role)
    assert ok.allowed
    assert ok.reason == ('RBAC: allowed by RoleBinding "rb/team" of Role "pod-reader" to '
                         'ServiceAccount "reader/team"')
    # role bindings are only visited for the request's namespace; cluster scope sees none
    assert not rbac.authorize(attrs(namespace=""), [], [rb], get_role).allowed


def test_service_account_subject_defaults_to_the_binding_namespace_and_groups_match():
    rb = binding("rb", "team", "Role", "pod-reader", [{"kind": "ServiceAccount", "name": "reader"}])
    assert rbac.authorize(attrs(namespace="team"), [], [rb], get_role).allowed
    crb = binding("crb", "", "ClusterRole", "secret-reader",
                  [{"kind": "Group", "name": "system:serviceaccounts:team"}])
    d = rbac.authorize(attrs(resource="secrets"), [crb], [], get_role)
    assert d.allowed and d.reason.endswith('to Group "system:serviceaccounts:team"')
    other = User("system:serviceaccount:other:reader", groups=("system:serviceaccounts",))
    assert not rbac.authorize(attrs(resource="secrets", user=other), [crb], [], get_role).allowed


def test_cluster_role_through_a_role_binding_is_namespaced():
    rb = binding("rb", "team", "ClusterRole", "secret-reader", [SA_SUBJECT])
    assert rbac.authorize(attrs(resource="secrets", namespace="team"), [], [rb], get_role).allowed
    assert not rbac.authorize(attrs(resource="secrets"), [], [rb], get_role).allowed


def test_missing_role_is_the_reason_of_the_deny():
    rb = binding("rb", "team", "Role", "gone", [SA_SUBJECT])
    d = rbac.authorize(attrs(namespace="team"), [], [rb], get_role)
    assert not d.allowed
    assert d.reason == 'RBAC: role.rbac.authorization.k8s.io "gone" not found'
    e = rbac.forbidden(attrs(namespace="team"), d.reason)
    assert e.message.endswith('in the namespace "team": RBAC: role.rbac.authorization.k8s.io "gone" not found')


def test_masters_are_allowed_without_rbac():
    assert rbac.authorize(attrs(verb="delete", resource="nodes", user=ADMIN), [], [], get_role).allowed


def test_forbidden_messages_are_the_real_servers():
    e = rbac.forbidden(attrs())
    assert (e.code, e.reason) == (403, "Forbidden")
    assert e.message == ('pods is forbidden: User "system:serviceaccount:team:reader" cannot list resource '
                         '"pods" in API group "" at the cluster scope')
    assert e.status()["details"] == {"kind": "pods"}
    e = rbac.forbidden(attrs(namespace="default"))
    assert e.message.endswith('cannot list resource "pods" in API group "" in the namespace "default"')
    e = rbac.forbidden(attrs("get", "deployments", "team", "apps", name="web"))
    assert e.message.startswith('deployments.apps "web" is forbidden: User ')
    assert e.status()["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    e = rbac.forbidden(attrs("get", sub="log", name="p", namespace="team"))
    assert 'cannot get resource "pods/log" in API group ""' in e.message
    e = rbac.forbidden(rbac.Attributes(SA, "get", False, path="/metrics"))
    assert e.message == 'forbidden: User "system:serviceaccount:team:reader" cannot get path "/metrics"'


@pytest.mark.parametrize("method,path,query,want", [
    ("GET", "/api/v1/namespaces/team/pods", {}, ("list", "team", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/team/pods", {"watch": "true"}, ("watch", "team", "", "pods", "", "")),
    ("GET", "/api/v1/watch/namespaces/team/pods/p", {}, ("watch", "team", "", "pods", "", "p")),
    ("GET", "/api/v1/pods", {"fieldSelector": "metadata.name=p"}, ("list", "", "", "pods", "", "p")),
    ("GET", "/api/v1/namespaces/team/pods/p/log", {}, ("get", "team", "", "pods", "log", "p")),
    ("DELETE", "/apis/apps/v1/namespaces/team/deployments", {}, ("deletecollection", "team", "apps",
                                                                  "deployments", "", "")),
    ("POST", "/api/v1/namespaces/team/serviceaccounts/sa/token", {}, ("create", "team", "", "serviceaccounts",
                                                                       "token", "sa")),
    ("GET", "/api/v1/namespaces/team", {}, ("get", "team", "", "namespaces", "", "team")),
    ("PUT", "/api/v1/namespaces/team/status", {}, ("update", "team", "", "namespaces", "status", "team")),
    ("PATCH", "/api/v1/nodes/n1", {}, ("patch", "", "", "nodes", "", "n1")),
])
def test_request_attributes(method, path, query, want):
    a = request_attributes(SA, method, path, query)
    assert a.resource_request
    assert (a.verb, a.namespace, a.api_group, a.resource, a.subresource, a.name) == want


@pytest.mark.parametrize("path", ["/api", "/apis", "/apis/apps", "/apis/apps/v1", "/api/v1", "/healthz",
                                  "/openapi/v3/api/v1"])
def test_non_resource_paths(path):
    a = request_attributes(SA, "GET", path, {})
    assert not a.resource_request and a.verb == "get" and a.path == path


def test_default_roles_grant_what_kubectl_users_expect():
    roles = {r["metadata"]["name"]: r for r in policy.render_cluster_roles()}
    for name in ("view", "edit", "admin"):         # each aggregates the one before
        roles[name]["rules"] = plan_aggregated_rules(roles[name], list(roles.values()))

    def can(role, verb, resource, group="", sub=""):
        return any(rbac.rule_allows(attrs(verb, resource, "team", group, sub), r) for r in roles[role]["rules"])

    assert can("view", "list", "pods") and can("view", "get", "pods", sub="log")
    assert not can("view", "list", "secrets") and not can("view", "create", "pods")
    assert can("edit", "create", "deployments", "apps") and can("edit", "list", "secrets")
    assert can("edit", "create", "serviceaccounts", sub="token") and can("edit", "list", "pods")
    assert not can("edit", "create", "roles", "rbac.authorization.k8s.io")
    assert can("admin", "create", "roles", "rbac.authorization.k8s.io") and can("admin", "delete", "configmaps")
    assert can("cluster-admin", "delete", "nodes")
    discovery = roles["system:discovery"]["rules"]
    assert any(rbac.rule_allows(rbac.Attributes(SA, "get", False, path="/apis/apps/v1"), r) for r in discovery)


def test_aggregation_follows_labels():
    agg = {"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
        {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}
    r1 = {"metadata": {"name": "b", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
          "rules": [{"verbs": ["get"], "apiGroups": ["x"], "resources": ["widgets"]}]}
    r2 = {"metadata": {"name": "a", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
          "rules": [{"verbs": ["list"], "apiGroups": ["x"], "resources": ["gadgets"]},
                    {"verbs": ["get"], "apiGroups": ["x"], "resources": ["widgets"]}]}
    other = {"metadata": {"name": "c"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}
    assert plan_aggregated_rules(agg, [agg, r1, r2, other]) == r2["rules"]


def test_escalation_covers_and_message():
    owner = [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/log"]},
             {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]},
             {"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]}]
    assert rbac.uncovered(owner, [{"verbs": ["list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}]) == []
    assert rbac.uncovered(owner, [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"],
                                   "resourceNames": ["a"]}]) == []
    # a name-restricted grant does not cover the whole resource
    assert rbac.uncovered(owner, [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert rbac.uncovered(owner, [{"verbs": ["get"], "nonResourceURLs": ["/healthz/etcd"]}]) == []
    missing = rbac.uncovered(owner, [{"verbs": ["delete", "get"], "apiGroups": ["", "apps"], "resources": ["pods"]}])
    assert len(missing) == 3
    assert rbac.escalation_message(SA, missing[:1]) == (
        'user "system:serviceaccount:team:reader" (groups=["system:serviceaccounts" "system:serviceaccounts:team" '
        '"system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
        '{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}')
