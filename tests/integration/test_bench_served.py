"""What a served measurement records, on the embedded server with perf_analyzer (the
synthetic parts of the benchmark: unit/test_bench_units.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit import test_bench_units as unit_half
from tritongen.bench.compare import ServedMeasurer
from tritongen.plan.plan import Plan
from tritongen.spec.devices import detect_devices
from tritongen.spec.members import Ensemble

ensemble = unit_half.ensemble  # a fixture the unit half of this file shares

pytestmark = pytest.mark.server


def test_served_measurer_records_the_batches_each_model_executed(
    ensemble: Ensemble, tmp_path: Path
) -> None:
    inventory = detect_devices()
    batching = Plan(
        allocation={m.name: {"cpu": 1} for m in ensemble.members},
        batch_size={m.name: 8 for m in ensemble.members},
        threads={m.name: 1 for m in ensemble.members},
        queue_delay_us={m.name: 2000 for m in ensemble.members},
    )
    alone = replace(batching, dynamic_batching=False)
    measurer = ServedMeasurer(ensemble, inventory, tmp_path, concurrencies=[16], interval_ms=500)

    (batched,) = measurer.points(batching)
    (unbatched,) = measurer.points(alone)

    members = {m.name for m in ensemble.members}
    assert members <= set(batched.batches) and members <= set(unbatched.batches)
    # without a batcher every request is a call; with one, a call carries as many requests as
    # arrived within the queue delay (how many depends on the machine's timing), at least one
    # and never more than the preferred 8
    assert all(unbatched.batches[m] == 1.0 for m in members)
    assert all(1.0 <= batched.batches[m] <= 8.0 for m in members)
    assert batched.runnable is not None and batched.runnable >= 0
    # every request costs tritonserver, the members' processes and perf_analyzer some CPU
    for point in (batched, unbatched):
        assert set(point.cpu_s_per_request) == {"server", "models", "client"}
        assert all(0 < s < 1 for s in point.cpu_s_per_request.values())
