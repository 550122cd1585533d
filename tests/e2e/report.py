"""The e2e run's report: one entry per check (name, passed/failed/skipped, seconds, why) and the
totals. Pure: conftest.py feeds it pytest's reports and writes what `render` returns."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CheckResult:
    name: str
    outcome: str = "passed"           # passed | failed | skipped
    seconds: float = 0.0              # setup + call + teardown
    reason: str = ""
    details: dict = field(default_factory=dict)


def check_name(nodeid: str) -> str:
    """'tests/e2e/test_services.py::test_node_port' -> 'services::node_port'."""
    path, _, test = nodeid.partition("::")
    module = path.rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
    return f"{module}::{test.removeprefix('test_')}"


def add_phase(results: dict[str, CheckResult], nodeid: str, when: str, outcome: str, seconds: float,
              reason: str = "", details: dict | None = None) -> None:
    """Fold one phase (setup, call, teardown) of a test into its result: a failed phase makes the
    check failed; a skip in any phase makes it skipped unless it failed."""
    r = results.setdefault(nodeid, CheckResult(check_name(nodeid)))
    r.seconds += seconds
    if details:
        r.details.update(details)
    if outcome == "failed":
        if r.outcome != "failed":
            r.reason = f"{when}: {reason}" if when != "call" else reason
        r.outcome = "failed"
    elif outcome == "skipped" and r.outcome != "failed":
        r.outcome, r.reason = "skipped", reason


def render(results: list[CheckResult], seconds: float, cluster: dict) -> dict:
    totals = {k: sum(1 for r in results if r.outcome == k) for k in ("passed", "failed", "skipped")}
    checks = []
    for r in results:
        item = {"name": r.name, "result": r.outcome, "seconds": round(r.seconds, 2)}
        if r.reason:
            item["reason"] = r.reason
        if r.details:
            item["details"] = r.details
        checks.append(item)
    return {"cluster": cluster, "checks": checks,
            "totals": {**totals, "checks": len(results), "seconds": round(seconds, 2)}}
