"""What a served call costs beyond the member's compute, measured on the real embedded server
with a stand-in member (the rest: unit/test_serving_cost.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import spec_data, write_spec
from tests.unit.test_serving_cost import SIGNATURE
from tritongen.bench.serving_cost import (
    WAIT_AFTER_S,
    measure_contention,
    measure_serving_cost,
)
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

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
    # the waiting stand-in's calls sleep, and cost the threads waiting on them more than
    # instant calls (tritonserver's, the process's and the client's spin before they sleep),
    # but not a call's worth
    assert cost.wait_after_s == WAIT_AFTER_S
    assert 0 < cost.wait_call_s + cost.client_wait_call_s < WAIT_AFTER_S


def test_contention_sets_the_paths_cpu_with_members_busy_against_idle_cores(
    member_models: list[Path], tmp_path: Path
) -> None:
    ensemble = load_ensemble(load_spec(write_spec(tmp_path, spec_data(member_models))))
    found = measure_contention(ensemble, detect_devices())
    factor = found.path
    # the stand-in's requests were answered both ways; the same requests cost the path about
    # as much CPU, more where the members' work takes the caches (not several times more)
    assert 0.7 < factor < 3.0
    # the members ran beside the path and alone: their extra CPU is a share of the path's
    # (their runs were counted, or there would be nothing to compare)
    assert 0.0 <= found.refill < 1.0
    # a long call's waiting beside the busy members: CPU the waiting threads spent, less
    # than the call lasted
    waiting = found.waiting
    assert 0 <= waiting.call_s + waiting.client_call_s < WAIT_AFTER_S
    # and the model charges that factor to everything the path costs per call and per request,
    # but the waiting as it was measured beside the members
    cost = replace(
        measure_serving_cost(SIGNATURE, 5, 8, detect_devices()),
        contention=factor,
        busy_wait_call_s=waiting.call_s,
        busy_client_wait_call_s=waiting.client_call_s,
    )
    loaded = cost.under_load()
    assert loaded.request_s == pytest.approx(cost.request_s * factor)
    assert loaded.per_call_s == pytest.approx(cost.per_call_s * factor)
    assert loaded.path_s == cost.path_s and loaded.tail == cost.tail
    assert (loaded.wait_call_s, loaded.client_wait_call_s) == (
        waiting.call_s,
        waiting.client_call_s,
    )
