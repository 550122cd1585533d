"""The first level of a container's root filesystem, planned from the machine's. Pure.

A container sees the machine's system directories read-only (there are no images: a command
runs from the node's filesystem), /proc, /sys and /dev as they are, and empty directories of its
own for everything a container writes or keeps private (/tmp, /run, /var, /home, /root, ...),
so that nothing it writes lands on the machine except through its volumes. `keep` names more
top-level directories to show read-only: those holding this checkout and its Python. A checkout
under one of the private directories (a clone in /tmp, a home directory) is shown at its own
path alone (`keep_paths`, read-only), so that the container's /tmp stays its own and writable.
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


def plan_top(entries: list[tuple[str, str, str]], keep: set[str], keep_paths: tuple[str, ...] = ()) -> list[dict]:
    """entries: (name, "dir"|"file"|"symlink", link target) of the machine's `/`; keep_paths:
    absolute directories inside PRIVATE ones, shown read-only at the same path.
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
    for path in sorted(set(keep_paths)):
        out.append({"name": path.strip("/"), "how": "ro_path"})
    return out


def split_keep(paths: set[str]) -> tuple[set[str], tuple[str, ...]]:
    """Directories to show in containers -> (top-level names shown whole, paths inside a
    PRIVATE top shown alone; none inside another)."""
    tops = {p.split("/")[1] for p in paths if p.count("/") >= 1 and p.split("/")[1]}
    whole = {t for t in tops if t not in PRIVATE}
    inner = sorted(p.rstrip("/") for p in paths if p.split("/")[1] in PRIVATE and p.count("/") >= 2)
    alone = tuple(p for p in inner if not any(p != q and p.startswith(q + "/") for q in inner))
    return whole, alone
