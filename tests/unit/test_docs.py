"""The docs describe the tree as it is: every file or folder of the repository they name exists,
every relative link resolves, docs/configuration.md lists exactly the flags of `kubeweft agent`
and `kubeweft install-cni` and the keys of deploy/base/configmap.yaml, and docs/metrics.md lists
exactly the metrics the agent's code defines."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml
from kubeweft.proxy.proxy_config import CONNTRACK_FIELDS, FIELDS, parse_proxy_config
from kubeweft.proxy.scheduler import SCHEDULERS

from kubeweft.cli import main as kubeweft_cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "lab" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = {"cni", "proxy", "lab", "proto", "kubeweft", "deploy", "docs", "bench", "tests", "scripts"}
CODE = re.compile(r"`([^`\s]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FLAG = re.compile(r"--[a-z][a-z0-9-]*")
OPTION = re.compile(r"^  (?:-\w, )?(--[a-z][a-z0-9-]*)", re.MULTILINE)     # argparse's list of options
METRIC = re.compile(r"\"((?:kubeproxy|kubeweft)_[a-z0-9_]+)\"")


def named_paths(text: str) -> list[str]:
    """Backticked repository paths: `proxy/`, `deploy/rbac.yaml`, `cli.py` (relative to the
    doc), never absolute paths, URLs, labels or placeholders."""
    out = []
    for token in CODE.findall(text):
        if token.startswith(("/", ".", "http")) or any(c in token for c in "<>:*$="):
            continue
        first, sep, _ = token.partition("/")
        if (sep and first in TOP) or re.fullmatch(r"[\w-]+(\.py|/)", token):
            out.append(token)
    return out


def section(text: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n") + len(heading) + 1
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", text[start:], re.MULTILINE)]
    return text[start:start + ends[0]] if ends else text[start:]


def table_first_column(text: str) -> list[str]:
    return [row.split("|")[1].strip() for row in text.splitlines()
            if row.startswith("| ") and not row.startswith("|---")]


def documented_flags(heading: str) -> set[str]:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    return {f for cell in table_first_column(section(doc, heading)) for f in FLAG.findall(cell)}


def cli_flags(verb: str) -> set[str]:
    """The options `kubeweft VERB --help` lists (COLUMNS set wide by the caller, so that each
    option starts a line of its own)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        kubeweft_cli([verb, "--help"])
    return set(OPTION.findall(out.getvalue())) - {"--help"}


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (outside code blocks)."""
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_files_that_exist(doc):
    text = doc.read_text()
    missing = [p for p in named_paths(text) if not (ROOT / p).exists() and not (doc.parent / p).exists()]
    for link in LINK.findall(text):
        if link.startswith("http"):
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target) if target else doc
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            missing.append(link)
    assert not missing, f"{doc.relative_to(ROOT)} names what the tree does not have: {missing}"


def test_anchors_follow_github():
    assert anchors(ROOT / "docs" / "architecture.md") >= {
        "decisions-and-the-measurements-behind-them", "table-ip-kubeweft-the-service-proxy", "the-lab"}


def test_named_paths_picks_repository_paths_only():
    text = ("`proxy/` `deploy/rbac.yaml` `cli.py` `apiserver/` `/run/kubeweft` `cni.dev/attachments` "
            "`kubeweft.io/vtep-mac` `logs/agent-<node>.log` `10.244.0.0/16` `--socket`")
    assert named_paths(text) == ["proxy/", "deploy/rbac.yaml", "cli.py", "apiserver/"]


@pytest.mark.parametrize("verb, heading", [("agent", "## `kubeweft agent`"),
                                           ("install-cni", "### `kubeweft install-cni`"),
                                           ("cleanup", "### `kubeweft cleanup`")])
def test_configuration_lists_every_flag(verb, heading, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    assert documented_flags(heading) == cli_flags(verb)


def configmap(name: str) -> dict:
    docs = yaml.safe_load_all((ROOT / "deploy" / "base" / "configmap.yaml").read_text())
    return next(d for d in docs if d["metadata"]["name"] == name)


def test_configuration_lists_every_configmap_key():
    keys = set(configmap("kubeweft-config")["data"])
    doc = (ROOT / "docs" / "configuration.md").read_text()
    documented = {c.strip("`") for c in table_first_column(section(doc, "## The ConfigMap"))} - {"key"}
    assert documented == keys


def test_configuration_lists_every_proxy_configuration_field():
    """Every field the agent reads of the KubeProxyConfiguration is documented, and the
    shipped ConfigMap sets each of them and parses; the two status addresses are shown commented
    out, since unset they serve both IP families."""
    wanted = {f for f in FIELDS if f not in ("ipvs", "conntrack")} | {"ipvs.scheduler"} | \
        {f"conntrack.{f}" for f in CONNTRACK_FIELDS}
    doc = (ROOT / "docs" / "configuration.md").read_text()
    documented = {c.strip("`") for c in table_first_column(section(doc, "## The service proxy's configuration"))}
    assert documented - {"field", "scheduler"} - set(SCHEDULERS) == wanted
    shipped = configmap("kubeweft")["data"]["config.conf"]
    parse_proxy_config(shipped)
    raw = yaml.safe_load(shipped)
    unset = {"metricsBindAddress", "healthzBindAddress"}
    assert {f for f in wanted if "." not in f} - unset <= set(raw) and set(raw["conntrack"]) == set(CONNTRACK_FIELDS)
    assert all(f"# {f}: " in shipped and f not in raw for f in unset)


def test_metrics_doc_lists_every_metric():
    defined = {m for path in (ROOT / "proxy").rglob("*.py") for m in METRIC.findall(path.read_text())}
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = {c.strip("`").removesuffix("_total") for c in table_first_column(doc)} - {"metric"}
    assert defined and documented == defined
