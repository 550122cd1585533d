"""deploy/image/archive.py on a small folder: what goes into the layer (hard links once, numeric
owners, no fifos, nothing under dev/ or proc/), and the archive's blobs and names agreeing."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "image"))

import archive  # deploy/image is no package: its scripts run from their folder

REF = "ghcr.io/kubeweft/kubeweft:9.8.7"


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "opt" / "app").mkdir(parents=True)
    (root / "opt" / "app" / "run").write_text("#!/bin/sh\n")
    (root / "opt" / "app" / "run").chmod(0o755)
    os.link(root / "opt" / "app" / "run", root / "opt" / "app" / "also-run")
    (root / "opt" / "link").symlink_to("app/run")
    (root / "dev").mkdir()
    (root / "dev" / "null-ish").write_text("a runtime provides /dev")
    (root / "proc").mkdir()
    os.mkfifo(root / "opt" / "fifo")
    os.chown(root / "opt" / "app" / "run", 1234, 5678)
    return root


def test_layer_holds_the_tree_as_a_runtime_unpacks_it(tree):
    out = io.BytesIO()
    layer = archive.write_layer(tree, out)
    data = out.getvalue()
    assert layer.blob.digest == "sha256:" + hashlib.sha256(data).hexdigest() and layer.blob.size == len(data)
    plain = gzip.decompress(data)
    assert layer.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["dev", "opt", "opt/app", "opt/app/also-run", "opt/app/run", "opt/link", "proc"]
    run, also = members["opt/app/run"], members["opt/app/also-run"]
    assert (run.uid, run.gid, run.uname, run.gname, run.mode & 0o777) == (1234, 5678, "", "", 0o755)
    # the second name of a hard link is a link to the first, whichever os.walk met first
    assert also.islnk() and also.linkname == "opt/app/run" or run.islnk() and run.linkname == "opt/app/also-run"
    assert members["opt/link"].issym() and members["opt/link"].linkname == "app/run"


def test_archive_names_its_blobs_by_their_digests(tree, tmp_path):
    container = {"Env": ["PATH=/opt/app"], "Entrypoint": ["run"], "Cmd": ["x"]}
    held = archive.write_archive(tree, tmp_path / "out" / "image.tar", REF, "amd64", "2024-01-01T00:00:00Z",
                                 container, "test")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["image.tar"]          # no temp files left
    with tarfile.open(tmp_path / "out" / "image.tar") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    (entry,) = json.loads(files["manifest.json"])
    assert entry["RepoTags"] == [REF] and entry["Config"] == "blobs/sha256/" + held["config"].split(":")[1]
    config = json.loads(files[entry["Config"]])
    assert config["config"] == container and config["rootfs"]["diff_ids"] == [held["diff_id"]]
    (desc,) = json.loads(files["index.json"])["manifests"]
    assert desc["digest"] == held["manifest"] and desc["annotations"]["io.containerd.image.name"] == REF
    manifest = json.loads(files["blobs/sha256/" + held["manifest"].split(":")[1]])
    assert manifest["layers"][0]["digest"] == held["layer"] and entry["Layers"] == ["blobs/sha256/" + held["layer"][7:]]
