"""`kubeweft lab tour`: run the commands of docs/tour.md against a lab and check what they print.

The document is the source. A fenced block whose info string is `sh tour` holds steps: each
command line (a trailing backslash continues it; a heredoc `<<EOF` takes the lines up to `EOF`)
is followed by the checks it must pass, written as shell comments the reader sees too:

    # expect: REGEX        the output (stdout and stderr) matches REGEX (re.search, MULTILINE)
    # reject: REGEX        ... and does not match this one
    # exit: N              the exit code (default 0)
    # within: SECONDS      run again (each second) until the checks pass, for at most SECONDS
    # timeout: SECONDS     each run's bound (default 30)

Other comment lines are for the reader. A block marked `sh tour cleanup` runs at the end whatever
happened before. Sections are the `## ` headings. `parse_tour` is pure; `run_tour` runs it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOUR_DOC = ROOT / "docs" / "tour.md"
DEFAULT_TIMEOUT = 30.0
FENCE = re.compile(r"^(`{3,})\s*(.*)$")
CHECK = re.compile(r"^#\s*(expect|reject|exit|within|timeout):\s?(.*)$")
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")


class TourSyntaxError(ValueError):
    """The document's tour blocks do not parse: the line and why."""


@dataclass(frozen=True)
class Step:
    command: str
    line: int                               # of the command in the document, 1-based
    expect: tuple[str, ...] = ()
    reject: tuple[str, ...] = ()
    exit_code: int = 0
    within: float = 0.0
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Section:
    title: str
    steps: tuple[Step, ...]
    cleanup: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Outcome:
    step: Step
    exit_code: int | None                   # None: timed out
    output: str
    seconds: float
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


# --- pure ------------------------------------------------------------------------------------
def _join_commands(lines: list[tuple[int, str]]) -> list[tuple[int, str, list[str]]]:
    """Block lines -> (line number, command, the check comments after it)."""
    out: list[tuple[int, str, list[str]]] = []
    i = 0
    while i < len(lines):
        num, text = lines[i]
        i += 1
        if not text.strip():
            continue
        if text.lstrip().startswith("#"):
            if CHECK.match(text.strip()):
                if not out:
                    raise TourSyntaxError(f"line {num}: a check before any command")
                out[-1][2].append(text.strip())
            continue
        command = text
        while command.endswith("\\") and i < len(lines):
            command += "\n" + lines[i][1]          # bash reads backslash-newline as a space
            i += 1
        marker = HEREDOC.search(command)
        if marker:
            body = []
            while i < len(lines) and lines[i][1].strip() != marker.group(1):
                body.append(lines[i][1])
                i += 1
            if i == len(lines):
                raise TourSyntaxError(f"line {num}: heredoc {marker.group(1)} never ends")
            command = "\n".join([command, *body, lines[i][1]])
            i += 1
        out.append((num, command, []))
    return out


def _step(num: int, command: str, checks: list[str]) -> Step:
    kw: dict[str, object] = {"expect": [], "reject": []}
    for check in checks:
        key, value = CHECK.match(check).groups()
        value = value.strip()
        if key in ("expect", "reject"):
            try:
                re.compile(value)
            except re.error as e:
                raise TourSyntaxError(f"after line {num}: bad {key} pattern {value!r}: {e}") from None
            kw[key].append(value)
        else:
            try:
                kw[{"exit": "exit_code"}.get(key, key)] = int(value) if key == "exit" else float(value)
            except ValueError:
                raise TourSyntaxError(f"after line {num}: {key} wants a number, not {value!r}") from None
    return Step(command=command, line=num, expect=tuple(kw.pop("expect")),
                reject=tuple(kw.pop("reject")), **kw)


def parse_tour(text: str) -> list[Section]:
    """docs/tour.md -> its sections with their steps; sections without steps are left out."""
    sections: list[tuple[str, list[Step], list[Step]]] = []
    fence: str | None = None
    kind = ""
    block: list[tuple[int, str]] = []
    for num, line in enumerate(text.splitlines(), 1):
        if fence is None:
            m = FENCE.match(line)
            if m:
                fence, info = m.group(1), m.group(2).split()
                kind = "cleanup" if info[:3] == ["sh", "tour", "cleanup"] else \
                    "steps" if info[:2] == ["sh", "tour"] else ""
                block = []
                if kind and not sections:
                    raise TourSyntaxError(f"line {num}: a tour block before the first section")
            elif line.startswith("## "):
                sections.append((line[3:].strip(), [], []))
            continue
        if line.strip() == fence:
            if kind:
                steps = [_step(*c) for c in _join_commands(block)]
                sections[-1][1 if kind == "steps" else 2].extend(steps)
            fence = None
            continue
        block.append((num, line))
    if fence is not None:
        raise TourSyntaxError("the document ends inside a fenced block")
    return [Section(t, tuple(s), tuple(c)) for t, s, c in sections if s or c]


def judge(step: Step, exit_code: int | None, output: str) -> tuple[str, ...]:
    """What is wrong with one run of a step; () when it passed."""
    if exit_code is None:
        return (f"no answer within {step.timeout:g} s",)
    problems = []
    if exit_code != step.exit_code:
        problems.append(f"exit code {exit_code}, wanted {step.exit_code}")
    problems += [f"output does not match /{p}/" for p in step.expect
                 if not re.search(p, output, re.MULTILINE)]
    problems += [f"output matches /{p}/" for p in step.reject if re.search(p, output, re.MULTILINE)]
    return tuple(problems)


def summarize(results: list[tuple[Section, list[Outcome]]], skipped: list[Section]) -> str:
    lines = []
    for section, outcomes in results:
        mark = "ok" if all(o.ok for o in outcomes) else "FAILED"
        lines.append(f"  {mark:6} {section.title} ({len(outcomes)} steps, "
                     f"{sum(o.seconds for o in outcomes):.1f} s)")
    lines += [f"  {'-':6} {s.title} (not run)" for s in skipped]
    failed = sum(1 for _, outs in results for o in outs if not o.ok)
    passed = sum(1 for _, outs in results for o in outs if o.ok)
    lines.append(f"{passed} steps passed, {failed} failed, {len(skipped)} sections not run")
    return "\n".join(lines)


# --- running ---------------------------------------------------------------------------------
def _run_once(command: str, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """bash -o pipefail -c COMMAND in its own process group, killed whole at the bound."""
    proc = subprocess.Popen(["bash", "-o", "pipefail", "-c", command], stdout=subprocess.PIPE, cwd=ROOT,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out or ""


def run_step(step: Step, env: dict[str, str]) -> Outcome:
    start = time.monotonic()
    while True:
        code, out = _run_once(step.command, env, step.timeout)
        problems = judge(step, code, out)
        if not problems or time.monotonic() - start + 1.0 > step.within:
            return Outcome(step, code, out, time.monotonic() - start, problems)
        time.sleep(1.0)


def _show_failure(outcome: Outcome, write: Callable[[str], None]) -> None:
    write(f"    FAILED (docs/tour.md line {outcome.step.line}): {'; '.join(outcome.problems)}")
    write("    output:")
    write("\n".join("      " + ln for ln in outcome.output.rstrip().splitlines()[-30:]))


def run_sections(sections: list[Section], env: dict[str, str],
                 write: Callable[[str], None] = print) -> bool:
    """Every section's steps in order, stopping at the first failed one; the cleanup blocks
    always. Progress and the summary go to `write`. True when every step passed."""
    results: list[tuple[Section, list[Outcome]]] = []
    skipped: list[Section] = []
    failed = False
    for index, section in enumerate(sections):
        if failed:
            skipped.append(section)
            continue
        if not section.steps:
            continue
        write(f"== {section.title}")
        outcomes = []
        for step in section.steps:
            outcome = run_step(step, env)
            outcomes.append(outcome)
            first = step.command.splitlines()[0]
            write(f"  {'ok' if outcome.ok else 'FAIL':4} {outcome.seconds:5.1f}s  $ {first}")
            if not outcome.ok:
                _show_failure(outcome, write)
                failed = True
                break
        results.append((section, outcomes))
    cleanup = [s for sec in sections for s in sec.cleanup]
    if cleanup:
        write("== cleanup")
        for step in cleanup:
            outcome = run_step(step, env)
            write(f"  {'ok' if outcome.ok else 'FAIL':4} {outcome.seconds:5.1f}s  $ "
                  f"{step.command.splitlines()[0]}")
            if not outcome.ok:
                _show_failure(outcome, write)
                failed = True
    write("== summary")
    write(summarize(results, [s for s in skipped if s.steps]))
    return not failed


def _namespaces(env: dict[str, str]) -> set[str]:
    code, out = _run_once("kubectl get namespaces -o json", env, DEFAULT_TIMEOUT)
    return {i["metadata"]["name"] for i in json.loads(out)["items"]} if code == 0 else set()


def tour_env(name: str, kubeconfig: Path) -> dict[str, str]:
    """What the tour's commands see: the lab's kubeconfig, `kubeweft lab` naming this lab, and
    this interpreter's kubeweft and kubectl first on PATH."""
    env = dict(os.environ)
    env.update(KUBECONFIG=str(kubeconfig), KUBEWEFT_LAB=name,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def tour_command(name: str, nodes: int = 2, doc: Path = TOUR_DOC) -> int:
    """Run the tour on the lab `name` (brought up and removed here when none of that name
    runs); the namespaces it made are deleted at the end. 0 when every step passed."""
    from . import lifecycle
    from .config import LabConfig
    own = not LabConfig(name=name).kubeconfig.exists()
    try:
        sections = parse_tour(doc.read_text())
    except TourSyntaxError as e:
        print(f"kubeweft lab tour: {doc}: {e}", file=sys.stderr)
        return 2
    if own and lifecycle.up_command(name, nodes=nodes, cni=None, timeout=120.0, backend=None) != 0:
        lifecycle.down_command(name)
        return 1
    try:
        env = tour_env(name, LabConfig(name=name).kubeconfig)
        before = _namespaces(env)
        try:
            ok = run_sections(sections, env, write=lambda s: print(s, flush=True))
        finally:
            made = sorted(_namespaces(env) - before) if before else []
            if made:
                _run_once(f"kubectl delete namespace {' '.join(made)} --wait=true --timeout=60s",
                          env, 90.0)
        return 0 if ok else 1
    finally:
        if own:
            lifecycle.down_command(name)
