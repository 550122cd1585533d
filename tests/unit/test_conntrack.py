"""kubeweft.proxy.conntrack: the policy controller's command lines, and how the runner reads
exit codes, a missing command and several commands at once (harmless commands stand in for
conntrack: the real one runs in tests/integration/test_policy_basic.py, in a scratch netns)."""
from __future__ import annotations

import time

from kubeweft.proxy.conntrack import delete, forget_argvs


def test_an_address_is_forgotten_in_both_directions():
    assert forget_argvs("10.244.0.5") == [["conntrack", "-D", "--reply-src", "10.244.0.5"],
                                          ["conntrack", "-D", "--orig-src", "10.244.0.5"]]


def test_only_exit_0_counts_as_deleted_and_a_missing_command_is_no_error(caplog):
    got = delete([["true"], ["false"], ["/nonexistent/conntrack", "-D"]])
    assert got == [True, False, False]
    assert "/nonexistent/conntrack" in caplog.text


def test_the_commands_run_at_once():
    t0 = time.monotonic()
    assert delete([["sleep", "0.5"], ["sleep", "0.5"], ["sleep", "0.5"]]) == [True] * 3
    assert time.monotonic() - t0 < 1.2
