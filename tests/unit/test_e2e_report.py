"""The e2e suite's report (tests/e2e/report.py): phases folded into one result per check."""
from __future__ import annotations

from tests.e2e.report import add_phase, check_name, render


def test_check_names_drop_the_test_prefixes():
    assert check_name("tests/e2e/test_services.py::test_node_port") == "services::node_port"


def test_a_failed_teardown_fails_a_passed_check_and_says_where():
    results = {}
    add_phase(results, "tests/e2e/test_a.py::test_x", "setup", "passed", 1.0)
    add_phase(results, "tests/e2e/test_a.py::test_x", "call", "passed", 2.0, details={"tried": 9})
    add_phase(results, "tests/e2e/test_a.py::test_x", "teardown", "failed", 0.5, "namespace stuck")
    (r,) = results.values()
    assert (r.outcome, r.seconds, r.reason, r.details) == ("failed", 3.5, "teardown: namespace stuck", {"tried": 9})


def test_a_skip_never_hides_a_failure():
    results = {}
    add_phase(results, "t.py::test_y", "call", "failed", 1.0, "boom")
    add_phase(results, "t.py::test_y", "teardown", "skipped", 0.0, "later")
    assert results["t.py::test_y"].outcome == "failed" and results["t.py::test_y"].reason == "boom"


def test_render_counts_every_outcome():
    results = {}
    add_phase(results, "t.py::test_a", "call", "passed", 1.0)
    add_phase(results, "t.py::test_b", "setup", "skipped", 0.1, "no DNS")
    add_phase(results, "t.py::test_c", "call", "failed", 2.0, "no DaemonSet")
    doc = render(list(results.values()), 9.87654, {"nodes": 2})
    assert doc["totals"] == {"passed": 1, "failed": 1, "skipped": 1, "checks": 3, "seconds": 9.88}
    assert doc["checks"][1] == {"name": "t::b", "result": "skipped", "seconds": 0.1, "reason": "no DNS"}
