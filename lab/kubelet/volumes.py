"""A container's mounts and the files of its pod's volumes, planned. Pure.

`plan_mounts` says what each volumeMount binds where (hostPath on the node's own directories,
emptyDir and the file volumes under the pod's directory), plus the pod's /etc/hosts,
/etc/resolv.conf and /etc/hostname. `render_files` turns a configMap, secret, downwardAPI or
projected volume into {relative path: (bytes, mode)}, from the objects the kubelet fetched.
"""
from __future__ import annotations

import base64
import posixpath
from dataclasses import dataclass
from pathlib import Path

from . import downward, layout
from .podspec import Container, Projection, Volume

FILE_KINDS = ("configMap", "secret", "downwardAPI", "projected")
DIR_NAMES = {"emptyDir": "kubernetes.io~empty-dir", "configMap": "kubernetes.io~configmap",
             "secret": "kubernetes.io~secret", "downwardAPI": "kubernetes.io~downward-api",
             "projected": "kubernetes.io~projected"}
ETC_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
HOST_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
              "BlockDevice")


class VolumeError(Exception):
    """A volume that cannot be set up (the kubelet's FailedMount): the pod waits and retries."""


@dataclass(frozen=True)
class Mount:
    source: str                 # a path on the machine (bind) or "" (tmpfs)
    target: str                 # inside the container
    read_only: bool = False
    propagation: str = "None"
    kind: str = "bind"

    def spec(self) -> dict:
        return {"source": self.source, "target": self.target, "readOnly": self.read_only,
                "propagation": self.propagation, "kind": self.kind}


@dataclass(frozen=True)
class HostPathCheck:
    """A hostPath source the kubelet checks (or creates) before the mount, by its type."""
    path: Path
    type: str
    passthrough: bool


def volume_dir(pod_dir: Path, volume: Volume) -> Path:
    return pod_dir / "volumes" / DIR_NAMES[volume.kind] / volume.name


def _join_sub(base: Path, sub: str, container: str, volume: str) -> Path:
    clean = posixpath.normpath(sub)
    if sub.startswith("/") or clean == ".." or clean.startswith("../"):
        raise VolumeError(f'subPath "{sub}" of volume "{volume}" in container "{container}" must be a '
                          f"relative path that does not contain '..'")
    return base / clean


def plan_mounts(container: Container, volumes: tuple[Volume, ...], paths: layout.NodePaths,
                pod_dir: Path) -> tuple[list[Mount], list[HostPathCheck]]:
    """The container's mounts, parents before children, and the hostPath sources to check."""
    by_name = {v.name: v for v in volumes}
    mounts: list[Mount] = []
    checks: list[HostPathCheck] = []
    for vm in container.mounts:
        vol = by_name.get(vm.name)
        if vol is None:
            raise VolumeError(f'volume "{vm.name}" of container "{container.name}" is not in the pod')
        target = posixpath.normpath("/" + vm.mount_path.lstrip("/"))
        read_only = vm.read_only
        if vol.kind == "hostPath":
            if vol.host_type not in HOST_TYPES:
                raise VolumeError(f'hostPath type "{vol.host_type}" of volume "{vol.name}" is not supported')
            source, passthrough = layout.map_host_path(vol.path, paths)
            checks.append(HostPathCheck(source, vol.host_type, passthrough))
        elif vol.kind == "emptyDir" or vol.kind in FILE_KINDS:
            source = volume_dir(pod_dir, vol)
            read_only = read_only or vol.kind in FILE_KINDS
        else:
            raise VolumeError(f'volume "{vol.name}": only hostPath, emptyDir, configMap, secret, '
                              "downwardAPI and projected volumes are supported")
        if vm.sub_path:
            source = _join_sub(source, vm.sub_path, container.name, vol.name)
        mounts.append(Mount(str(source), target, read_only, vm.propagation))
    taken = {m.target for m in mounts}
    for etc in ETC_FILES:
        if etc not in taken:
            mounts.append(Mount(str(pod_dir / etc.rpartition("/")[2]), etc))
    mounts.sort(key=_mount_order)
    return mounts, checks


def _mount_order(m: Mount) -> tuple[int, str]:
    return m.target.count("/"), m.target


def with_image_files(mounts: list[Mount], files: tuple[tuple[str, str], ...]) -> list[Mount]:
    """The image's own files (read-only) under the volume mounts, parents before children."""
    return sorted([Mount(src, target, read_only=True) for src, target in files] + mounts, key=_mount_order)


# --- the files of configMap, secret, downwardAPI and projected volumes -------------------------------
def _decoded(kind: str, obj: dict) -> dict[str, bytes]:
    if kind == "secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    out = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return out


def _check_path(path: str, volume: str) -> str:
    clean = posixpath.normpath(path)
    if not path or path.startswith("/") or clean.startswith("..") or clean.split("/")[0].startswith(".."):
        raise VolumeError(f'volume "{volume}": invalid path "{path}"')
    return clean


def _keyed_files(p: Projection, obj: dict | None, mode: int, volume: str, ns: str) -> dict[str, tuple[bytes, int]]:
    what = "configmap" if p.kind == "configmap" else "secret"
    if obj is None:
        if p.optional:
            return {}
        raise VolumeError(f'{what} "{p.name}" not found')
    data = _decoded(p.kind, obj)
    if not p.items:
        return {_check_path(k, volume): (v, mode) for k, v in data.items()}
    out = {}
    for item in p.items:
        if item.key not in data:
            if p.optional:
                continue
            kind = "configmap" if p.kind == "configmap" else "secret"
            raise VolumeError(f"{kind} references non-existent config key: {item.key}")
        out[_check_path(item.path, volume)] = (data[item.key], mode if item.mode is None else item.mode)
    return out


@dataclass(frozen=True)
class Fetched:
    """What the files are made from: ConfigMaps and Secrets by (kind, name) (None: not found)
    and a token per (audience, expirationSeconds)."""
    objects: dict
    tokens: dict


def render_files(volume: Volume, facts: downward.PodFacts, container: Container,
                 fetched: Fetched) -> dict[str, tuple[bytes, int]]:
    files: dict[str, tuple[bytes, int]] = {}
    mode = volume.default_mode
    for p in volume.sources:
        if p.kind in ("configmap", "secret"):
            files.update(_keyed_files(p, fetched.objects.get((p.kind, p.name)), mode, volume.name,
                                      facts.pod.namespace))
        elif p.kind == "downward":
            for item in p.downward:
                try:
                    value = downward.reference_value(facts, container, item.field)
                except downward.FieldError as e:
                    raise VolumeError(str(e)) from None
                files[_check_path(item.path, volume.name)] = (value.encode(),
                                                              mode if item.mode is None else item.mode)
        elif p.kind == "token":
            token = fetched.tokens.get((p.audience, p.expiration))
            if token is None:
                raise VolumeError(f"failed to fetch token for volume {volume.name}")
            files[_check_path(p.path, volume.name)] = (token.encode(), mode)
    return files


def token_requests(volumes: tuple[Volume, ...]) -> list[tuple[str, int]]:
    """(audience, expirationSeconds) of every serviceAccountToken projection."""
    out = [(p.audience, p.expiration) for v in volumes for p in v.sources if p.kind == "token"]
    return list(dict.fromkeys(out))


def referenced_objects(volumes: tuple[Volume, ...]) -> list[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the volumes project."""
    out = [(p.kind, p.name) for v in volumes for p in v.sources if p.kind in ("configmap", "secret")]
    return list(dict.fromkeys(out))
