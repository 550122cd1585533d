from __future__ import annotations

from kubeweft.cni import antispoof


def test_plan_stale_takes_every_element_of_missing_veths_only():
    held = {"kwa": antispoof.render_pod_elements("kwa", "02:00:00:00:00:0a", ["10.0.0.10"]),
            "kwb": antispoof.render_pod_elements("kwb", "02:00:00:00:00:0b", ["10.0.0.11", "fd00::b"]),
            "kwc": antispoof.render_pod_elements("kwc", "02:00:00:00:00:0c", ["10.0.0.12"])}
    stale = antispoof.plan_stale(held, {"kwa", "eth0"})
    assert set(stale) == set(antispoof.SETS)
    assert {e["concat"][0] for elems in stale.values() for e in elems} == {"kwb", "kwc"}
    assert len(stale[antispoof.SET_IPS6]) == 3          # kwb: its address and link-local; kwc: link-local
    assert antispoof.plan_stale(held, {"kwa", "kwb", "kwc"}) == {}
