"""`make image`: the agent image built without Docker or a registry, from Debian's packages, into
out/image/kubeweft-VERSION.tar, tagged ghcr.io/kubeweft/kubeweft:VERSION (VERSION: pyproject's).

    deploy/image/build.py [--out out/image] [--force]      (as root; prints build.json)

1. a wheelhouse: `pip wheel` of this checkout (the core install, no [lab] extra) and of
   build-requirements.txt, for this interpreter: Debian 12's python3.11, the image's too.
2. the root filesystem: mmdebstrap (bookworm with its updates and security suites, minbase, the
   packages listed beside this file), whose customize hooks copy root.sh and the wheelhouse in
   and run root.sh in the chroot with pip offline (apt fetches its build-packages): the steps
   deploy/Dockerfile runs. mmdebstrap mounts /proc, /sys and /dev into the chroot; it runs in a mount namespace of
   its own (unshare --mount --propagation private), so none of that reaches the root one.
3. archive.py packs it: an OCI layout that is also a docker-archive (`kind load image-archive`,
   `k3s ctr images import`), with Env, Entrypoint and Cmd read from deploy/Dockerfile.

A build is skipped when out/image/kubeweft-VERSION.inputs holds the digest of its inputs (the
package's sources, pyproject.toml, deploy/Dockerfile and this folder): CI and the tests build
once. Debian's packages are not in the key; --force rebuilds with their current versions.
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import archive  # beside this file, which runs as a script

REPOSITORY = "ghcr.io/kubeweft/kubeweft"
SUITE = "bookworm"
MIRRORS = (f"deb http://deb.debian.org/debian {SUITE} main",
           f"deb http://deb.debian.org/debian {SUITE}-updates main",
           f"deb http://deb.debian.org/debian-security {SUITE}-security main")
INPUTS = ("kubeweft", "cni", "proxy", "proto", "lab", "pyproject.toml", "deploy/Dockerfile", "deploy/image")
CHROOT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
              "PIP_NO_INDEX=1", "PIP_FIND_LINKS=/tmp/kubeweft-build/wheels")


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def dockerfile_config(path: Path) -> dict:
    """Env, Entrypoint and Cmd as the Dockerfile's ENV KEY=VALUE, ENTRYPOINT [...] and CMD [...]
    lines (exec form) set them."""
    config: dict = {"Env": []}
    for line in path.read_text().splitlines():
        word, _, rest = line.partition(" ")
        if word == "ENV":
            config["Env"] += shlex.split(rest)
        elif word in ("ENTRYPOINT", "CMD"):
            config[word.title()] = json.loads(rest)
    return config


def inputs_digest() -> str:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *INPUTS],
                            cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    h = hashlib.sha256()
    for name in sorted(set(listed.decode().split("\0")) - {""}):
        path = ROOT / name
        if path.is_file():
            h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def build_wheelhouse(dest: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                    "--wheel-dir", str(dest), str(ROOT), "-r", str(HERE / "build-requirements.txt")],
                   check=True, timeout=1800)


def mmdebstrap_argv(rootfs: Path, wheels: Path) -> list[str]:
    packages = read_list(HERE / "packages")
    build = "/tmp/kubeweft-build"
    copied = " ".join(shlex.quote(str(p)) for p in (wheels, HERE / "root.sh", HERE / "build-packages",
                                                    HERE / "build-requirements.txt"))
    run = f'chroot "$1" /usr/bin/env -i {" ".join(CHROOT_ENV)} sh {build}/root.sh kubeweft'
    # merged /usr by symlinks, as debian:12-slim has it, not by the usrmerge package and its perl
    return ["mmdebstrap", "--mode=root", "--variant=minbase", f"--include={','.join(packages)}",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            f'--customize-hook=mkdir -p "$1{build}"', f"--customize-hook=copy-in {copied} {build}",
            f"--customize-hook={run}", f'--customize-hook=rm -rf "$1{build}"',
            SUITE, str(rootfs), *MIRRORS]


def build_rootfs(rootfs: Path, wheels: Path, log: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("deploy/image/build.py needs mmdebstrap: apt-get install mmdebstrap")
    with open(log, "w") as out:
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                               *mmdebstrap_argv(rootfs, wheels)],
                              stdout=out, stderr=subprocess.STDOUT, timeout=3600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"mmdebstrap failed ({proc.returncode}); the end of {log}:\n{log.read_text()[-4000:]}")


def build(out: Path, force: bool = False) -> dict:
    ver = version()
    tar = out / f"kubeweft-{ver}.tar"
    stamp, report = out / f"kubeweft-{ver}.inputs", out / "build.json"
    key = inputs_digest()
    if not force and tar.exists() and stamp.exists() and stamp.read_text().strip() == key and report.exists():
        return {**json.loads(report.read_text()), "cached": True}
    stamp.unlink(missing_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seconds: dict[str, float] = {}
    t0 = t = time.monotonic()
    build_wheelhouse(work / "wheels")
    seconds["wheelhouse"], t = round(time.monotonic() - t, 1), time.monotonic()
    rootfs = work / "rootfs"
    build_rootfs(rootfs, work / "wheels", out / "mmdebstrap.log")
    seconds["rootfs"], t = round(time.monotonic() - t, 1), time.monotonic()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    held = archive.write_archive(rootfs, tar, f"{REPOSITORY}:{ver}", arch, created,
                                 dockerfile_config(ROOT / "deploy" / "Dockerfile"),
                                 "mmdebstrap bookworm (deploy/image/packages) + deploy/image/root.sh")
    seconds["archive"] = round(time.monotonic() - t, 1)
    seconds["total"] = round(time.monotonic() - t0, 1)
    result = {**held, "archive": str(tar), "rootfs_bytes": archive.tree_bytes(rootfs), "seconds": seconds,
              "inputs": key}
    shutil.rmtree(work)
    report.write_text(json.dumps(result, indent=2) + "\n")
    stamp.write_text(key + "\n")
    return {**result, "cached": False}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "out" / "image")
    p.add_argument("--force", action="store_true", help="build even if the inputs did not change")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("deploy/image/build.py runs as root (mmdebstrap's root mode, chroot)")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # make image and the test may run at once
        result = build(args.out.resolve(), args.force)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
