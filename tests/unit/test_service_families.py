"""Service ipFamilyPolicy, ipFamilies and clusterIPs on ipv4, ipv6 and dual clusters: defaults,
the real server's errors, one ClusterIP per family with its IPAddress object, and updates that
add or release the secondary family."""
import pytest
from kubeweft.lab import admission, errors
from kubeweft.lab.config import LabConfig
from kubeweft.lab.resources import BY_PLURAL
from kubeweft.lab.store import Store

NS = BY_PLURAL[("", "namespaces")]
SVC = BY_PLURAL[("", "services")]
ADDRS = BY_PLURAL[("networking.k8s.io", "ipaddresses")]


def lab(ip_family: str):
    cfg = LabConfig(name="fam", ip_family=ip_family)
    s = Store()
    s.create(NS, admission.admit(s, cfg, NS, "CREATE", {"metadata": {"name": "default"}}, None))
    return s, cfg


def svc(name: str, **spec) -> dict:
    spec.setdefault("ports", [{"port": 80}])
    spec.setdefault("selector", {"app": name})
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def create(s, cfg, obj):
    return s.create(SVC, admission.admit(s, cfg, SVC, "CREATE", obj, None))


def update(s, cfg, obj):
    old = s.get(SVC, "default", obj["metadata"]["name"])
    return s.update(SVC, admission.admit(s, cfg, SVC, "UPDATE", obj, old))


def causes(fn, *args) -> list[tuple[str, str]]:
    with pytest.raises(errors.APIError) as e:
        fn(*args)
    assert e.value.code == 422 and e.value.reason == "Invalid"
    return [(c["field"], c["message"]) for c in e.value.details["causes"]]


PRIMARY = {"ipv4": ("IPv4", "10.96.0.1"), "ipv6": ("IPv6", "fd00:10:96::1"), "dual": ("IPv4", "10.96.0.1")}


@pytest.mark.parametrize("ip_family", ["ipv4", "ipv6", "dual"])
def test_default_is_single_stack_in_the_primary_family(ip_family):
    s, cfg = lab(ip_family)
    spec = create(s, cfg, svc("a"))["spec"]
    fam, ip = PRIMARY[ip_family]
    assert spec["ipFamilyPolicy"] == "SingleStack" and spec["ipFamilies"] == [fam]
    assert spec["clusterIP"] == ip and spec["clusterIPs"] == [ip]
    addr = s.get(ADDRS, "", ip)
    assert addr["metadata"]["labels"]["ipaddress.kubernetes.io/ip-family"] == fam


@pytest.mark.parametrize("ip_family,want", [("ipv4", ["IPv4"]), ("ipv6", ["IPv6"]), ("dual", ["IPv4", "IPv6"])])
def test_prefer_dual_stack_takes_every_family_the_cluster_has(ip_family, want):
    s, cfg = lab(ip_family)
    spec = create(s, cfg, svc("a", ipFamilyPolicy="PreferDualStack"))["spec"]
    assert spec["ipFamilies"] == want and len(spec["clusterIPs"]) == len(want)
    assert spec["clusterIP"] == spec["clusterIPs"][0]
    labels = [s.get(ADDRS, "", ip)["metadata"]["labels"]["ipaddress.kubernetes.io/ip-family"]
              for ip in spec["clusterIPs"]]
    assert labels == want


@pytest.mark.parametrize("ip_family", ["ipv4", "ipv6"])
def test_require_dual_stack_is_refused_on_a_single_stack_cluster(ip_family):
    s, cfg = lab(ip_family)
    assert causes(create, s, cfg, svc("a", ipFamilyPolicy="RequireDualStack")) == [
        ("spec.ipFamilyPolicy", ('Invalid value: "RequireDualStack": this cluster is not configured for '
                                "dual-stack services"))]


def test_dual_cluster_honours_family_order_and_requested_ips():
    s, cfg = lab("dual")
    spec = create(s, cfg, svc("a", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv6", "IPv4"]))["spec"]
    assert spec["ipFamilies"] == ["IPv6", "IPv4"]
    assert ":" in spec["clusterIP"] and ":" not in spec["clusterIPs"][1]
    spec = create(s, cfg, svc("b", ipFamilyPolicy="PreferDualStack", clusterIP="fd00:10:96::77",
                              clusterIPs=["fd00:10:96::77", "10.96.0.77"]))["spec"]
    assert spec["ipFamilies"] == ["IPv6", "IPv4"] and spec["clusterIPs"] == ["fd00:10:96::77", "10.96.0.77"]
    # a single-stack Service asking for an IPv6 address gets the IPv6 family
    assert create(s, cfg, svc("c", clusterIP="fd00:10:96::88"))["spec"]["ipFamilies"] == ["IPv6"]


def test_dual_cluster_errors_in_the_real_wording():
    s, cfg = lab("dual")
    assert causes(create, s, cfg, svc("a", ipFamilies=["IPv4", "IPv6"])) == [
        ("spec.ipFamilyPolicy", ('Invalid value: "SingleStack": must be \'RequireDualStack\' or '
                                "'PreferDualStack' when multiple IP families are specified"))]
    assert causes(create, s, cfg, svc("a", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4"],
                                      clusterIP="fd00:10:96::5", clusterIPs=["fd00:10:96::5"])) == [
        ("spec.clusterIPs[0]", ('Invalid value: "fd00:10:96::5": expected an IPv4 value as indicated by '
                               "`ipFamilies[0]`"))]
    assert causes(create, s, cfg, svc("a", ipFamilyPolicy="PreferDualStack", clusterIP="10.96.0.5",
                                      clusterIPs=["10.96.0.5", "10.96.0.6"])) == [
        ("spec.clusterIPs", ('Invalid value: ["10.96.0.5","10.96.0.6"]: may specify no more than one IP '
                            "for each IP family"))]
    assert causes(create, s, cfg, svc("a", ipFamilies=["IPv4", "IPv4"], ipFamilyPolicy="RequireDualStack")) == [
        ("spec.ipFamilies[1]", 'Duplicate value: "IPv4"')]
    assert causes(create, s, cfg, svc("a", ipFamilyPolicy="Both")) == [
        ("spec.ipFamilyPolicy", ('Unsupported value: "Both": supported values: "PreferDualStack", '
                                '"RequireDualStack", "SingleStack"'))]
    create(s, cfg, svc("taken", ipFamilyPolicy="PreferDualStack", clusterIP="10.96.0.9",
                       clusterIPs=["10.96.0.9", "fd00:10:96::9"]))
    assert causes(create, s, cfg, svc("b", ipFamilyPolicy="PreferDualStack", clusterIP="10.96.0.10",
                                      clusterIPs=["10.96.0.10", "fd00:10:96::9"])) == [
        ("spec.clusterIPs", ('Invalid value: ["10.96.0.10","fd00:10:96::9"]: failed to allocate IP '
                            "fd00:10:96::9: provided IP is already allocated"))]
    assert causes(create, s, cfg, svc("b", clusterIP="fd00:99::1")) == [
        ("spec.clusterIPs", ('Invalid value: ["fd00:99::1"]: failed to allocate IP fd00:99::1: the provided '
                            "IP (fd00:99::1) is not in the valid range. The range of valid IPs is "
                            "fd00:10:96::/112"))]


def test_single_stack_cluster_refuses_the_other_family():
    s, cfg = lab("ipv4")
    assert causes(create, s, cfg, svc("a", clusterIP="fd00:10:96::5")) == [
        ("spec.clusterIPs[0]", 'Invalid value: ["fd00:10:96::5"]: IPv6 is not configured on this cluster')]
    s, cfg = lab("ipv6")
    assert causes(create, s, cfg, svc("a", ipFamilies=["IPv4"])) == [
        ("spec.ipFamilies[0]", 'Invalid value: "IPv4": not configured on this cluster')]


@pytest.mark.parametrize("ip_family", ["ipv4", "ipv6", "dual"])
def test_headless_families_follow_the_selector_rules(ip_family):
    s, cfg = lab(ip_family)
    fam = PRIMARY[ip_family][0]
    other = "IPv6" if fam == "IPv4" else "IPv4"
    spec = create(s, cfg, svc("h", clusterIP="None"))["spec"]
    assert spec["ipFamilyPolicy"] == "SingleStack" and spec["ipFamilies"] == [fam]
    assert spec["clusterIPs"] == ["None"]
    # headless without a selector: RequireDualStack and both families, also on a single-stack cluster
    spec = create(s, cfg, svc("n", clusterIP="None", selector=None))["spec"]
    assert spec["ipFamilyPolicy"] == "RequireDualStack" and spec["ipFamilies"] == [fam, other]


def test_external_name_has_no_families():
    s, cfg = lab("dual")
    spec = create(s, cfg, {"metadata": {"name": "x", "namespace": "default"},
                           "spec": {"type": "ExternalName", "externalName": "example.com"}})["spec"]
    assert "ipFamilies" not in spec and "ipFamilyPolicy" not in spec and "clusterIPs" not in spec
    assert causes(create, s, cfg, {"metadata": {"name": "y", "namespace": "default"},
                                   "spec": {"type": "ExternalName", "externalName": "example.com",
                                            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}}) == [
        ("spec.ipFamilies", "Forbidden: may not be set for ExternalName services"),
        ("spec.ipFamilyPolicy", "Forbidden: may not be set for ExternalName services")]


def test_upgrade_adds_and_downgrade_releases_the_secondary():
    s, cfg = lab("dual")
    one = create(s, cfg, svc("a"))
    ip4 = one["spec"]["clusterIP"]
    two = update(s, cfg, dict(one, spec=dict(one["spec"], ipFamilyPolicy="PreferDualStack")))
    assert two["spec"]["ipFamilies"] == ["IPv4", "IPv6"] and two["spec"]["clusterIPs"][0] == ip4
    ip6 = two["spec"]["clusterIPs"][1]
    assert s.try_get(ADDRS, "", ip6) is not None
    # releasing the secondary needs SingleStack
    bad = dict(two, spec=dict(two["spec"], clusterIPs=[ip4], ipFamilies=["IPv4"]))
    assert ("spec.ipFamilyPolicy", ('Invalid value: "PreferDualStack": must be \'SingleStack\' to release the '
                                   "secondary cluster IP")) in causes(update, s, cfg, bad)
    back = update(s, cfg, dict(two, spec=dict(two["spec"], ipFamilyPolicy="SingleStack")))
    assert back["spec"]["ipFamilies"] == ["IPv4"] and back["spec"]["clusterIPs"] == [ip4]
    assert s.try_get(ADDRS, "", ip6) is None
    # the primary family cannot change: the kept IPv4 address no longer matches it
    assert causes(update, s, cfg, dict(back, spec=dict(back["spec"], ipFamilies=["IPv6"]))) == [
        ("spec.clusterIPs[0]", f'Invalid value: "{ip4}": expected an IPv6 value as indicated by `ipFamilies[0]`')]


def test_prefer_dual_stack_left_alone_keeps_its_single_family():
    """A PreferDualStack Service made on a single-stack cluster is not upgraded by an unrelated
    update after the cluster became dual-stack."""
    s4, cfg4 = lab("ipv4")
    made = create(s4, cfg4, svc("a", ipFamilyPolicy="PreferDualStack"))
    s, cfg = lab("dual")
    s.create(SVC, made)
    again = update(s, cfg, dict(made, metadata=dict(made["metadata"], labels={"x": "y"})))
    assert again["spec"]["ipFamilies"] == ["IPv4"] and len(again["spec"]["clusterIPs"]) == 1
