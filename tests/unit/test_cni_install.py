"""install-cni's frozen and loopback installs, the conflist's version, and `kubeweft cleanup`, on
real folders (a stand-in build: a shell script as the executable and a file in _internal/)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from kubeweft.cni import cleanup, install


def fake_build(root: Path, tag: str) -> Path:
    build = root / f"build-{tag}"
    (build / "_internal").mkdir(parents=True, exist_ok=True)
    (build / "_internal" / "lib.txt").write_text(tag)
    exe = build / "kubeweft"
    # reads its support file relative to where the link resolves, as PyInstaller's bootloader does
    exe.write_text('#!/bin/sh\ncat "$(dirname "$(readlink -f "$0")")/_internal/lib.txt"\n')
    exe.chmod(0o755)
    return build


def run(exe: Path) -> str:
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=10).stdout


def builds(bin_dir: Path) -> set[str]:
    return {p.name for p in (bin_dir / install.FROZEN_DIR).iterdir()}


def test_frozen_install_is_a_relative_link_into_its_build_folder(tmp_path):
    bin_dir = tmp_path / "bin"
    exe = install.install_frozen(fake_build(tmp_path, "one"), bin_dir)
    target = os.readlink(exe)
    assert exe == bin_dir / "kubeweft" and exe.is_symlink() and not os.path.isabs(target)
    assert target.startswith("kubeweft.d/") and target.endswith("/kubeweft")
    assert run(exe) == "one"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["kubeweft", "kubeweft.d"]   # no temp names left


def test_a_new_build_switches_the_link_and_keeps_only_the_previous_one(tmp_path):
    bin_dir = tmp_path / "bin"
    exe = install.install_frozen(fake_build(tmp_path, "one"), bin_dir)
    first = os.readlink(exe)
    install.install_frozen(fake_build(tmp_path, "one"), bin_dir)      # the same content: nothing new
    assert os.readlink(exe) == first and len(builds(bin_dir)) == 1
    install.install_frozen(fake_build(tmp_path, "two"), bin_dir)
    assert run(exe) == "two" and len(builds(bin_dir)) == 2            # calls from "one" may still run
    install.install_frozen(fake_build(tmp_path, "three"), bin_dir)
    assert run(exe) == "three" and len(builds(bin_dir)) == 2
    assert first.split("/")[1] not in builds(bin_dir)


def test_frozen_replaces_a_zipapp_or_script(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubeweft").write_text("#!/usr/bin/env python3\n")
    install.install_frozen(fake_build(tmp_path, "one"), bin_dir)
    assert run(bin_dir / "kubeweft") == "one"


def test_frozen_refuses_a_folder_without_the_executable(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        install.install_frozen(tmp_path / "empty", tmp_path / "bin")


def test_loopback_is_copied_only_where_there_is_none(tmp_path):
    src = tmp_path / "loopback-src"
    src.write_bytes(b"\x7fELF loopback")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    assert install.install_loopback(src, bin_dir) == bin_dir / "loopback"
    assert (bin_dir / "loopback").read_bytes() == src.read_bytes() and os.access(bin_dir / "loopback", os.X_OK)
    other = tmp_path / "bin2"
    other.mkdir()
    (other / "loopback").write_bytes(b"the node's own")
    assert install.install_loopback(src, other) is None
    assert (other / "loopback").read_bytes() == b"the node's own"
    assert not (other / "kubeweft.d").exists()


def test_conflist_version_defaults_to_one_every_containerd_accepts(tmp_path):
    assert install.render_conflist("/s", "/d")["cniVersion"] == "1.0.0"
    conf = install.write_conflist(tmp_path, "/run/k.sock", "/var/lib/k", version="1.1.0")
    doc = json.loads(conf.read_text())
    assert doc["cniVersion"] == "1.1.0" and doc["plugins"][0]["socket"] == "/run/k.sock"
    with pytest.raises(ValueError):
        install.write_conflist(tmp_path, "/s", "/d", version="1.2.0")


def test_install_cni_without_conf_dir_writes_no_conflist(tmp_path):
    bin_dir = tmp_path / "bin"
    assert install.main(["--bin-dir", str(bin_dir), "--frozen", str(fake_build(tmp_path, "one"))]) == 0
    assert run(bin_dir / "kubeweft") == "one"
    assert not list(tmp_path.rglob("*.conflist"))
    with pytest.raises(SystemExit):
        install.main(["--bin-dir", str(bin_dir), "--cni-version", "9.9.9"])


def test_cleanup_removes_what_kubeweft_put_there_and_nothing_else(tmp_path, capsys):
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    src = tmp_path / "loopback-src"
    src.write_bytes(b"\x7fELF loopback")
    install.install(bin_dir, conf_dir, "/run/k.sock", "/var/lib/k", frozen=fake_build(tmp_path, "one"),
                    loopback=src)
    (bin_dir / "portmap").write_bytes(b"another plugin")
    (conf_dir / "99-other.conflist").write_text("{}")
    assert cleanup.main(["--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--dry-run"]) == 0
    assert (conf_dir / "10-kubeweft.conflist").exists()
    assert cleanup.main(["--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)]) == 0
    assert sorted(p.name for p in bin_dir.iterdir()) == ["portmap"]
    assert sorted(p.name for p in conf_dir.iterdir()) == ["99-other.conflist"]
    out = capsys.readouterr().out
    assert "would remove" in out and f"removed {bin_dir / 'loopback'}" in out
    assert cleanup.ours(bin_dir, conf_dir) == []                       # a second run: nothing to do


def test_cleanup_keeps_a_loopback_replaced_since_install(tmp_path):
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    src = tmp_path / "loopback-src"
    src.write_bytes(b"\x7fELF loopback")
    install.install(bin_dir, None, "/s", "/d", frozen=fake_build(tmp_path, "one"), loopback=src)
    (bin_dir / "loopback").write_bytes(b"a newer loopback from the node's packages")
    cleanup.remove(cleanup.ours(bin_dir, conf_dir))
    assert [p.name for p in bin_dir.iterdir()] == ["loopback"]
