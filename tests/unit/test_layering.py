"""Layering: the product (cni/, proxy/) never imports the lab, the benchmarks never import the
test suite, and the CNI modules that the standalone zipapp carries import nothing it does not
carry. Each import is resolved to its absolute module name (relative ones against the file's
package), and a string that spells a module path (`-m kubeweft.lab.workload`,
importlib.import_module("tests.x")) counts as an import too."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
from kubeweft.cni.install import STANDALONE_MODULES, VENDORED

ROOT = Path(__file__).resolve().parents[2]
# (folder, a package nothing in it may import)
RULES = (("cni", "kubeweft.lab"), ("proxy", "kubeweft.lab"), ("bench", "tests"))
# what the zipapp's modules may import besides each other: a host's python3 has the standard
# library, the zipapp vendors pyroute2, and cni/nft.py uses python3-nftables if the host has it
ZIPAPP_OUTSIDE = frozenset(sys.stdlib_module_names) | set(VENDORED) | {"nftables"}
MODULE_PATH = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$")


def package_of(path: Path) -> str:
    """The import package a file of the checkout belongs to ('' outside kubeweft's folders)."""
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    rel = path.resolve().parent.relative_to(ROOT)
    for name, folder in dirs.items():
        if rel.parts[:len(Path(folder).parts)] == Path(folder).parts:
            return ".".join((name, *rel.parts[len(Path(folder).parts):]))
    return ".".join(rel.parts)


def imported_modules(tree: ast.AST, package: str, strings: bool = True) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import, and (with `strings`) of every string shaped
    like a module path. `from X import a` yields X and X.a (a may be a submodule)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if a.name != "*"]
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and MODULE_PATH.match(node.value):
            found.append((node.lineno, node.value))
    return found


def violations(source: str, package: str, forbidden: str) -> list[tuple[int, str]]:
    return [(line, name) for line, name in imported_modules(ast.parse(source), package)
            if name == forbidden or name.startswith(forbidden + ".")]


@pytest.mark.parametrize(("folder", "forbidden"), RULES)
def test_folder_does_not_import(folder, forbidden):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"{folder}/ has no python files: the rule checks nothing"
    offenders = [f"{p.relative_to(ROOT)}:{line}: {name}"
                 for p in files for line, name in violations(p.read_text(), package_of(p), forbidden)]
    assert offenders == []


def test_the_checker_catches_each_form_of_a_forbidden_import():
    product = ("from kubeweft.lab import netns\n"
               "import kubeweft.lab.config as c\n"
               "from ..lab import topology\n"
               "from .. import lab\n"
               "argv = ['-m', 'kubeweft.lab.workload']\n"
               # allowed: the product's own modules, and names that only start alike
               "from kubeweft.cni import netns\nfrom . import labels\nimport kubeweft.laboratory\n"
               "key = 'kubeweft.lab is the embedded cluster'\n")
    assert violations(product, "kubeweft.proxy", "kubeweft.lab") == [
        (1, "kubeweft.lab"), (1, "kubeweft.lab.netns"), (2, "kubeweft.lab.config"), (3, "kubeweft.lab"),
        (3, "kubeweft.lab.topology"), (4, "kubeweft.lab"), (5, "kubeweft.lab.workload")]
    bench = ("from tests.integration import overlay_helpers as oh\nimport tests\n"
             "importlib.import_module('tests.integration.conftest')\n"
             "from bench.nft_events import ElementMonitor\nimport testsuite\n")
    assert [line for line, _ in violations(bench, "bench", "tests")] == [1, 1, 2, 3]


def outside_the_zipapp(source: str) -> list[tuple[int, str]]:
    """Imports of a zipapp module that the zipapp cannot satisfy (import statements only: a module
    path in a string, such as a file name, is not loaded into the zipapp's process)."""
    carried = {f"kubeweft.cni.{m}" for m in STANDALONE_MODULES if m != "__init__"}
    out = []
    for line, name in imported_modules(ast.parse(source), "kubeweft.cni", strings=False):
        parts = name.split(".")
        if parts[0] == "kubeweft":
            if name not in ("kubeweft", "kubeweft.cni") and ".".join(parts[:3]) not in carried:
                out.append((line, name))
        elif parts[0] not in ZIPAPP_OUTSIDE:
            out.append((line, name))
    return out


@pytest.mark.parametrize("module", [m for m in STANDALONE_MODULES if m != "__init__"])
def test_the_zipapp_modules_import_only_what_it_carries(module):
    assert outside_the_zipapp((ROOT / "cni" / f"{module}.py").read_text()) == []


def test_the_zipapp_check_catches_a_module_it_does_not_carry():
    src = ("import json\nfrom pyroute2 import IPRoute\nfrom . import spec\nfrom .errors import CniError\n"
           "from kubeweft.proxy.overlay.vxlan import VXLAN_OVERHEAD\n"
           "def f():\n    import grpc\n    from . import plugin\n")
    assert [line for line, _ in outside_the_zipapp(src)] == [5, 5, 7, 8]


def test_files_map_to_their_import_package():
    assert package_of(ROOT / "proxy" / "agent.py") == "kubeweft.proxy"
    assert package_of(ROOT / "lab" / "apiserver" / "app.py") == "kubeweft.lab.apiserver"
    assert package_of(ROOT / "bench" / "overlay.py") == "bench"
