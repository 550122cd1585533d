"""docs/tour.md's steps as `kubeweft lab tour` reads them, and its checks: a step whose output
does not match its expectation fails, the sections after it are not run, cleanup always is."""
from __future__ import annotations

import os

import pytest
from kubeweft.lab.tour import TOUR_DOC, Step, TourSyntaxError, judge, parse_tour, run_sections

DOC = '''# title

```sh tour
echo not in a section is an error only when a section exists
```
'''

SAMPLE = '''# A tour

Some prose.

## First

```sh
echo a plain block, not a step
```

```sh tour
# a comment for the reader
echo one \\
  two
# expect: ^one two$
# within: 5
cat <<'EOF'
line
EOF
# expect: ^line$
false
# exit: 1
# timeout: 3
```

## Prose only

Nothing to run.

## Second

```sh tour
echo second
# reject: first
```

```sh tour cleanup
echo bye
```
'''


def test_parse_sections_steps_and_checks():
    sections = parse_tour(SAMPLE)
    assert [s.title for s in sections] == ["First", "Second"]
    first = sections[0].steps
    assert first[0] == Step(command="echo one \\\n  two", line=13, expect=("^one two$",), within=5.0)
    assert first[1].command == "cat <<'EOF'\nline\nEOF" and first[1].expect == ("^line$",)
    assert (first[2].command, first[2].exit_code, first[2].timeout) == ("false", 1, 3.0)
    assert sections[1].steps[0].reject == ("first",)
    assert [s.command for s in sections[1].cleanup] == ["echo bye"]


@pytest.mark.parametrize("text, why", [
    (DOC, "before the first section"),
    ("## S\n```sh tour\n# expect: x\necho\n```\n", "a check before any command"),
    ("## S\n```sh tour\ncat <<EOF\nno end\n```\n", "heredoc EOF never ends"),
    ("## S\n```sh tour\necho\n# expect: (\n```\n", "bad expect pattern"),
    ("## S\n```sh tour\necho\n# exit: zero\n```\n", "exit wants a number"),
    ("## S\n```sh tour\necho\n", "ends inside a fenced block"),
])
def test_parse_refuses_what_it_cannot_check(text, why):
    with pytest.raises(TourSyntaxError, match=why):
        parse_tour(text)


def test_judge():
    step = Step(command="x", line=1, expect=(r"^ok \d+$",), reject=("error",))
    assert judge(step, 0, "ok 3\n") == ()
    assert judge(step, 0, "ok three\n") == (r"output does not match /^ok \d+$/",)
    assert judge(step, 0, "ok 3\nerror\n") == ("output matches /error/",)
    assert judge(step, 1, "ok 3") == ("exit code 1, wanted 0",)
    assert judge(step, None, "ok 3") == ("no answer within 30 s",)


def run(text: str) -> tuple[bool, str]:
    lines: list[str] = []
    ok = run_sections(parse_tour(text), dict(os.environ), write=lines.append)
    return ok, "\n".join(lines)


def test_a_step_that_does_not_match_fails_the_tour_and_cleanup_still_runs():
    ok, out = run(SAMPLE.replace("# expect: ^line$", "# expect: ^something else$"))
    assert not ok
    assert "FAILED (docs/tour.md line 17): output does not match /^something else$/" in out
    assert "== Second" not in out and "-      Second (not run)" in out
    assert out.index("== cleanup") < out.index("$ echo bye") < out.index("== summary")
    assert out.endswith("1 steps passed, 1 failed, 1 sections not run")


def test_a_tour_that_matches_passes():
    ok, out = run(SAMPLE)
    assert ok, out
    assert out.endswith("4 steps passed, 0 failed, 0 sections not run")


def test_a_step_is_bounded_in_time_and_retried_within(tmp_path):
    ok, out = run("## S\n```sh tour\nsleep 5\n# timeout: 0.5\n```\n")
    assert not ok and "no answer within 0.5 s" in out
    flag = tmp_path / "flag"
    # fails the first time (the file is missing, then made), passes on the retry
    ok, out = run(f"## S\n```sh tour\ntest -e {flag} || {{ touch {flag}; false; }}\n# within: 5\n```\n")
    assert ok, out
    assert "FAIL" not in out


def test_the_tour_document_parses_and_runs_only_lab_commands():
    sections = parse_tour(TOUR_DOC.read_text())
    assert len(sections) >= 10
    titles = " ".join(s.title for s in sections)
    for concept in ("network namespace", "bridge", "VXLAN", "Services", "named ports",
                    "kube-proxy", "DNS", "Ingress", "NetworkPolicy", "Debugging"):
        assert concept in titles
    for section in sections:
        for step in (*section.steps, *section.cleanup):
            assert step.command.split()[0] in ("kubectl", "kubeweft"), step
