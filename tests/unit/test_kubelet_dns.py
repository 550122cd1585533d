"""A pod's resolv.conf, hosts and hostname as the kubelet writes them."""
from kubeweft.lab.kubelet import dns, podspec


def pod(**spec) -> podspec.Pod:
    return podspec.parse_pod({"metadata": {"name": "web-0", "namespace": "shop", "uid": "u"},
                              "spec": {"containers": [{"name": "c"}], **spec}})


NODE_RESOLV = "# node\nnameserver 192.168.56.1\nsearch lab.local\noptions edns0\n"


def test_cluster_first_points_at_the_cluster_dns_with_the_namespace_search_path():
    assert dns.render_resolv_conf(pod(), "10.96.0.10", NODE_RESOLV) == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n")


def test_host_network_and_default_use_the_node_file_unless_cluster_first_with_host_net():
    assert dns.render_resolv_conf(pod(hostNetwork=True), "10.96.0.10", NODE_RESOLV) == (
        "search lab.local\nnameserver 192.168.56.1\noptions edns0\n")
    assert dns.render_resolv_conf(pod(dnsPolicy="Default"), "10.96.0.10", NODE_RESOLV).startswith("search lab.local")
    text = dns.render_resolv_conf(pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), "10.96.0.10", "")
    assert "nameserver 10.96.0.10" in text


def test_dns_config_merges_and_none_uses_it_alone():
    cfg = {"nameservers": ["1.1.1.1"], "searches": ["x.test"], "options": [{"name": "ndots", "value": "2"},
                                                                          {"name": "rotate"}]}
    assert dns.render_resolv_conf(pod(dnsConfig=cfg), "10.96.0.10", "") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local x.test\nnameserver 10.96.0.10\n"
        "nameserver 1.1.1.1\noptions ndots:2 rotate\n")
    assert dns.render_resolv_conf(pod(dnsPolicy="None", dnsConfig=cfg), "10.96.0.10", NODE_RESOLV) == (
        "search x.test\nnameserver 1.1.1.1\noptions ndots:2 rotate\n")


def test_hosts_file_with_subdomain_and_aliases():
    text = dns.render_hosts(pod(hostname="db", subdomain="db-svc",
                                hostAliases=[{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]),
                            "10.244.1.7", "node1")
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert "10.244.1.7\tdb.db-svc.shop.svc.cluster.local\tdb\n" in text
    assert text.endswith("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n")
    plain = dns.render_hosts(pod(), "10.244.1.8", "node1")
    assert plain.endswith("fe00::2\tip6-allrouters\n10.244.1.8\tweb-0\n")


def test_host_network_pods_get_the_node_hosts_and_hostname():
    p = pod(hostNetwork=True)
    assert dns.render_hosts(p, "192.168.56.11", "node1", "127.0.0.1\tlocalhost\n192.168.56.11\tnode1") == (
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1\tlocalhost\n192.168.56.11\tnode1\n")
    assert dns.pod_hostname(p, "node1") == "node1" and dns.pod_hostname(pod(), "node1") == "web-0"
