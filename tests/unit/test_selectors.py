"""Label and field selectors: the apimachinery grammar, as predicates."""
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubeweft.lab import errors
from kubeweft.lab.selectors import make_predicate, parse_field_selector, parse_label_selector


def obj(labels=None, **fields):
    o = {"metadata": {"name": fields.pop("name", "a"), "namespace": "default", "labels": labels or {}},
         "spec": {}, "status": {}}
    if "node" in fields:
        o["spec"]["nodeName"] = fields["node"]
    if "phase" in fields:
        o["status"]["phase"] = fields["phase"]
    return o


@pytest.mark.parametrize("sel,labels,want", [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "web"}, True),
    ("app=web", {"app": "db"}, False),
    ("app!=web", {"app": "db"}, True),
    ("app!=web", {}, True),                      # != matches objects without the key
    ("app in (web, db)", {"app": "db"}, True),
    ("app in (web,db)", {"app": "x"}, False),
    ("app notin (web,db)", {}, True),
    ("app notin (web,db)", {"app": "web"}, False),
    ("app", {"app": ""}, True),
    ("app", {}, False),
    ("!app", {}, True),
    ("!app", {"app": "x"}, False),
    ("app in (a,b),tier,!legacy", {"app": "a", "tier": "1"}, True),
    ("app in (a,b),tier,!legacy", {"app": "a", "tier": "1", "legacy": "y"}, False),
    ("example.com/role=x", {"example.com/role": "x"}, True),
    ("", {"any": "thing"}, True),
])
def test_label_selector(sel, labels, want):
    pred = make_predicate(sel, None)
    assert (pred is None or pred(obj(labels))) is want


@pytest.mark.parametrize("sel,o,want", [
    ("metadata.name=a", obj(name="a"), True),
    ("metadata.name==b", obj(name="a"), False),
    ("metadata.name!=b", obj(name="a"), True),
    ("metadata.namespace=default", obj(), True),
    ("spec.nodeName=node1", obj(node="node1"), True),
    ("spec.nodeName=", obj(), True),             # unscheduled pods: the empty nodeName
    ("spec.nodeName!=", obj(node="node1"), True),
    ("status.phase=Running,spec.nodeName=node1", obj(node="node1", phase="Running"), True),
    ("status.phase=Running,spec.nodeName=node2", obj(node="node1", phase="Running"), False),
])
def test_field_selector(sel, o, want):
    assert make_predicate(None, sel)(o) is want


def test_both_selectors_must_match():
    pred = make_predicate("app=web", "spec.nodeName=n1")
    assert pred(obj({"app": "web"}, node="n1"))
    assert not pred(obj({"app": "web"}, node="n2"))
    assert not pred(obj({"app": "db"}, node="n1"))


def test_no_selectors_mean_no_predicate():
    assert make_predicate(None, None) is None
    assert make_predicate("", "") is None


@pytest.mark.parametrize("bad", ["app=(", "a b c", "=x", "app in"])
def test_bad_label_selector_is_400(bad):
    with pytest.raises(errors.APIError) as e:
        parse_label_selector(bad)
    assert e.value.code == 400


def test_bad_field_selector_is_400():
    with pytest.raises(errors.APIError) as e:
        parse_field_selector("spec.nodeName")
    assert e.value.code == 400


label = st.text(alphabet="abcxyz", min_size=1, max_size=3)


@given(st.dictionaries(label, label, max_size=4), label, label)
def test_equality_and_inequality_are_complements(labels, key, value):
    eq, ne = make_predicate(f"{key}={value}", None), make_predicate(f"{key}!={value}", None)
    o = obj(labels)
    assert eq(o) != ne(o)


@given(st.dictionaries(label, label, max_size=4), label)
def test_exists_and_not_exists_are_complements(labels, key):
    o = obj(labels)
    assert make_predicate(key, None)(o) != make_predicate(f"!{key}", None)(o)
