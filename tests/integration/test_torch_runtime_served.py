"""PyTorch members served by torch (`runtime: torch`) on a real tritonserver, on the CPU:
answers equal torch in eager mode for the vision example, a member of two integer inputs and a
group of torch members (tests/unit/test_torch_runtime.py: what is refused)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_spec
from tests.multi_models import torch_members
from tests.onnx_factory import FEATURES
from tritongen.examples import vision
from tritongen.plan.plan import Group, Plan
from tritongen.render.repository import render_repository
from tritongen.serve.client import EnsembleClient
from tritongen.serve.server import EmbeddedServer
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

pytestmark = pytest.mark.server

TOKENS, VOCABULARY = 7, 20
POOL_MODULE = f"""
import torch


class Pool(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding({VOCABULARY}, 5)

    def forward(self, input_ids, attention_mask):
        kept = self.embed(input_ids) * attention_mask[..., None]
        return kept.sum(1) / attention_mask.sum(1, keepdim=True)


def build(seed):
    torch.manual_seed(seed)
    return Pool()


def first():
    return build(1)


def second():
    return build(2)
"""


def _plan(ensemble: Ensemble, grouped: bool = False) -> Plan:
    names = [m.name for m in ensemble.members]
    groups = {"cpu": Group(tuple(names), {"cpu": 1}, 4)} if grouped else {}
    return Plan(
        allocation={n: {"cpu": 1} for n in names},
        batch_size=dict.fromkeys(names, 4),
        threads=dict.fromkeys(names, 1),
        queue_delay_us=dict.fromkeys(names, 0),
        groups=groups,
    )


def _ensemble(folder: Path, name: str, members: list[dict], **extra: object) -> Ensemble:
    data = {"name": name, "members": members, "max_batch_size": 8, **extra}
    return load_ensemble(load_spec(write_spec(folder, data, f"{name}.yaml")))


def _torch_member(name: str, model: str, example: object) -> dict:
    return {"name": name, "model": model, "example_input": example, "runtime": "torch"}


def _render_into(repository: Path, ensemble: Ensemble, plan: Plan) -> None:
    rendered = render_repository(ensemble, plan, detect_devices(), repository.parent / "staging")
    for model in rendered.iterdir():
        if model.is_dir():
            model.rename(repository / model.name)


@pytest.fixture(scope="module")
def torch_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torch_runtime")
    repository = root / "repository"
    repository.mkdir()
    torch_members(root)
    (root / "pool_modules.py").write_text(POOL_MODULE)
    sys.path.insert(0, str(root))  # the reference loads the same module functions
    tiny = [
        _torch_member("script", "scripted.pt", [FEATURES]),
        _torch_member("func", "tiny_modules:mlp", [FEATURES]),
    ]
    _render_into(repository, e := _ensemble(root, "small", tiny), _plan(e))
    grouped = [{**m, "name": f"g_{m['name']}"} for m in tiny]
    _render_into(repository, e := _ensemble(root, "small_group", grouped), _plan(e, grouped=True))
    tokens = {"shape": [TOKENS], "dtype": "int64"}
    example = {"input_ids": tokens, "attention_mask": tokens}
    pools = [
        _torch_member("pool_a", "pool_modules:first", example),
        _torch_member("pool_b", "pool_modules:second", example),
    ]
    values = {"input_ids": {"range": [0, VOCABULARY]}}
    _render_into(repository, e := _ensemble(root, "pools", pools, input_values=values), _plan(e))
    spec = vision.write_example(root / "vision", runtime="torch")
    _render_into(repository, e := load_ensemble(load_spec(spec)), _plan(e))
    return repository


@pytest.fixture(scope="module")
def torch_server(torch_repository: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(torch_repository, ready_timeout_s=300) as running:
        yield running


def _mean_softmax(logits: list[torch.Tensor]) -> np.ndarray:
    return np.mean([torch.softmax(t, -1).numpy() for t in logits], axis=0)


@pytest.mark.parametrize("model", ["small", "small_group"])
def test_torchscript_and_function_members_served_by_torch_answer_as_torch_eager(
    torch_server: EmbeddedServer, torch_repository: Path, model: str
) -> None:
    import tiny_modules

    scripted = torch.jit.load(str(torch_repository.parent / "scripted.pt")).eval()
    eager = tiny_modules.mlp().eval()
    client = EnsembleClient(torch_server.http_url, model)
    for rows in (1, 5):
        batch = np.random.default_rng(rows).standard_normal((rows, FEATURES)).astype(np.float32)
        with torch.no_grad():
            expected = _mean_softmax([m(torch.from_numpy(batch)) for m in (scripted, eager)])
        np.testing.assert_allclose(client.infer(batch), expected, rtol=1e-5, atol=1e-6)


def test_members_of_two_integer_inputs_served_by_torch_answer_as_torch_eager(
    torch_server: EmbeddedServer,
) -> None:
    import pool_modules

    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCABULARY, (3, TOKENS), dtype=np.int64)
    mask = (rng.random((3, TOKENS)) < 0.7).astype(np.int64)
    mask[:, 0] = 1  # no row without a token
    client = EnsembleClient(torch_server.http_url, "pools")
    got = client.infer({"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        outputs = [
            m.eval()(torch.from_numpy(ids), torch.from_numpy(mask))
            for m in (pool_modules.first(), pool_modules.second())
        ]
    np.testing.assert_allclose(got, _mean_softmax(outputs), rtol=1e-5, atol=1e-6)


def test_the_vision_example_served_by_torch_answers_as_torch_eager(
    torch_server: EmbeddedServer, torch_repository: Path
) -> None:
    models = torch_repository.parent / "vision" / "models"
    members = [torch.jit.load(str(models / f"{n}.pt")).eval() for n in dict(vision.ARCHITECTURES)]
    images = np.random.default_rng(3).random((4, *vision.IMAGE), dtype=np.float32)
    got = EnsembleClient(torch_server.http_url, "vision").infer(images)
    with torch.no_grad():
        expected = _mean_softmax([m(torch.from_numpy(images)) for m in members])
    # One member's head amplifies rounding (its features' spread is tiny), and the served
    # batch runs other kernels than this one: probabilities agree to a few 1e-4.
    np.testing.assert_allclose(got, expected, atol=2e-3)
    np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
