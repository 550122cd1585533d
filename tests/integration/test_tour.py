"""`kubeweft lab tour` in CI: docs/tour.md's every step run against a lab of its own (brought up
and removed by the tour, since the tour applies ingress-nginx, takes NodePort 30080 and rolls
node1's kubeweft pod, which would disturb the shared labs' tests), every check passing, and
nothing of the lab left behind. About 60 s on a quiet machine: 25 s for `lab up`, 35 s of steps."""
from __future__ import annotations

import os
import re
import subprocess

import pytest
from kubeweft.lab import netns as lab_netns
from kubeweft.lab.config import LabConfig

from .conftest import KUBEWEFT, _session_lab_names, down_lab, unique_lab_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


def test_the_tour_passes_on_a_lab_of_its_own():
    name = unique_lab_name("t")
    _session_lab_names.add(name)          # the session's guard fails if any of it outlives the test
    try:
        proc = subprocess.run([KUBEWEFT, "lab", "--name", name, "tour"], capture_output=True,
                              text=True, timeout=400, check=False)
    finally:
        down_lab(name)
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    assert "== Services: ClusterIP, NodePort, LoadBalancer" in out
    assert re.search(r"^[1-9]\d+ steps passed, 0 failed, 0 sections not run$", out, re.MULTILINE), out
    assert not LabConfig(name=name).state_dir.exists()
    left = [n for n in os.listdir(lab_netns.NETNS_DIR) if n.startswith(f"{name}-")] \
        if lab_netns.NETNS_DIR.exists() else []
    assert not left
