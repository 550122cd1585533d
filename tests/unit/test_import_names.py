"""kubeweft installs one import package. The product's folders (cni/, proxy/, lab/, proto/) are
mapped to kubeweft.cni, kubeweft.proxy, kubeweft.lab and kubeweft.proto; importing them under
their folder names would collide with proto-plus's `proto`, proxy.py's `proxy` and others."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OLD_TOP_LEVEL = {"cni", "proxy", "lab", "proto"}
SOURCE_DIRS = ("cni", "proxy", "lab", "proto", "kubeweft", "tests", "bench", "scripts")
# a module path written as a string: `python -m lab.workload`, importlib.import_module("proxy.x")
MODULE_STRING = re.compile(r"^(cni|proxy|lab|proto)\.[a-z_]+(\.[a-z_]+)*$")


def python_files() -> list[Path]:
    here = Path(__file__).resolve()          # this file spells the old names on purpose
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py") if p.resolve() != here)


def old_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in OLD_TOP_LEVEL]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in OLD_TOP_LEVEL:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            found.append((node.lineno, node.value))
    return found


def test_the_old_top_level_names_are_not_imported_anywhere():
    offenders = [f"{p.relative_to(ROOT)}:{line}: {name}"
                 for p in python_files() for line, name in old_imports(ast.parse(p.read_text(), str(p)))]
    assert offenders == []


def test_the_check_sees_each_form_of_an_old_import():
    src = ("import proxy\nimport lab.netns as n\nfrom proto import kubeweft_pb2\n"
           "from cni.spec import parse_config\nargv = ['-m', 'lab.workload']\n"
           "from kubeweft.proxy import model\nfrom . import spec\nkey = 'cni.dev/valid-attachments'\n")
    assert [name for _, name in old_imports(ast.parse(src))] == [
        "proxy", "lab.netns", "proto", "cni.spec", "lab.workload"]


def test_pyproject_maps_every_package_folder():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = project["tool"]["setuptools"]["package-dir"]
    listed = set(project["tool"]["setuptools"]["packages"])
    on_disk = set()
    for name, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((name, *rel)))
    assert on_disk == listed


def test_cni_imports_nothing_from_the_agent_or_the_lab():
    """The standalone CNI executable ships cni/ alone (cni/install.py): an import of
    kubeweft.proxy or kubeweft.lab from cni/ breaks it on a node."""
    offenders = []
    for p in sorted((ROOT / "cni").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{p.relative_to(ROOT)}: {n}" for n in names
                          if n.startswith(("kubeweft.proxy", "kubeweft.lab"))]
    assert offenders == []
