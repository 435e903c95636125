"""What a served call costs beyond the member's compute: the stand-in member, the cache, and
the default (saying why) when it cannot be measured (measured for real:
integration/test_serving_cost_served.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tritongen.bench.serving_cost import _stand_in_onnx, serving_cost
from tritongen.profile.profile import Profile, ServingCost
from tritongen.spec.devices import Device, Inventory
from tritongen.spec.members import TensorSignature

SIGNATURE = (TensorSignature("x", "float32", (3, 8, 8), None),)


def test_stand_in_reads_every_input_value_and_has_the_output_shape(tmp_path: Path) -> None:
    _stand_in_onnx(tmp_path / "s.onnx", SIGNATURE, num_classes=5)
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    (y,) = session.run(None, {"input_0": x})
    expected = np.repeat(x.reshape(4, -1).mean(axis=1, keepdims=True), 5, axis=1)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_no_cpu_means_nothing_charged_with_its_reason(tmp_path: Path) -> None:
    gpu_only = Inventory((Device("gpu0", "gpu", "T4-16GB", 16 * 2**30, index=0),))
    cost = serving_cost(object(), gpu_only)  # type: ignore[arg-type]
    assert cost.source == "not charged (no CPU in the inventory)"
    assert cost.per_call_s == 0


@pytest.mark.parametrize("extra", [{}, {"serving_cost": {"per_call_s": "x"}}, {"serving_cost": 3}])
def test_profiles_without_a_usable_serving_cost_charge_nothing_and_say_so(extra: dict) -> None:
    # no figure measured on another machine stands in for this one's
    cost = Profile(members={}, extra=extra).serving_cost
    assert cost.source.startswith("not charged") and cost.per_call_s == 0
    assert cost.warning() is not None


def test_profile_round_trips_the_measured_cost() -> None:
    measured = ServingCost(0.0004, 0.00001, 0.0003, "measured")
    profile = Profile.from_json({"version": 1, "members": {}, "serving_cost": measured.to_json()})
    assert profile.serving_cost == measured


def test_the_waiting_charged_under_load_is_the_one_measured_beside_the_members() -> None:
    idle = ServingCost(
        0.0004, 1e-5, 3e-4, "measured", request_s=1e-4, contention=1.2,
        wait_call_s=0.0012, client_wait_call_s=0.0004, wait_after_s=0.008,
    )  # fmt: skip
    # a profile written before the busy waiting was measured: its waiting scaled as the path
    assert idle.under_load().wait_call_s == pytest.approx(0.0012 * 1.2)
    busy = replace(idle, busy_wait_call_s=0.0006, busy_client_wait_call_s=0.0001)
    loaded = busy.under_load()
    assert (loaded.wait_call_s, loaded.client_wait_call_s) == (0.0006, 0.0001)
    assert loaded.request_s == pytest.approx(1e-4 * 1.2)
    # and the busy figures travel with the profile
    profile = Profile.from_json({"version": 1, "members": {}, "serving_cost": busy.to_json()})
    assert profile.serving_cost == busy
    assert "0.600 ms (+0.100 ms) with the members busy" in busy.describe()
