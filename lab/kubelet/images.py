"""What a container runs, from its image, command and args. Pure.

There are no images in the lab; a container runs on the node's filesystem:
- kubeweft's own image (the one deploy/ names) runs this checkout: its command and args, with
  `kubeweft`, `kubeweft-cni` and `python3` resolving to this virtualenv's, and the files the
  image has beside its install (the frozen CNI executable, loopback: imagefiles.py) at their
  paths in the image;
- a container with a command runs it (command + args); one with args alone runs the args, as
  images without an ENTRYPOINT do (busybox, alpine, debian: `kubectl run x --image=busybox -- sleep 1d`);
- CoreDNS runs the lab's cluster DNS (lab/dns) with the container's args (-conf ...);
- ingress-nginx's controller runs the lab's Ingress controller (lab/ingress) with the arguments
  that follow /nginx-ingress-controller;
- agnhost's netexec and serve-hostname, and pause, run what they would;
- anything else runs the lab workload (lab/workload.py) on the container's declared ports, or
  on 80 for web server images (nginx, httpd) that declare none.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass

from .podspec import Container, Pod

KUBEWEFT_IMAGES = ("ghcr.io/kubeweft/kubeweft", "kubeweft/kubeweft", "kubeweft")
WEB_SERVERS = {"nginx": 80, "httpd": 80, "nginx-unprivileged": 8080, "caddy": 80, "apache": 80}
VENV_COMMANDS = ("kubeweft", "kubeweft-cni")
PYTHON_COMMANDS = ("python", "python3")
INGRESS_NGINX_IMAGE = "ingress-nginx/controller"
INGRESS_NGINX_COMMAND = "nginx-ingress-controller"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Process:
    argv: tuple[str, ...]
    workload: bool = False       # the lab workload: ready once it prints "ready"
    path: str = IMAGE_PATH       # PATH, as the image would set it
    files: tuple[tuple[str, str], ...] = ()     # (machine path, path in the container), read-only


def image_repository(image: str) -> str:
    """'docker.io/library/nginx:1.27@sha256:..' -> 'docker.io/library/nginx'."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: len(name) - len(last[-1])] + last[-1].split(":", 1)[0]
    return name


def image_name(image: str) -> str:
    """The repository's last component: 'registry.k8s.io/e2e-test-images/agnhost:2.52' -> 'agnhost'."""
    return image_repository(image).rsplit("/", 1)[-1]


def is_kubeweft_image(image: str) -> bool:
    repo = image_repository(image)
    return repo in KUBEWEFT_IMAGES or repo.endswith("/kubeweft/kubeweft")


def _workload(pod: Pod, python: str, ports: str, lab: str) -> Process:
    return Process((python, "-m", "kubeweft.lab.workload", "--lab", lab, "--pod", pod.key, "--ports", ports),
                   workload=True)


def render_ports(container: Container, default: int = 0) -> str:
    """The workload's --ports: '80/TCP,81/UDP' (empty: the workload picks 8080)."""
    seen: list[str] = []
    for p in container.ports:
        item = f"{p.port}/{p.protocol}"
        if item not in seen:
            seen.append(item)
    if not seen and default:
        seen.append(f"{default}/TCP")
    return ",".join(seen)


def _flag(args: tuple[str, ...], name: str, default: int) -> int:
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
        elif a == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
        else:
            continue
        try:
            return int(value)
        except ValueError:
            return default
    return default


def plan_process(pod: Pod, container: Container, argv: tuple[str, ...], args: tuple[str, ...],
                 venv_bin: str, python: str, lab: str,
                 kubeweft_files: tuple[tuple[str, str], ...] = ()) -> Process:
    """What `container` runs; `argv`/`args` are its command and args with $(VAR) expanded;
    `kubeweft_files` are the files kubeweft's image adds (imagefiles.image_files)."""
    name = image_name(container.image)
    if is_kubeweft_image(container.image):
        cmd = list(argv + args)
        if not cmd:
            return _workload(pod, python, render_ports(container), lab)
        head = cmd[0].rsplit("/", 1)[-1]
        if head in VENV_COMMANDS:
            cmd[0] = f"{venv_bin}/{head}"
        elif head in PYTHON_COMMANDS:
            cmd[0] = python
        return Process(tuple(cmd), path=f"{venv_bin}:{IMAGE_PATH}", files=kubeweft_files)
    if name == "agnhost" and not argv and args:
        if args[0] == "netexec":
            http, udp = _flag(args, "http-port", 8080), _flag(args, "udp-port", 8081)
            return _workload(pod, python, f"{http}/TCP,{udp}/UDP", lab)
        if args[0] == "serve-hostname":
            return _workload(pod, python, f"{_flag(args, 'port', 9376)}/TCP", lab)
        if args[0] == "pause":
            return Process(("sleep", "infinity"))
    if name == "coredns" and not argv:
        return Process((python, "-m", "kubeweft.lab.dns", *args))
    if image_repository(container.image).endswith(INGRESS_NGINX_IMAGE):
        cmd = argv + args
        if cmd and cmd[0].rsplit("/", 1)[-1] == INGRESS_NGINX_COMMAND:
            cmd = cmd[1:]
        return Process((python, "-m", "kubeweft.lab.ingress", *cmd))
    if name == "pause" and not argv and not args:
        return Process(("sleep", "infinity"))
    if argv or args:
        return Process(argv + args)
    return _workload(pod, python, render_ports(container, WEB_SERVERS.get(name, 0)), lab)


def render_command(p: Process) -> str:
    return shlex.join(p.argv)
