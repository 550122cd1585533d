"""Volume plans: node paths mapped to the node's own directories, a container's mounts, the
files of configMap/secret/downwardAPI/projected volumes, the atomic writer, the root's first level."""
import base64
import os
from pathlib import Path

import pytest
from kubeweft.lab.kubelet import downward, layout, podspec, rootfs, volumefiles, volumes

PATHS = layout.NodePaths(Path("/s/nodes/n1"), Path("/s/nodes/n1/cni/net.d"), Path("/s/nodes/n1/cni/bin"),
                         Path("/s/nodes/n1/cni/data"))


@pytest.mark.parametrize("path,want,machine", [
    ("/etc/cni/net.d", "/s/nodes/n1/cni/net.d", False),
    ("/etc/cni/net.d/10-x.conflist", "/s/nodes/n1/cni/net.d/10-x.conflist", False),
    ("/opt/cni/bin/", "/s/nodes/n1/cni/bin", False),
    ("/var/lib/cni/networks", "/s/nodes/n1/cni/data/networks", False),
    ("/var/run/kubeweft", "/s/nodes/n1/host/run/kubeweft", False),
    ("/run/xtables.lock", "/s/nodes/n1/host/run/xtables.lock", False),
    ("/var/lib/kubeweft", "/s/nodes/n1/host/var/lib/kubeweft", False),
    ("/etc/cni", "/s/nodes/n1/host/etc/cni", False),
    ("/var/run/netns", "/run/netns", True),
    ("/lib/modules", "/lib/modules", True),
    ("/proc", "/proc", True),
    ("/../../etc/passwd", "/s/nodes/n1/host/etc/passwd", False),
])
def test_node_paths_map_to_the_node_own_directories(path, want, machine):
    assert layout.map_host_path(path, PATHS) == (Path(want), machine)


POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
       "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}, "volumeMounts": [
           {"name": "cni", "mountPath": "/host/etc/cni/net.d"},
           {"name": "cfg", "mountPath": "/etc/app"},
           {"name": "data", "mountPath": "/data", "subPath": "sub/dir"},
           {"name": "host", "mountPath": "/host"},
           {"name": "netns", "mountPath": "/var/run/netns", "mountPropagation": "HostToContainer"}]}],
                "volumes": [{"name": "cni", "hostPath": {"path": "/etc/cni/net.d", "type": "DirectoryOrCreate"}},
                            {"name": "cfg", "configMap": {"name": "app"}},
                            {"name": "data", "emptyDir": {}},
                            {"name": "host", "hostPath": {"path": "/"}},
                            {"name": "netns", "hostPath": {"path": "/var/run/netns"}}]}}


def test_mounts_of_a_container_parents_first_with_the_pod_etc_files():
    pod = podspec.parse_pod(POD)
    pod_dir = PATHS.pod_dir("u1")
    mounts, checks = volumes.plan_mounts(pod.containers[0], pod.volumes, PATHS, pod_dir)
    by_target = {m.target: m for m in mounts}
    assert [m.target for m in mounts][:2] == ["/data", "/host"]          # parents before children
    assert by_target["/host/etc/cni/net.d"].source == "/s/nodes/n1/cni/net.d"
    assert by_target["/etc/app"].read_only and by_target["/etc/app"].source == str(
        pod_dir / "volumes/kubernetes.io~configmap/cfg") == \
        "/s/nodes/n1/host/var/lib/kubelet/pods/u1/volumes/kubernetes.io~configmap/cfg"
    assert by_target["/host"].source == "/s/nodes/n1/host" and not by_target["/host"].read_only
    assert by_target["/data"].source.endswith("kubernetes.io~empty-dir/data/sub/dir")
    assert by_target["/var/run/netns"].source == "/run/netns"
    assert by_target["/var/run/netns"].propagation == "HostToContainer"
    for etc in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):
        assert by_target[etc].source == str(pod_dir / etc.rsplit("/", 1)[1])
    assert [(c.type, c.passthrough) for c in checks] == [("DirectoryOrCreate", False), ("", False), ("", True)]


def test_mount_errors():
    pod = podspec.parse_pod(POD)
    bad = podspec.Container("c", mounts=(podspec.VolumeMount("data", "/x", sub_path="../escape"),))
    with pytest.raises(volumes.VolumeError, match="must be a relative path"):
        volumes.plan_mounts(bad, pod.volumes, PATHS, Path("/p"))
    with pytest.raises(volumes.VolumeError, match='volume "nope"'):
        volumes.plan_mounts(podspec.Container("c", mounts=(podspec.VolumeMount("nope", "/x"),)), pod.volumes,
                            PATHS, Path("/p"))


def test_files_of_the_projected_service_account_volume_and_of_config_maps():
    pod = podspec.parse_pod({**POD, "spec": {**POD["spec"], "volumes": [
        {"name": "api", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                                       {"path": "mem", "resourceFieldRef": {"containerName": "c",
                                                                            "resource": "limits.memory",
                                                                            "divisor": "1Mi"}}]}}]}},
        {"name": "sec", "secret": {"secretName": "s", "items": [{"key": "pw", "path": "deep/pw", "mode": 0o400}]}},
        {"name": "opt", "configMap": {"name": "absent", "optional": True}}]}})
    facts = downward.PodFacts(pod, "10.244.0.5", "192.168.56.11")
    fetched = volumes.Fetched({("configmap", "kube-root-ca.crt"): {"data": {"ca.crt": "PEM"}},
                               ("secret", "s"): {"data": {"pw": base64.b64encode(b"x").decode()}},
                               ("configmap", "absent"): None}, {("", 3607): "eyJtoken"})
    api, sec, opt = pod.volumes
    assert volumes.render_files(api, facts, pod.containers[0], fetched) == {
        "token": (b"eyJtoken", 420), "ca.crt": (b"PEM", 420), "namespace": (b"ns", 420), "mem": (b"64", 420)}
    assert volumes.render_files(sec, facts, pod.containers[0], fetched) == {"deep/pw": (b"x", 0o400)}
    assert volumes.render_files(opt, facts, pod.containers[0], fetched) == {}
    assert volumes.token_requests(pod.volumes) == [("", 3607)]
    assert volumes.referenced_objects(pod.volumes) == [("configmap", "kube-root-ca.crt"), ("secret", "s"),
                                                        ("configmap", "absent")]
    with pytest.raises(volumes.VolumeError, match="failed to fetch token"):
        volumes.render_files(api, facts, pod.containers[0], volumes.Fetched(fetched.objects, {}))
    missing_key = volumes.Fetched({**fetched.objects, ("secret", "s"): {"data": {}}}, {})
    with pytest.raises(volumes.VolumeError, match="non-existent config key: pw"):
        volumes.render_files(sec, facts, pod.containers[0], missing_key)


def test_atomic_writer_swaps_the_payload(tmp_path):
    root = tmp_path / "vol"
    assert volumefiles.write_payload(root, {"a": (b"1", 0o644), "d/b": (b"2", 0o400)})
    first = os.readlink(root / "..data")
    assert (root / "a").read_bytes() == b"1" and os.readlink(root / "a") == "..data/a"
    assert (root / "d" / "b").read_bytes() == b"2" and oct((root / "d/b").stat().st_mode & 0o777) == "0o400"
    assert not volumefiles.write_payload(root, {"a": (b"1", 0o644), "d/b": (b"2", 0o400)})
    assert volumefiles.write_payload(root, {"a": (b"new", 0o644)})
    assert (root / "a").read_bytes() == b"new" and not (root / "d").exists()
    assert os.readlink(root / "..data") != first and not (root / first).exists()


def test_host_path_types(tmp_path):
    volumefiles.check_host_path(volumes.HostPathCheck(tmp_path / "new/dir", "DirectoryOrCreate", False))
    assert (tmp_path / "new/dir").is_dir()
    volumefiles.check_host_path(volumes.HostPathCheck(tmp_path / "lock", "FileOrCreate", False))
    assert (tmp_path / "lock").is_file()
    with pytest.raises(volumes.VolumeError, match="is not a directory"):
        volumefiles.check_host_path(volumes.HostPathCheck(tmp_path / "lock", "Directory", False))
    with pytest.raises(volumes.VolumeError, match="is not a socket"):
        volumefiles.check_host_path(volumes.HostPathCheck(tmp_path / "lock", "Socket", False))


def test_root_first_level():
    top = rootfs.plan_top([("usr", "dir", ""), ("bin", "symlink", "usr/bin"), ("proc", "dir", ""),
                           ("work", "dir", ""), ("farm", "dir", ""), (".dockerenv", "file", ""),
                           ("tmp", "dir", ""), ("etc", "dir", "")], keep={"work"})
    how = {e["name"]: e["how"] for e in top}
    assert how["usr"] == how["etc"] == how["work"] == "ro" and how["proc"] == "rw" and how["bin"] == "symlink"
    assert how["tmp"] == how["run"] == how["var"] == "empty" and how["var/run"] == "symlink"
    assert "farm" not in how and ".dockerenv" not in how
    assert next(e for e in top if e["name"] == "tmp")["mode"] == 0o1777


def test_a_checkout_inside_a_private_directory_is_shown_alone():
    whole, alone = rootfs.split_keep({"/tmp/ci/kubeweft", "/tmp/ci/kubeweft/.venv", "/tmp/ci/kubeweft/.venv/bin",
                                      "/usr/bin", "/usr", "/work/main"})
    assert whole == {"usr", "work"} and alone == ("/tmp/ci/kubeweft",)
    top = rootfs.plan_top([("usr", "dir", ""), ("tmp", "dir", ""), ("work", "dir", "")], whole, alone)
    how = {e["name"]: e["how"] for e in top}
    assert how["tmp"] == "empty" and how["tmp/ci/kubeweft"] == "ro_path" and how["work"] == "ro"
    # the private /tmp is made before the checkout is bound inside it
    names = [e["name"] for e in top]
    assert names.index("tmp") < names.index("tmp/ci/kubeweft")
