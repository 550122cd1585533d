"""The Vagrantfile validates with the real vagrant (Debian's, with the vagrant-libvirt plugin:
`make test-setup` installs both), in both of its forms: with an image built on the host (then
uploaded to every VM) and without (then the server VM builds it). No VM is booted. vagrant runs
in a network namespace of its own with nothing but loopback, so it reaches nothing, and keeps
its state in a temporary directory."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROVISION = "tests/e2e/vagrant/provision.sh"
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)

pytestmark = pytest.mark.skipif(not shutil.which("vagrant"),
                                reason="vagrant is not installed (make test-setup installs Debian's)")


def checkout(tmp_path: Path, image: bool) -> Path:
    """The files the Vagrantfile reads, in a directory of their own."""
    root = tmp_path / "checkout"
    (root / PROVISION).parent.mkdir(parents=True)
    for name in ("Vagrantfile", "pyproject.toml", PROVISION):
        shutil.copy(ROOT / name, root / name)
    if image:
        (root / "out" / "image").mkdir(parents=True)
        (root / "out" / "image" / f"kubeweft-{VERSION}.tar").write_bytes(b"")
    return root


def validate(root: Path, tmp_path: Path, *args: str, provider: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "vagrant.d"), "VAGRANT_CHECKPOINT_DISABLE": "1",
           "VAGRANT_DOTFILE_PATH": str(tmp_path / "dotfile"), "VAGRANT_NO_COLOR": "1"}
    if provider:
        env["VAGRANT_DEFAULT_PROVIDER"] = provider
    return subprocess.run(["unshare", "--net", "vagrant", "validate", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("image", [False, True], ids=["image-built-in-vm", "image-from-host"])
def test_vagrantfile_validates(tmp_path, image):
    root = checkout(tmp_path, image)
    p = validate(root, tmp_path, "--ignore-provider")
    assert p.returncode == 0 and "validated successfully" in p.stdout, p.stdout + p.stderr
    # the libvirt provider's settings too, where its plugin is installed (Debian's vagrant-libvirt)
    p = validate(root, tmp_path, provider="libvirt")
    if "could not be found" in p.stdout + p.stderr:
        pytest.skip("vagrant-libvirt is not installed: the provider's settings were not checked")
    assert p.returncode == 0 and "validated successfully" in p.stdout, p.stdout + p.stderr


def test_vagrant_validate_catches_a_missing_provisioning_script(tmp_path):
    root = checkout(tmp_path, image=False)
    (root / PROVISION).unlink()
    p = validate(root, tmp_path, "--ignore-provider")
    assert p.returncode != 0 and "provision.sh" in p.stdout + p.stderr
