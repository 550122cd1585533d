"""The first level of a container's root filesystem, planned from the machine's. Pure.

A container sees the machine's system directories read-only (there are no images: a command
runs from the node's filesystem), /proc, /sys and /dev as they are, and empty directories of its
own for everything a container writes or keeps private (/tmp, /run, /var, /home, /root, ...),
so that nothing it writes lands on the machine except through its volumes. `keep` names more
top-level directories to show read-only: those holding this checkout and its Python.
"""
from __future__ import annotations

SHARED_RW = ("dev", "proc", "sys")
SHARED_RO = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc")
PRIVATE = {"tmp": 0o1777, "run": 0o755, "var": 0o755, "home": 0o755, "root": 0o700, "mnt": 0o755,
           "opt": 0o755, "srv": 0o755, "media": 0o755}
# inside the private /var, as a Debian image has them
VAR_ENTRIES = ({"name": "var/run", "how": "symlink", "link": "../run"},
               {"name": "var/tmp", "how": "empty", "mode": 0o1777},
               {"name": "var/lib", "how": "empty"}, {"name": "var/log", "how": "empty"})


def plan_top(entries: list[tuple[str, str, str]], keep: set[str]) -> list[dict]:
    """entries: (name, "dir"|"file"|"symlink", link target) of the machine's `/`.
    Returns the steps nsinit.build_top runs, in order."""
    out: list[dict] = []
    seen = set()
    for name, kind, link in sorted(entries):
        if kind == "symlink" and (name in SHARED_RO or name in keep):
            out.append({"name": name, "how": "symlink", "link": link})
        elif kind != "dir":
            continue
        elif name in SHARED_RW:
            out.append({"name": name, "how": "rw"})
        elif name in SHARED_RO or name in keep:
            out.append({"name": name, "how": "ro"})
        else:
            continue
        seen.add(name)
    for name, mode in sorted(PRIVATE.items()):
        if name not in seen:
            out.append({"name": name, "how": "empty", "mode": mode})
            if name == "var":
                out.extend(dict(e) for e in VAR_ENTRIES)
    return out
