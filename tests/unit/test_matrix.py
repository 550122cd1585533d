"""The matrix's pure core: pods -> probes -> the drawn table, legend and summary."""
import re

from kubeweft.lab.matrix import (
    OUTCOME_STYLES,
    PodInfo,
    parse_pods,
    parse_ports,
    plan_probes,
    render_matrix,
    render_table,
    select_pods,
    summarize,
)


def api_pod(name, ip, node, ports=None, ns="default", **spec):
    containers = [{"name": "c", "ports": ports}] if ports is not None else [{"name": "c"}]
    return {"metadata": {"namespace": ns, "name": name},
            "spec": {"nodeName": node, "containers": containers, **spec},
            "status": {"podIP": ip, "phase": "Running" if ip else "Pending"}}


def test_parse_ports():
    assert parse_ports([{"name": "c"}]) == ((8080, "TCP"), (8080, "UDP"))
    assert parse_ports([{"ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]},
                        {"ports": [{"containerPort": 80, "protocol": "TCP"}]}]) == ((80, "TCP"), (53, "UDP"))
    # SCTP is declared but cannot be probed on this kernel
    assert parse_ports([{"ports": [{"containerPort": 9, "protocol": "SCTP"}]}]) == ()


def test_parse_pods_joins_api_and_kubelet_state():
    running = {"default/a": {"netns": "kw-pod-a", "ip": "10.244.1.2", "node": "node1"},
               "default/b": {"netns": "kw-pod-b", "ip": "10.244.2.2", "node": "node2"}}
    pods, notes = parse_pods(
        [api_pod("b", "10.244.2.2", "node2", [{"containerPort": 80}]),
         api_pod("a", "10.244.1.2", "node1"),
         api_pod("c", None, "node1"),
         api_pod("h", "192.168.56.11", "node1", hostNetwork=True),
         {**api_pod("d", "10.244.1.9", "node1"), "metadata": {"namespace": "default", "name": "d",
                                                             "deletionTimestamp": "2026-01-01T00:00:00Z"}}],
        running, lambda node: f"kw-{node}")
    assert [p.key for p in pods] == ["default/a", "default/b", "default/h"]
    assert pods[0] == PodInfo("default/a", "10.244.1.2", "kw-pod-a", "node1", ((8080, "TCP"), (8080, "UDP")))
    assert pods[1].ports == ((80, "TCP"),)
    assert pods[2].netns == "kw-node1"           # hostNetwork: the node's netns
    assert any("default/c" in n for n in notes) and any("default/d" in n for n in notes)


def test_plan_probes_covers_every_pair_port_and_protocol():
    pods = [PodInfo("default/a", "10.0.0.1", "ns-a", "n1", ((80, "TCP"), (80, "UDP"))),
            PodInfo("default/b", "10.0.0.2", "ns-b", "n2", ((81, "TCP"),)),
            PodInfo("default/x", "10.0.0.3", None, "n2", ((82, "TCP"),))]  # no netns: not a source
    probes = plan_probes(pods)
    assert len(probes) == 2 * 4
    assert {p.source for p in probes} == {"default/a", "default/b"}
    assert ("default/b", "default/x", "10.0.0.3", 82, "TCP") in {
        (p.source, p.dest, p.ip, p.port, p.proto) for p in probes}


def test_render_table_layout_is_aligned_and_grouped():
    rows = ["r1", "row-two"]
    cols = [("g1", "80/TCP"), ("g1", "80/UDP"), ("a-very-long-group", "1/TCP")]
    cells = {("r1", cols[0]): "connected", ("r1", cols[1]): "refused",
             ("row-two", cols[2]): "timeout", ("row-two", cols[0]): "weird"}
    lines = render_table(rows, cols, cells, OUTCOME_STYLES)
    assert len(lines) == 4
    assert "g1" in lines[0] and "a-very-long-group" in lines[0]
    assert lines[1].count("80/TCP") == 1 and "1/TCP" in lines[1]
    # each glyph sits under its column's sub-heading
    for row_line, glyph, col in ((lines[2], "✓", "80/TCP"), (lines[2], "✗", "80/UDP"), (lines[3], "·", "1/TCP")):
        i = lines[1].index(col)
        assert glyph in row_line[i:i + len(col)], (row_line, col)
    assert "w" in lines[3]                       # an unknown value shows its first letter
    assert lines[2].startswith("r1      ") and lines[3].startswith("row-two ")


def test_render_table_colour_only_when_asked():
    cols = [("g", "p")]
    plain = render_table(["r"], cols, {("r", cols[0]): "connected"}, OUTCOME_STYLES)
    coloured = render_table(["r"], cols, {("r", cols[0]): "connected"}, OUTCOME_STYLES, color=True)
    assert "\x1b[" not in "".join(plain)
    assert "\x1b[32m✓\x1b[0m" in coloured[2]
    assert re.sub(r"\x1b\[[0-9]*m", "", coloured[2]) == plain[2]


def test_summarize():
    assert summarize(["connected"] * 42) == "42/42 connected"
    assert summarize(["connected", "timeout", "timeout", "refused"]) == "1/4 connected (1 refused, 2 timeout)"


def test_render_matrix_whole():
    pods = [PodInfo("default/a", "10.0.0.1", "ns-a", "n1", ((80, "TCP"),)),
            PodInfo("default/b", "10.0.0.2", "ns-b", "n2", ((80, "TCP"),))]
    results = [{"from": s, "to": d, "port": 80, "proto": "TCP", "outcome": "connected", "pod": d}
               for s in ("default/a", "default/b") for d in ("default/a", "default/b")]
    results[1] = dict(results[1], outcome="timeout", pod=None)
    results[2] = dict(results[2], pod="default/zzz")        # answered by the wrong pod
    text = "\n".join(render_matrix(pods, results))
    assert "namespace default" in text and "default/a" not in text   # one namespace: short names
    assert "legend: ✓ connected  ✗ refused  · timeout  ! unreachable" in text
    assert text.endswith("2/4 connected (1 timeout, 1 wrong-pod)")
    table = text.splitlines()
    row_b = next(line for line in table if line.startswith("b "))
    assert "?" in row_b and "✓" in row_b


def test_kube_system_is_left_out_unless_asked_for():
    pods = [{"metadata": {"namespace": ns, "name": n}} for ns, n in
            (("default", "a"), ("kube-system", "coredns-1"), ("team", "b"))]
    names = lambda sel: [p["metadata"]["name"] for p in sel]
    assert names(select_pods(pods, None)) == names(select_pods(pods, [])) == ["a", "b"]
    assert names(select_pods(pods, ["kube-system"])) == ["coredns-1"]
    assert names(select_pods(pods, ["team", "default"])) == ["a", "b"]


def test_dual_stack_pods_are_probed_over_each_family_and_drawn_per_family():
    from kubeweft.lab.matrix import parse_pods, plan_probes, render_matrix

    def pod(name, ips, host_network=False):
        return {"metadata": {"namespace": "default", "name": name},
                "spec": {"nodeName": "node1", "hostNetwork": host_network,
                         "containers": [{"ports": [{"containerPort": 80}]}]},
                "status": {"podIP": ips[0], "podIPs": [{"ip": i} for i in ips]}}
    api = [pod("a", ["10.244.1.2", "fd00:10:244:1::2"]), pod("b", ["10.244.2.2", "fd00:10:244:2::2"]),
           pod("v4only", ["10.244.2.3"])]
    running = {f"default/{n}": {"netns": f"kw-pod-{n}"} for n in ("a", "b", "v4only")}
    pods, _ = parse_pods(api, running, lambda n: f"kw-{n}")
    assert pods[0].addresses == ("10.244.1.2", "fd00:10:244:1::2")
    probes = plan_probes(pods)
    a_to_b = sorted((p.ip, p.family) for p in probes if (p.source, p.dest) == ("default/a", "default/b"))
    assert a_to_b == [("10.244.2.2", 4), ("fd00:10:244:2::2", 6)]
    # a source without an IPv6 address probes IPv4 only
    assert {p.family for p in probes if p.source == "default/v4only"} == {4}
    results = [{"from": p.source, "to": p.dest, "port": p.port, "proto": p.proto, "family": p.family,
                "outcome": "connected", "pod": p.dest} for p in probes]
    text = "\n".join(render_matrix(pods, results))
    assert "80/TCP/v4 80/TCP/v6" in text and "pod:port/protocol/family" in text
    assert text.endswith(f"{len(probes)}/{len(probes)} connected")


def test_single_family_columns_keep_their_names():
    from kubeweft.lab.matrix import PodInfo, plan_probes, render_matrix

    pods = [PodInfo("default/a", "fd00::2", "ns-a", "node1", ((80, "TCP"),), ("fd00::2",))]
    [probe] = plan_probes(pods)
    assert probe.family == 0 and probe.column == ("default/a", "80/TCP")
    text = "\n".join(render_matrix(pods, [{"from": "default/a", "to": "default/a", "port": 80, "proto": "TCP",
                                           "outcome": "connected", "pod": "default/a"}]))
    assert "80/TCP" in text and "/v6" not in text
