"""PyTorch members: a TorchScript file and a `module:function`, exported to ONNX once (cached
by content), checked against torch, and refused in one line when the export differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.conftest import write_spec
from tests.multi_models import torch_members
from tests.onnx_factory import CLASSES, FEATURES
from tritongen.errors import SpecError
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tritongen" / "torch_export"


def _load(folder: Path, members: list[dict], **extra: object) -> Ensemble:
    data = {"name": "e", "members": members, "max_batch_size": 4, **extra}
    return load_ensemble(load_spec(write_spec(folder, data)))


def _pytorch(name: str, model: str, **fields: object) -> dict:
    return {"name": name, "model": model, "example_input": [FEATURES], **fields}


def test_torchscript_and_function_members_are_exported_and_match_torch(
    tmp_path: Path, cache: Path
) -> None:
    scripted, module = torch_members(tmp_path)
    members = [_pytorch("script", "scripted.pt"), _pytorch("func", f"{module}:mlp")]
    ensemble = _load(tmp_path, members)
    assert [i.name for i in ensemble.inputs] == ["INPUT"]
    for member in ensemble.members:
        assert member.path.is_relative_to(cache)
        assert [(i.name, i.dims) for i in member.inputs] == [("input", (FEATURES,))]
        assert member.output.dims == (CLASSES,)
    x = np.random.default_rng(0).standard_normal((5, FEATURES)).astype(np.float32)
    references = [torch.jit.load(str(scripted)), _function(tmp_path, module, "mlp")]
    for member, reference in zip(ensemble.members, references, strict=True):
        session = ort.InferenceSession(str(member.path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"input": x})
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_export_is_cached_by_content(tmp_path: Path, cache: Path) -> None:
    torch_members(tmp_path)
    first = _load(tmp_path, [_pytorch("script", "scripted.pt")]).members[0]
    stamp = first.path.stat().st_mtime_ns
    again = _load(tmp_path, [_pytorch("script", "scripted.pt")]).members[0]
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    torch.jit.save(torch.jit.script(torch.nn.Linear(FEATURES, CLASSES)), str(tmp_path / "s.pt"))
    other = _load(tmp_path, [_pytorch("other", "s.pt")]).members[0]
    assert other.path != first.path
    assert len(list(cache.iterdir())) == 2


def test_several_inputs_take_their_names_and_dtypes_from_example_input(
    tmp_path: Path, cache: Path
) -> None:
    (tmp_path / "two.py").write_text(
        "import torch\n"
        "class Pool(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.embed = torch.nn.Embedding(20, 3)\n"
        "    def forward(self, input_ids, attention_mask):\n"
        "        kept = self.embed(input_ids) * attention_mask[..., None]\n"
        "        return kept.sum(1) / attention_mask.sum(1, keepdim=True)\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return Pool()\n"
    )
    tensor = {"shape": [7], "dtype": "int64"}
    member = {
        "name": "pool",
        "model": "two:build",
        "example_input": {"input_ids": tensor, "attention_mask": tensor},
    }
    # ids up to 20: the check feeds the declared range; the all-ones mask keeps 0/0 away
    ensemble = _load(tmp_path, [member], input_values={"input_ids": {"range": [0, 20]}})
    assert [(i.name, i.dtype, i.dims) for i in ensemble.inputs] == [
        ("input_ids", "int64", (7,)),
        ("attention_mask", "int64", (7,)),
    ]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("tiny_modules:untraceable", "the ONNX export does not match torch on random input"),
        ("tiny_modules:broken", "tiny_modules:broken() raised ValueError: no weights here"),
        ("tiny_modules:not_a_module", "returned int, not a torch.nn.Module"),
        ("no_such_module:build", "cannot import no_such_module"),
        ("tiny_modules:missing", "tiny_modules has no function missing"),
    ],
)
def test_a_pytorch_member_that_cannot_be_served_is_named_in_one_line(
    tmp_path: Path, cache: Path, model: str, message: str
) -> None:
    torch_members(tmp_path)
    with pytest.raises(SpecError) as error:
        _load(tmp_path, [_pytorch("m", model)])
    text = str(error.value)
    assert "members.0.model (m)" in text and message in text and "\n" not in text
    assert not cache.exists() or not any(cache.iterdir())  # nothing unchecked is cached


def test_example_input_is_required_and_only_for_pytorch(tmp_path: Path, cache: Path) -> None:
    torch_members(tmp_path)
    spec = write_spec(
        tmp_path, {"name": "e", "members": [{"name": "m", "model": "scripted.pt"}]}, "a.yaml"
    )
    with pytest.raises(SpecError, match=r"members\.0: .*is a PyTorch model: give example_input"):
        load_spec(spec)


def _function(folder: Path, module: str, name: str) -> torch.nn.Module:
    import importlib.util

    spec = importlib.util.spec_from_file_location(module, folder / f"{module}.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return getattr(loaded, name)().eval()
