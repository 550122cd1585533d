"""A pod's /etc/resolv.conf, /etc/hosts and /etc/hostname as the kubelet writes them. Pure.

dnsPolicy: ClusterFirst (the default) points at the cluster DNS Service with the namespace's
search path and ndots:5; a hostNetwork pod with ClusterFirst, and Default, get the node's own
resolv.conf; ClusterFirstWithHostNet is ClusterFirst for hostNetwork pods too; None uses
dnsConfig alone. dnsConfig's nameservers, searches and options are merged in as the kubelet does.
"""
from __future__ import annotations

from .podspec import Pod

CLUSTER_DOMAIN = "cluster.local"
MAX_SEARCHES = 32
MAX_NAMESERVERS = 3

HOSTS_HEADER = "# Kubernetes-managed hosts file."
HOSTS_HEADER_HOST_NETWORK = "# Kubernetes-managed hosts file (host network)."
HOSTS_DEFAULTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
                  "fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, searches, options) of a resolv.conf; the last search line wins."""
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields[0] == "options":
            options += fields[1:]
    return servers, searches, options


def _merge_options(base: list[str], extra: tuple[tuple[str, str | None], ...]) -> list[str]:
    """dnsConfig options replace base options of the same name."""
    merged: dict[str, str] = {}
    for opt in base:
        name, _, _ = opt.partition(":")
        merged[name] = opt
    for name, value in extra:
        merged[name] = name if value is None else f"{name}:{value}"
    return list(merged.values())


def render_resolv_conf(pod: Pod, cluster_dns: str, node_resolv: str,
                       cluster_domain: str = CLUSTER_DOMAIN) -> str:
    policy = pod.dns_policy
    if policy == "ClusterFirst" and pod.host_network:
        policy = "Default"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        servers = [cluster_dns]
        searches = [f"{pod.namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        options = ["ndots:5"]
    elif policy == "Default":
        servers, searches, options = parse_resolv_conf(node_resolv)
    else:                                           # None: dnsConfig only
        servers, searches, options = [], [], []
    servers = list(dict.fromkeys(servers + list(pod.dns_nameservers)))[:MAX_NAMESERVERS]
    searches = list(dict.fromkeys(searches + list(pod.dns_searches)))[:MAX_SEARCHES]
    options = _merge_options(options, pod.dns_options)
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {s}" for s in servers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def pod_hostname(pod: Pod, node_name: str) -> str:
    """The pod's hostname: spec.hostname or the pod's name (the node's for hostNetwork), at most
    63 characters, as the kubelet's GeneratePodHostNameAndDomain."""
    if pod.host_network:
        return node_name
    return (pod.hostname or pod.name)[:63].rstrip("-.")


def render_hosts(pod: Pod, pod_ip: str, node_name: str, node_hosts: str = "",
                 cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """/etc/hosts: the defaults and the pod's own name (or the node's file, for hostNetwork),
    then the hostAliases."""
    if pod.host_network:
        text = f"{HOSTS_HEADER_HOST_NETWORK}\n{node_hosts}"
        if not text.endswith("\n"):
            text += "\n"
    else:
        host = pod_hostname(pod, node_name)
        if pod.subdomain:
            names = f"{host}.{pod.subdomain}.{pod.namespace}.svc.{cluster_domain}\t{host}"
        else:
            names = host
        text = f"{HOSTS_HEADER}\n{HOSTS_DEFAULTS}{pod_ip}\t{names}\n"
    if pod.host_aliases:
        text += "\n# Entries added by HostAliases.\n"
        text += "".join(f"{ip}\t{chr(9).join(names)}\n" for ip, names in pod.host_aliases)
    return text
