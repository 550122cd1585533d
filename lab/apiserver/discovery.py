"""Discovery documents (/version, /api, /apis, /api/v1, /apis/<g>/<v>). Pure.

Plain (non-aggregated) discovery with Content-Type application/json: kubectl asks for the
aggregated form first and falls back to these when the server answers with plain JSON.
"""
from __future__ import annotations

from ..resources import RESOURCES, groups, subresource

SERVER_VERSION = {"major": "1", "minor": "35", "emulationMajor": "1", "emulationMinor": "35",
                  "minCompatibilityMajor": "1", "minCompatibilityMinor": "34",
                  "gitVersion": "v1.35.0-kubeweft-lab", "gitCommit": "0000000000000000000000000000000000000000",
                  "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0",
                  "compiler": "gc", "platform": "linux/amd64"}


def render_version() -> dict:
    return dict(SERVER_VERSION)


def render_api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def render_api_group_list() -> dict:
    out = []
    for group, version in groups():
        if not group:
            continue
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        out.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}


def render_api_group(group: str) -> dict | None:
    for g in render_api_group_list()["groups"]:
        if g["name"] == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **g}
    return None


def render_resource_list(group: str, version: str) -> dict | None:
    """APIResourceList for one group/version, or None when it is not served."""
    if (group, version) not in groups():
        return None
    items = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        main = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                "kind": r.kind, "verbs": list(r.served_verbs)}
        if r.short_names:
            main["shortNames"] = list(r.short_names)
        if r.categories:
            main["categories"] = list(r.categories)
        items.append(main)
        for sub in r.subresources:
            info = subresource(sub)
            entry = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                     "kind": info.kind or r.kind, "verbs": list(info.verbs)}
            if info.group or info.version:
                entry.update(group=info.group, version=info.version)
            items.append(entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}
