"""Ensembles with several named inputs, profiled: every input fed at its declared shape in
the profiler's child process (the spec stage: unit/test_ensemble_inputs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.multi_models import TOKENS, dynamic_model, token_model
from tests.onnx_factory import FEATURES
from tests.unit.test_ensemble_inputs import _ensemble, _member
from tritongen.profile.profiler import profile_ensemble
from tritongen.spec.devices import Device, Inventory

pytestmark = pytest.mark.subprocess


def test_profile_feeds_every_input_at_the_declared_shape(tmp_path: Path) -> None:
    """The dynamic member only runs at its declared width (its weights are 16 rows), and the
    token member only with both its inputs: an entry for every batch proves both."""
    dynamic = dynamic_model(tmp_path / "d.onnx", 1)
    ids = token_model(tmp_path / "ids.onnx", 2)
    cpu = Device(id="cpu", kind="cpu", device_class="cpu", memory_bytes=2**33, cores=1)
    for member, shapes in (
        (_member("d", dynamic, profile_shape=[FEATURES]), {"d": {"x": [FEATURES]}}),
        (_member("ids", ids), {"ids": {"input_ids": [TOKENS], "attention_mask": [TOKENS]}}),
    ):
        ensemble = _ensemble(tmp_path, [member])
        profile = profile_ensemble(
            ensemble,
            Inventory((cpu,)),
            batch_sizes=[1, 4],
            budget_s=0.5,
            progress=False,
            cache_dir=tmp_path / "cache",
        )
        name = member["name"]
        assert profile.extra["input_shapes"] == shapes
        assert sorted(profile.entries(name, "cpu")) == [1, 4], profile.skipped
