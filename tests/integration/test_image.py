"""`make image` (deploy/image/build.py): the archive, checked as `docker load` and containerd's
importer read it, and the agent and the CNI executable run from the image's own filesystem.

The build is cached in out/image, keyed on its inputs: the first run takes minutes (build.json
has the figures), later ones reuse it. The filesystem is unpacked from the archive's layer (not
from the build's folder) into a temp folder, and every command runs with chroot inside a mount
namespace made for it (`unshare --mount --propagation private`), where /dev and /proc are
mounted: nothing is mounted in the root mount namespace.

The CNI executable also runs on a stand-in node: a root holding the C library and zlib (Debian's
libc6 and zlib1g files, copied from the image) and nothing else, no python3, as kind's nodes
have none; the
image's `install-cni` puts it there as the DaemonSet's init container would, and the image's
`cleanup` takes it away.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

# the first build takes minutes (a fixture's time counts in its first test's timeout)
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3600)]
BUILD_TIMEOUT = 3000

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
REF = f"ghcr.io/kubeweft/kubeweft:{VERSION}"
HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# what the frozen CNI executable needs of a node: the C library, and zlib, which PyInstaller's
# bootloader links (dpkg and rpm depend on it: every Debian, Ubuntu or RPM-based node has it)
NODE_PACKAGES = ("libc6", "zlib1g")
# mount /dev and /proc in the chroot, bind the extra folders, then chroot: all in this namespace
IN_ROOT = ('root=$1; shift; mount --bind /dev "$root/dev" && mount -t proc proc "$root/proc" && '
           'while [ "$1" != -- ]; do mount --bind "$1" "$root$2" && shift 2; done; shift; exec chroot "$root" "$@"')


def in_root(root: Path, argv: list[str], binds: dict[Path, str] | None = None, env: dict | None = None,
            stdin: bytes = b"") -> subprocess.CompletedProcess:
    pairs = [str(x) for src, dst in (binds or {}).items() for x in (src, dst)]
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", IN_ROOT, "sh",
                           str(root), *pairs, "--", *argv],
                          input=stdin, env={"PATH": HOST_PATH, **(env or {})}, capture_output=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def built() -> dict:
    # a session of its own: on a timeout the whole build goes (mmdebstrap, apt, pip), not just build.py
    proc = subprocess.Popen([sys.executable, str(ROOT / "deploy" / "image" / "build.py")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BUILD_TIMEOUT)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    assert proc.returncode == 0, err[-4000:]
    report = json.loads(out)
    print(f"\nimage build: {report['seconds']} s (cached: {report['cached']}), archive "
          f"{report['archive_bytes'] / 2**20:.1f} MiB, filesystem {report['rootfs_bytes'] / 2**20:.1f} MiB")
    return report


@pytest.fixture(scope="module")
def blobs(built) -> dict[str, bytes]:
    with tarfile.open(built["archive"]) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def config(blobs) -> dict:
    (entry,) = json.loads(blobs["manifest.json"])
    return json.loads(blobs[entry["Config"]])


@pytest.fixture(scope="module")
def rootfs(blobs, tmp_path_factory) -> Path:
    (entry,) = json.loads(blobs["manifest.json"])
    root = tmp_path_factory.mktemp("h12i-rootfs")
    subprocess.run(["tar", "-xz", "--numeric-owner", "-C", str(root)], input=blobs[entry["Layers"][0]],
                   check=True, timeout=300)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_archive_is_a_docker_archive_and_an_oci_layout_of_the_versioned_image(blobs, config):
    (entry,) = json.loads(blobs["manifest.json"])
    assert entry["RepoTags"] == [REF]
    for name, data in blobs.items():                        # every blob is what its name says
        if name.startswith("blobs/sha256/"):
            assert sha256(data) == "sha256:" + name.rsplit("/", 1)[1], name
    assert json.loads(blobs["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (desc,) = json.loads(blobs["index.json"])["manifests"]
    assert desc["annotations"]["io.containerd.image.name"] == REF
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == VERSION
    manifest_data = blobs["blobs/sha256/" + desc["digest"].split(":")[1]]
    assert len(manifest_data) == desc["size"]
    manifest = json.loads(manifest_data)
    # the OCI manifest and the docker manifest name the same config and layer, with their sizes
    assert "blobs/sha256/" + manifest["config"]["digest"].split(":")[1] == entry["Config"]
    assert ["blobs/sha256/" + layer["digest"].split(":")[1] for layer in manifest["layers"]] == entry["Layers"]
    assert manifest["config"]["size"] == len(blobs[entry["Config"]])
    (layer,) = entry["Layers"]
    assert manifest["layers"][0]["size"] == len(blobs[layer])
    assert config["rootfs"]["diff_ids"] == [sha256(gzip.decompress(blobs[layer]))]


def test_config_is_the_dockerfiles(config):
    c = config["config"]
    assert config["os"] == "linux" and config["architecture"] == subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    assert c["Entrypoint"] == ["kubeweft"] and c["Cmd"] == ["agent"]
    assert any(e.startswith("PATH=/opt/kubeweft/bin:") for e in c["Env"])
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    assert 'ENTRYPOINT ["kubeweft"]' in dockerfile and 'CMD ["agent"]' in dockerfile
    assert [f"ENV {e}" for e in c["Env"]] == [line for line in dockerfile if line.startswith("ENV ")]


def test_layer_has_no_device_nodes_and_no_build_leftovers(blobs, config):
    (entry,) = json.loads(blobs["manifest.json"])
    with tarfile.open(fileobj=io.BytesIO(blobs[entry["Layers"][0]])) as tar:
        members = tar.getmembers()
    names = {m.name for m in members}
    assert not [m.name for m in members if m.ischr() or m.isblk() or m.isfifo()]
    assert not [n for n in names if n.startswith(("dev/", "proc/", "tmp/kubeweft"))]
    assert {"opt/kubeweft/cni/kubeweft", "opt/kubeweft/cni-plugins/loopback", "usr/sbin/nft"} <= names
    assert not [n for n in names if n.startswith("var/lib/apt/lists/") and n.endswith("Packages")]


def test_agent_and_tools_from_the_image(rootfs, config):
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    proc = in_root(rootfs, [*config["config"]["Entrypoint"], "agent", "--help"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert b"--cni-conf-dir" in proc.stdout and b"--cni-version" in proc.stdout
    for tool in (["nft", "--version"], ["ip", "-V"], ["conntrack", "--version"]):
        assert in_root(rootfs, tool, env=env).returncode == 0, tool
    # the core install: the agent's modules import; the lab's extra and the build's tools are absent
    code = ("import importlib.util as u, kubeweft.proxy.agent, kubeweft.cni.plugin, nftables, pyroute2, grpc; "
            "print([m for m in ('jsonpatch', 'PyInstaller') if u.find_spec(m)])")
    proc = in_root(rootfs, ["python", "-c", code], env=env)
    assert (proc.returncode, proc.stdout) == (0, b"[]\n"), proc.stderr
    assert in_root(rootfs, ["objdump", "--version"], env=env).returncode != 0


def node_with(image: Path, node: Path, packages: tuple[str, ...]) -> Path:
    """A root holding the files of these Debian packages from the image, the merged-/usr links,
    and the mount points."""
    node.mkdir()
    for link in ("bin", "sbin", "lib", "lib64"):
        if (image / link).is_symlink():
            target = (image / link).readlink()
            (node / target).mkdir(parents=True, exist_ok=True)
            (node / link).symlink_to(target)
    lines = [line for package in packages
             for listing in (image / "var/lib/dpkg/info").glob(f"{package}:*.list")
             for line in listing.read_text().splitlines()]
    for line in lines:
        src, dst = image / line.lstrip("/"), node / line.lstrip("/")
        if dst.is_symlink():                     # the merged-/usr links, made above
            continue
        if src.is_dir() and not src.is_symlink():
            dst.mkdir(parents=True, exist_ok=True)
        elif src.is_symlink() or src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
    for d in ("dev", "proc", "opt/cni/bin", "etc/cni/net.d", "run"):
        (node / d).mkdir(parents=True, exist_ok=True)
    return node


def test_cni_executable_on_a_node_without_python(rootfs, config, tmp_path):
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    node = node_with(rootfs, tmp_path / "node", NODE_PACKAGES)
    assert not list(node.rglob("python*"))
    host = {node: "/mnt"}                                        # the init container's hostPath mount
    proc = in_root(rootfs, ["kubeweft", "install-cni", "--frozen", "/opt/kubeweft/cni", "--loopback",
                            "/opt/kubeweft/cni-plugins/loopback", "--bin-dir", "/mnt/opt/cni/bin"], host, env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (node / "opt/cni/bin").iterdir()) == ["kubeweft", "kubeweft.d", "loopback"]

    proc = in_root(node, ["/opt/cni/bin/kubeweft"], env={"CNI_COMMAND": "VERSION"}, stdin=b'{"cniVersion": "1.0.0"}')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    # STATUS with no agent on the socket: the spec's error 50 as JSON on stdout
    conf = {"cniVersion": "1.1.0", "name": "kubeweft", "type": "kubeweft", "socket": "/run/kubeweft/agent.sock"}
    proc = in_root(node, ["/opt/cni/bin/kubeweft"], env={"CNI_COMMAND": "STATUS", "CNI_PATH": "/opt/cni/bin"},
                   stdin=json.dumps(conf).encode())
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["code"] == 50 and out["cniVersion"] == "1.1.0" and "not answering" in out["details"], out
    proc = in_root(node, ["/opt/cni/bin/loopback"], env={"CNI_COMMAND": "VERSION"}, stdin=b'{"cniVersion": "1.0.0"}')
    assert proc.returncode == 0 and b"supportedVersions" in proc.stdout, proc.stderr

    proc = in_root(rootfs, ["kubeweft", "cleanup", "--bin-dir", "/mnt/opt/cni/bin", "--conf-dir", "/mnt/etc/cni/net.d"],
                   host, env)
    assert proc.returncode == 0, proc.stderr
    assert list((node / "opt/cni/bin").iterdir()) == []
