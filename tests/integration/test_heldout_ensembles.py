"""The held-out ensembles: drawn from a seed as the issue asks, exported to ONNX that computes
what the torch module does, and loadable as a spec."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

pytestmark = pytest.mark.slow  # exports torch modules to ONNX: seconds each

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "heldout_ensembles", BENCHMARKS / "heldout_ensembles.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["heldout_ensembles"] = module
    spec.loader.exec_module(module)
    return module


def test_seeds_draw_every_family_with_two_to_eight_members_ten_times_apart() -> None:
    heldout = generator()
    drawn = [heldout.draw_members(seed) for seed in range(2000, 2040)]

    assert {family for family, _ in drawn} == set(heldout.FAMILIES)
    for _, members in drawn:
        assert 2 <= len(members) <= 8
        sizes = [m.size for m in members]
        assert max(sizes) >= 10 * min(sizes)
    assert heldout.draw_members(2001) == heldout.draw_members(2001)  # a seed is one ensemble


@pytest.mark.parametrize("kind", ["cnn", "mlp", "text"])
def test_a_member_exported_computes_what_its_module_does(tmp_path: Path, kind: str) -> None:
    heldout = generator()
    member = heldout.Member(f"m_{kind}", kind, 20.0)
    module = heldout.build(member, seed=5).eval()
    path = tmp_path / "m.onnx"
    if kind == "text":
        heldout.text.export_onnx(module, path)
        ids, mask = heldout.text.random_tokens(3, seed=1)
        feeds, args = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, (ids, mask)
    else:
        heldout.export_onnx(module, path, example=torch.zeros(1, *heldout.IMAGE))
        x = torch.rand(3, *heldout.IMAGE, generator=torch.Generator().manual_seed(1))
        feeds, args = {"pixels": x.numpy()}, (x,)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (served,) = session.run(None, feeds)
    with torch.no_grad():
        expected = module(*args).numpy()

    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-4)
    assert expected.std() > 0.1  # calibrated: the logits spread


def test_the_quick_ensemble_is_a_spec_tritongen_loads(tmp_path: Path) -> None:
    heldout = generator()
    spec_path, family = heldout.write_ensemble(1001, tmp_path, quick=True)
    ensemble = load_ensemble(load_spec(spec_path))

    assert family == "mlp" and len(ensemble.members) == 2
