"""kubeweft.cni.bandwidth: a burst tbf cannot hold is refused as configuration (code 7)."""
from __future__ import annotations

import pytest
from kubeweft.cni import bandwidth
from kubeweft.cni.errors import INVALID_NETWORK_CONFIG, CniError


def test_a_burst_longer_than_tbf_can_hold_is_refused():
    # 2**31 bits at 8 bit/s: pyroute2's struct packing failed after the veth was made (code 104)
    with pytest.raises(CniError) as e:
        bandwidth.check_fits(bandwidth.Tbf(rate_bits=8, burst_bytes=2**28), "ingress")
    assert e.value.code == INVALID_NETWORK_CONFIG and "ingressBurst" in e.value.msg
    bandwidth.check_fits(bandwidth.Tbf(rate_bits=8_000_000, burst_bytes=80_000), "egress")
    bandwidth.check_fits(bandwidth.Tbf(rate_bits=1000, burst_bytes=bandwidth.MIN_BURST_BYTES), "egress")
