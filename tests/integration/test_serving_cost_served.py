"""What a served call costs beyond the member's compute, measured on the real embedded server
with a stand-in member (the rest: unit/test_serving_cost.py)."""

from __future__ import annotations

import pytest

from tests.unit.test_serving_cost import SIGNATURE
from tritongen.bench.serving_cost import measure_serving_cost
from tritongen.spec.devices import detect_devices

pytestmark = pytest.mark.server


def test_measured_on_the_embedded_server() -> None:
    cost = measure_serving_cost(SIGNATURE, 5, 8, detect_devices())
    assert cost.source == "measured"
    # a call costs CPU (tritonserver and the stub both work), but far less than a second
    assert 1e-6 < cost.per_call_s < 0.05
    assert 0 <= cost.per_sample_s < 0.01 and 0 <= cost.per_request_s < 0.05
    assert cost.call_s(8) >= cost.call_s(1)
    # tritonserver's side of a call, and threads runnable while it serves a load
    assert 0 < cost.server_call_s < 0.05
    assert 0 < cost.runnable_per_core < 100
    # p99 over the mean latency under load: a tail is never shorter than the mean
    assert 1 <= cost.tail < 100
