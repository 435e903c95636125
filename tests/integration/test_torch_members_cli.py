"""PyTorch members through `tritongen build`: an export that differs from torch is refused
in one line (the export itself: unit/test_torch_members.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli, write_spec
from tests.multi_models import torch_members
from tests.unit.test_torch_members import _pytorch

pytestmark = pytest.mark.subprocess


def test_cli_build_refuses_an_export_that_differs_in_one_line(tmp_path: Path) -> None:
    torch_members(tmp_path)
    spec = write_spec(
        tmp_path, {"name": "e", "members": [_pytorch("scaled", "tiny_modules:untraceable")]}
    )
    result = run_cli("build", str(spec), "-o", str(tmp_path / "r"), "--quick", cache=tmp_path)
    assert_one_line_error(result, "members.0.model (scaled)", "does not match torch")
