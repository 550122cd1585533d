"""The pure parts of installing kubeweft on the lab: deploy/lab against the lab's config, the
rollout as kubectl reads it, the overlay for a lab that differs, the files of kubeweft's image,
the CNI plugins' root, and `kubeweft cleanup --datapath`'s plan."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from kubeweft.cni import cleanup
from kubeweft.lab import install
from kubeweft.lab.config import API_PORT, LabConfig
from kubeweft.lab.kubelet import imagefiles, images, layout, pluginroot, podspec, rootfs, volumes

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_deploy_lab_names_the_lab_api_servers_underlay_address():
    (cm,) = docs(DEPLOY / "lab" / "api-endpoint.yaml")
    cfg = LabConfig()
    assert cm["data"] == {"KUBERNETES_SERVICE_HOST": cfg.control_plane_ip, "KUBERNETES_SERVICE_PORT": str(API_PORT)}
    assert cfg.api_url_for_nodes == f"https://{cm['data']['KUBERNETES_SERVICE_HOST']}:{API_PORT}"


def test_deploy_base_config_matches_a_default_lab():
    (cm,) = [d for d in docs(DEPLOY / "base" / "configmap.yaml") if d["metadata"]["name"] == "kubeweft-config"]
    cfg = LabConfig()
    assert (cm["data"]["cluster-cidr"], cm["data"]["backend"]) == (cfg.cluster_cidr, cfg.backend)
    assert install.plan_config(cfg) == {}


def test_a_lab_that_differs_gets_an_overlay_on_deploy_lab():
    cfg = LabConfig(backend="host-gw")
    assert install.plan_config(cfg) == {"backend": "host-gw"}
    k = json.loads(install.render_kustomization("../../x/deploy/lab", install.plan_config(cfg)))
    assert k["resources"] == ["../../x/deploy/lab"]
    patch = json.loads(k["patches"][0]["patch"])
    assert patch["metadata"] == {"name": "kubeweft-config", "namespace": "kube-system"}
    assert patch["data"] == {"backend": "host-gw"}


@pytest.mark.parametrize("ip_family, cidrs", [
    ("dual", "10.244.0.0/16,fd00:10:244::/56"),
    ("ipv6", "fd00:10:244::/56"),
])
def test_an_ipv6_lab_passes_every_cluster_cidr_to_the_agent(ip_family, cidrs):
    assert install.plan_config(LabConfig(ip_family=ip_family)) == {"cluster-cidr": cidrs}


def ds(generation=2, observed=2, desired=3, updated=3, available=3) -> dict:
    return {"metadata": {"generation": generation},
            "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                       "updatedNumberScheduled": updated, "numberAvailable": available}}


def test_rollout_status_as_kubectl_reads_it():
    assert install.rollout_status(ds(), 3) is None
    assert "observed" in install.rollout_status(ds(observed=1), 3)
    assert install.rollout_status(ds(desired=2, updated=2, available=2), 3) == "2 of 3 nodes scheduled"
    assert install.rollout_status(ds(updated=2), 3) == "2 of 3 updated pods are available"
    assert install.rollout_status(ds(available=1), 3) == "1 of 3 updated pods are available"
    assert install.rollout_status({}, 1) is not None


def test_kubeweft_image_shows_its_frozen_build_and_loopback_read_only():
    pod = podspec.parse_pod({"metadata": {"name": "kubeweft-x", "namespace": "kube-system", "uid": "u"},
                             "spec": {"containers": [{"name": "c", "image": "ghcr.io/kubeweft/kubeweft:0.1.0",
                                                      "command": ["kubeweft", "install-cni"]}]}})
    c = pod.containers[0]
    files = imagefiles.image_files(Path("/cache/cni-abc"))
    p = images.plan_process(pod, c, c.command, c.args, "/venv/bin", "py", "kw", files)
    assert p.argv[0] == "/venv/bin/kubeweft"
    assert {t: s for s, t in p.files} == {"/opt/kubeweft/cni": "/cache/cni-abc",
                                                 "/opt/kubeweft/cni-plugins/loopback": str(imagefiles.LOOPBACK)}
    other = podspec.parse_pod({"metadata": {"name": "w", "namespace": "d", "uid": "v"},
                               "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh"]}]}})
    assert images.plan_process(other, other.containers[0], ("sh",), (), "/venv/bin", "py", "kw", files).files == ()
    mounts = volumes.with_image_files([volumes.Mount("/v", "/opt/kubeweft/cni/x"), volumes.Mount("/e", "/etc/hosts")],
                                      p.files)
    # parents first: the image's folder before a volume inside it
    assert [m.target for m in mounts] == ["/etc/hosts", "/opt/kubeweft/cni", "/opt/kubeweft/cni-plugins/loopback",
                                          "/opt/kubeweft/cni/x"]
    assert all(m.read_only for m in mounts if m.target.startswith("/opt/kubeweft/cni") and m.source != "/v")


def test_the_frozen_build_key_follows_its_sources():
    key = imagefiles.frozen_key()
    assert len(key) == 16 and key == imagefiles.frozen_key()
    names = {p.relative_to(imagefiles.CHECKOUT).parts[0] for p in imagefiles.build_inputs()}
    assert names == {"kubeweft", "cni"}
    assert imagefiles.frozen_dir(key).name == f"cni-{key}"


def test_plugin_root_is_the_nodes_filesystem_with_python_masked():
    paths = layout.NodePaths(Path("/lab/nodes/n1"), Path("/lab/nodes/n1/cni/net.d"), Path("/lab/nodes/n1/cni/bin"),
                             Path("/lab/nodes/n1/cni/data"))
    top = rootfs.plan_top([("usr", "dir", ""), ("work", "dir", ""), ("run", "dir", "")], set())
    spec = pluginroot.plan_spec(top, paths, "/lab/nodes/n1/cni/root",
                                [("/usr/lib/python3.11", True), ("/usr/bin/python3.11", False)])
    assert [t["name"] for t in spec["top"] if t["how"] == "ro"] == ["usr"]        # no checkout
    by_target = {m["target"]: m for m in spec["mounts"]}
    assert by_target["/run"]["source"] == "/lab/nodes/n1/host/run"
    assert by_target["/opt/cni/bin"]["source"] == "/lab/nodes/n1/cni/bin"
    assert by_target["/var/lib/cni"]["source"] == "/lab/nodes/n1/cni/data"
    assert by_target["/run/netns"]["source"] == "/run/netns"
    assert by_target["/usr/lib/python3.11"]["kind"] == "tmpfs"
    assert by_target["/usr/bin/python3.11"] == {"source": "/dev/null", "target": "/usr/bin/python3.11",
                                                "readOnly": True}
    order = [m["target"] for m in spec["mounts"]]
    assert order.index("/run") < order.index("/run/netns") and order.index("/opt") < order.index("/opt/cni/bin")


def test_a_passthrough_path_the_machine_lacks_is_the_nodes_own():
    paths = layout.NodePaths(Path("/n"), Path("/n/c"), Path("/n/b"), Path("/n/d"))
    assert layout.map_host_path("/lib/modules", paths) == (Path("/lib/modules"), True)
    lacking = layout.NodePaths(Path("/n"), Path("/n/c"), Path("/n/b"), Path("/n/d"), frozenset({"/lib/modules"}))
    assert layout.map_host_path("/lib/modules", lacking) == (Path("/n/host/lib/modules"), False)
    assert layout.hold_path(Path("/n"), "kube-system", "agent") == Path("/n/hold/kube-system/agent")


def test_cleanup_datapath_plan_takes_kubeweft_tables_links_and_routes_only():
    tables = [("ip", "kubeweft"), ("inet", "kubeweft-policy"), ("bridge", "kubeweft-cni"), ("ip", "nat")]
    links = ["lo", "eth0", "kw0", "kw.1", "kw1234abcd"]
    routes = [{"dst": "10.244.1.0/24", "dev": "kw.1", "protocol": 175},
              {"dst": "10.244.2.0/24", "dev": "eth0", "protocol": 175}]
    assert cleanup.plan_datapath(tables, links, routes) == [
        "nft delete table ip kubeweft", "nft delete table inet kubeweft-policy", "nft delete table bridge kubeweft-cni",
        "ip link delete kw.1", "ip link delete kw0", "ip link delete kw1234abcd",
        "ip route delete 10.244.2.0/24"]
    assert cleanup.plan_datapath([("ip", "nat")], ["lo", "eth0"], []) == []


def test_the_overlay_renders_with_the_real_kubectl(tmp_path):
    kubectl = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
    if not kubectl.exists():
        pytest.skip("no .venv/bin/kubectl (make setup)")
    here = tmp_path / "deploy"
    here.mkdir()
    (here / "kustomization.yaml").write_text(
        install.render_kustomization(os.path.relpath(install.OVERLAY, here), {"backend": "host-gw"}))
    out = subprocess.run([str(kubectl), "kustomize", str(here)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    (cm,) = [d for d in yaml.safe_load_all(out) if d and d["metadata"]["name"] == "kubeweft-config"]
    assert cm["data"]["backend"] == "host-gw" and cm["data"]["cni-version"] == "1.1.0"
