"""PyTorch members served by torch (`runtime: torch`): what cannot be served so is refused in
one line (tests/integration/test_torch_runtime_served.py serves the rest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_spec
from tests.integration.test_torch_runtime_served import _ensemble, _plan, _torch_member
from tests.multi_models import torch_members
from tests.onnx_factory import FEATURES
from tritongen.errors import RenderError, SpecError
from tritongen.render.repository import RenderTarget, render_repository
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec


def test_an_onnx_member_asked_to_run_on_torch_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    spec = {"name": "e", "members": [{"name": "m", "model": "m.onnx", "runtime": "torch"}]}
    with pytest.raises(SpecError, match="runtime: torch is for PyTorch members") as raised:
        load_spec(write_spec(tmp_path, spec))
    assert "\n" not in str(raised.value)


def test_the_docker_target_refuses_members_served_by_torch(tmp_path: Path) -> None:
    torch_members(tmp_path)
    ensemble = _ensemble(tmp_path, "t", [_torch_member("script", "scripted.pt", [FEATURES])])
    with pytest.raises(RenderError, match="served by torch"):
        render_repository(
            ensemble,
            _plan(ensemble),
            detect_devices(),
            tmp_path / "out",
            target=RenderTarget.docker,
        )
