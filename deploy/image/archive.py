"""An image archive from a root filesystem folder, written with the standard library: one tar that
is both an OCI image layout (oci-layout, index.json, blobs/sha256/...) and a docker-archive
(manifest.json naming the same blobs), as `docker save` writes since Docker 25. `docker load`,
`kind load image-archive`, `k3s ctr images import` and `ctr images import` all take it; the
name is in manifest.json's RepoTags and in index.json's io.containerd.image.name annotation.

One layer: the folder as a gzip'd tar (numeric owners, no names; the contents of dev/, proc/ and
sys/ left out, which the runtime provides), hashed while it is written: its diff_id (the tar's
sha256) goes in the config, its digest (the gzip's sha256) in the manifest.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
RUNTIME_FILLED = ("dev", "proc", "sys")


@dataclass(frozen=True)
class Blob:
    digest: str          # "sha256:<hex>"
    size: int

    @property
    def path(self) -> str:
        return "blobs/sha256/" + self.digest.split(":", 1)[1]


@dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str         # the uncompressed tar's "sha256:<hex>"


class _Hashing:
    """A write-only file that hashes and counts what passes through it to the next one."""

    def __init__(self, out) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _entries(root: Path):
    """Every path under root, parents first, in a stable order; runtime-filled folders empty."""
    for top, dirs, files in os.walk(root):
        rel = Path(top).relative_to(root)
        if rel.parts and rel.parts[0] in RUNTIME_FILLED:
            dirs[:] = []
            continue
        dirs.sort()
        for name in sorted(dirs + files):
            yield Path(top) / name


def _tarinfo(tar: tarfile.TarFile, path: Path, arcname: str) -> tarfile.TarInfo | None:
    info = tar.gettarinfo(str(path), arcname)
    if info is None or info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        return None                                   # sockets, devices, fifos: not image content
    info.uname = info.gname = ""
    return info


def write_layer(root: Path, out) -> Layer:
    """root as a gzip'd tar into the binary file out."""
    compressed = _Hashing(out)
    with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6, mtime=0, filename="") as gz:
        plain = _Hashing(gz)
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path in _entries(root):
                info = _tarinfo(tar, path, path.relative_to(root).as_posix())
                if info is None:
                    continue
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return Layer(Blob("sha256:" + compressed.sha.hexdigest(), compressed.size), "sha256:" + plain.sha.hexdigest())


def render_config(layer: Layer, arch: str, created: str, container: dict, history: str) -> dict:
    """The image config; container: Env, Entrypoint, Cmd, Labels (the Dockerfile's)."""
    return {"architecture": arch, "os": "linux", "created": created, "config": container,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": created, "created_by": history}]}


def render_manifest(config: Blob, layer: Layer) -> dict:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer.blob.digest, "size": layer.blob.size}]}


def render_index(manifest: Blob, ref: str) -> dict:
    tag = ref.rsplit(":", 1)[1]
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest.digest, "size": manifest.size,
                           "annotations": {"io.containerd.image.name": ref,
                                           "org.opencontainers.image.ref.name": tag}}]}


def render_docker_manifest(config: Blob, layer: Layer, ref: str) -> list:
    return [{"Config": config.path, "RepoTags": [ref], "Layers": [layer.blob.path]}]


def _json_blob(doc) -> tuple[bytes, Blob]:
    data = json.dumps(doc, indent=2, sort_keys=True).encode()
    return data, Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def write_archive(root: Path, out: Path, ref: str, arch: str, created: str, container: dict,
                  history: str) -> dict:
    """The archive at out (written beside it, then renamed); returns what it holds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".archive-", dir=out.parent) as tmp:
        layer_file = Path(tmp) / "layer.tar.gz"
        with open(layer_file, "wb") as f:
            layer = write_layer(root, f)
        config_data, config = _json_blob(render_config(layer, arch, created, container, history))
        manifest_data, manifest = _json_blob(render_manifest(config, layer))
        partial = Path(tmp) / "image.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            info = tar.gettarinfo(str(layer_file), layer.blob.path)
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
            with open(layer_file, "rb") as f:
                tar.addfile(info, f)
            _add_bytes(tar, config.path, config_data)
            _add_bytes(tar, manifest.path, manifest_data)
            _add_bytes(tar, "index.json", json.dumps(render_index(manifest, ref), indent=2).encode())
            _add_bytes(tar, "manifest.json", json.dumps(render_docker_manifest(config, layer, ref)).encode())
        os.replace(partial, out)
    return {"ref": ref, "manifest": manifest.digest, "config": config.digest, "layer": layer.blob.digest,
            "diff_id": layer.diff_id, "layer_bytes": layer.blob.size, "archive_bytes": out.stat().st_size}


def tree_bytes(root: Path) -> int:
    """What the root filesystem holds (regular files, hard links once)."""
    seen, total = set(), 0
    for path in _entries(root):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
