"""Ensembles as users have them, served for real: one embedded tritonserver holds

- `ids_<mode>_<rule>`: two members taking input_ids and attention_mask (INT64, in
  different orders) and returning two outputs, every rule in both combiner modes and served
  as one group (`group`: every member inside one model);
- `half_<mode>`: two FP16 members, FP16 end to end;
- `mixed_<mode>`: an external-data ONNX member, a dynamic-shape member served at its declared
  shape, a TorchScript member and a `module:function` member;
- `text_<mode>`: the text example (three transformer encoders).

Every answer, over HTTP and gRPC, is compared with onnxruntime (or torch) + numpy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tritonclient.grpc import model_config_pb2

from tests.conftest import RULES, assert_one_line_error, run_cli, write_spec
from tests.multi_models import (
    cast_model,
    dynamic_model,
    external_data_model,
    token_model,
    tokens,
    torch_members,
)
from tests.onnx_factory import FEATURES, reference_combine
from tritongen.bench.perf import input_data_for, measure
from tritongen.examples import text
from tritongen.plan.plan import Group, default_plan
from tritongen.render.repository import Combiner, parse_config, render_repository
from tritongen.serve.client import EnsembleClient, Protocol
from tritongen.serve.server import EmbeddedServer
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

pytestmark = pytest.mark.server
MAX_BATCH = 8
ID_WEIGHTS = [1.0, 2.0]


@dataclass
class Served:
    server: EmbeddedServer
    repository: Path
    ensembles: dict[str, Ensemble]  # combined model name -> ensemble
    models: Path


MODES = ["ensemble", "bls", "group"]  # the two combiners, and every member in one model


def _specs(models: Path) -> dict[str, tuple[dict, str]]:
    """Combined model name -> (spec data, the mode to render it in)."""
    token_model(models / "ids_a.onnx", 1)
    token_model(models / "ids_b.onnx", 2, reversed_inputs=True)
    cast_model(models / "half_a.onnx", 3)
    cast_model(models / "half_b.onnx", 4)
    external_data_model(models / "ext.onnx", 5)
    dynamic_model(models / "dyn.onnx", 6)
    _, module = torch_members(models)
    text.write_example(models / "text")
    ids = [
        {"name": "ids_a", "model": "ids_a.onnx", "weight": ID_WEIGHTS[0]},
        {"name": "ids_b", "model": "ids_b.onnx", "weight": ID_WEIGHTS[1]},
    ]
    specs: dict[str, tuple[dict, str]] = {}
    for rule in RULES:
        for mode in MODES:
            combine = {"rule": rule, "transform": "softmax"}
            specs[f"ids_{mode}_{rule}"] = ({"members": ids, "combine": combine}, mode)
    half = [{"name": f"half_{m}", "model": f"half_{m}.onnx"} for m in "ab"]
    for mode in MODES:
        specs[f"half_{mode}"] = ({"members": half}, mode)
    mixed = [
        {"name": "ext", "model": "ext.onnx"},
        {"name": "dyn", "model": "dyn.onnx", "profile_shape": [FEATURES]},
        {"name": "script", "model": "scripted.pt", "example_input": [FEATURES]},
        {"name": "func", "model": f"{module}:mlp", "example_input": [FEATURES]},
    ]
    for mode in ("ensemble", "group"):
        specs[f"mixed_{mode}"] = ({"members": mixed}, mode)
    text_members = [{"name": n, "model": f"text/models/{n}.onnx"} for n in text.ARCHITECTURES]
    values = {"input_ids": {"range": [0, text.VOCAB]}}
    for mode in MODES:
        specs[f"text_{mode}"] = ({"members": text_members, "input_values": values}, mode)
    return specs


def _render(ensemble: Ensemble, mode: str, destination: Path) -> Path:
    """`ensemble` on this machine's CPU, one instance of each member or of the group."""
    inventory = detect_devices()
    plan = default_plan(ensemble, inventory)
    if mode == "group":
        cpu = next(iter(plan.allocation[ensemble.members[0].name]))
        group = Group(tuple(plan.allocation), {cpu: 1}, max(plan.batch_size.values()))
        plan = replace(plan, groups={cpu: group})
        return render_repository(ensemble, plan, inventory, destination)
    return render_repository(ensemble, plan, inventory, destination, combiner=Combiner(mode))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("ensembles")
    models = root / "models"
    models.mkdir()
    repository = root / "repository"
    repository.mkdir()
    ensembles = {}
    with pytest.MonkeyPatch.context() as patch:  # PyTorch exports into a cache of our own
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        for name, (data, mode) in _specs(models).items():
            data = {"name": name, "max_batch_size": MAX_BATCH, **data}
            spec = write_spec(models, data, f"{name}.yaml")
            ensemble = load_ensemble(load_spec(spec))
            _merge(_render(ensemble, mode, root / f"r_{name}"), repository)
            ensembles[name] = ensemble
    with EmbeddedServer(repository, ready_timeout_s=300) as server:
        yield Served(server, repository, ensembles, models)


def _merge(source: Path, repository: Path) -> None:
    for model in source.iterdir():
        if model.is_dir() and not (repository / model.name).exists():
            shutil.copytree(model, repository / model.name)


def _onnx(path: Path, feed: dict[str, np.ndarray], output: str) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([output], feed)[0].astype(np.float64)


def _member_outputs(served: Served, name: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    """(members, rows, classes), each member run here on its own ONNX file."""
    ensemble = served.ensembles[name]
    return np.stack(
        [_onnx(m.path, Ensemble.member_feed(m, feed), m.output.name) for m in ensemble.members]
    )


# ------------------------------------------------------------- two INT64 inputs, every rule


@pytest.mark.parametrize("combiner", MODES)
@pytest.mark.parametrize("rule", RULES)
def test_two_int64_inputs_match_the_reference_for_every_rule(
    served: Served, combiner: str, rule: str
) -> None:
    name = f"ids_{combiner}_{rule}"
    client = EnsembleClient(served.server.http_url, name)
    for rows in (1, MAX_BATCH):
        feed = tokens(rows, seed=rows)
        got = client.infer(feed)
        expected = reference_combine(
            _member_outputs(served, name, feed), rule, "softmax", ID_WEIGHTS
        )
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_the_combined_model_exposes_the_shared_inputs_by_name(served: Served) -> None:
    for combiner in MODES:
        client = EnsembleClient(served.server.grpc_url, f"ids_{combiner}_mean", Protocol.grpc)
        assert [(i.name, i.dtype.name, i.dims) for i in client.signature.inputs] == [
            ("input_ids", "int64", (6,)),
            ("attention_mask", "int64", (6,)),
        ]
        assert client.signature.output_name == "OUTPUT"
        feed = tokens(5, seed=11)
        over_http = EnsembleClient(served.server.http_url, f"ids_{combiner}_mean").infer(feed)
        np.testing.assert_array_equal(client.infer(feed), over_http)


def test_an_all_zero_mask_is_refused_not_answered(served: Served) -> None:
    """What zeros in a mask do (NaN), and why tritongen feeds masks ones."""
    feed = tokens(2, seed=3)
    feed["attention_mask"][1] = 0
    with pytest.raises(Exception, match="NaN or Inf"):
        EnsembleClient(served.server.http_url, "ids_ensemble_mean").infer(feed)


def test_perf_analyzer_gets_valid_input_data(served: Served, tmp_path: Path) -> None:
    ensemble = served.ensembles["ids_ensemble_mean"]
    data = input_data_for(ensemble, tmp_path)
    assert data.endswith(".json")
    (point,) = measure(
        served.server.grpc_url,
        "ids_ensemble_mean",
        [1],
        batch_size=2,
        interval_ms=500,
        max_trials=3,
        stability_percent=1000,
        input_data=data,
    )
    assert point.throughput > 0


def test_perf_analyzer_sends_at_the_request_rate_asked(served: Served, tmp_path: Path) -> None:
    # evenly spaced requests, whatever is in flight: the ensemble answers far faster than
    # 40 a second, so it serves what was sent
    data = input_data_for(served.ensembles["ids_ensemble_mean"], tmp_path)
    (point,) = measure(
        served.server.grpc_url,
        "ids_ensemble_mean",
        [],
        interval_ms=1000,
        max_trials=3,
        stability_percent=1000,
        input_data=data,
        request_rate=40,
    )
    assert point.concurrency == 0
    assert point.throughput == pytest.approx(40, rel=0.15)


def test_infer_cli_sends_every_input(served: Served) -> None:
    result = run_cli(
        "infer", "--model", "ids_bls_mean", "--url", served.server.http_url, "--random", "3"
    )
    assert result.returncode == 0, result.stderr
    assert "Top classes per row" in result.stdout


def test_infer_cli_reads_an_npz_of_named_inputs(served: Served, tmp_path: Path) -> None:
    feed = tokens(2, seed=4)
    np.savez(tmp_path / "rows.npz", **feed)
    url = served.server.grpc_url
    result = run_cli(
        "infer", str(tmp_path / "rows.npz"), "--model", "ids_ensemble_max", "--url", url,
        "--protocol", "grpc",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    np.save(tmp_path / "one.npy", feed["input_ids"])
    result = run_cli("infer", str(tmp_path / "one.npy"), "--model", "ids_ensemble_max", "--url",
                     url, "--protocol", "grpc")  # fmt: skip
    assert_one_line_error(result, "the model takes 2 inputs (input_ids, attention_mask)", ".npz")


# ------------------------------------------------------------------------------------ FP16


@pytest.mark.parametrize("combiner", MODES)
def test_fp16_ensemble_end_to_end(served: Served, combiner: str) -> None:
    name = f"half_{combiner}"
    client = EnsembleClient(served.server.http_url, name)
    assert client.signature.inputs[0].dtype == np.float16
    x = np.random.default_rng(1).standard_normal((MAX_BATCH, FEATURES)).astype(np.float16)
    got = client.infer(x)
    assert got.dtype == np.float16
    expected = reference_combine(
        _member_outputs(served, name, {"INPUT": x}), "mean", "softmax", [1, 1]
    )
    np.testing.assert_allclose(got.astype(np.float64), expected, atol=2e-3)
    config = parse_config((served.repository / name / "config.pbtxt").read_text(), name)
    assert config.output[0].data_type == model_config_pb2.TYPE_FP16


# ----------------------------------------- external data, dynamic shape, PyTorch members


@pytest.mark.parametrize("mode", ["ensemble", "group"])
def test_mixed_members_are_served_and_answer_like_their_sources(served: Served, mode: str) -> None:
    x = np.random.default_rng(2).standard_normal((3, FEATURES)).astype(np.float32)
    got = EnsembleClient(served.server.grpc_url, f"mixed_{mode}", Protocol.grpc).infer(x)
    models = served.models
    with torch.no_grad():
        scripted = torch.jit.load(str(models / "scripted.pt"))(torch.from_numpy(x)).numpy()
        function = _tiny_modules(models).mlp().eval()(torch.from_numpy(x)).numpy()
    outputs = np.stack(
        [
            _onnx(models / "ext.onnx", {"x": x}, "logits"),  # its weights in ext.weights
            _onnx(models / "dyn.onnx", {"x": x}, "logits"),
            scripted.astype(np.float64),
            function.astype(np.float64),
        ]
    )
    expected = reference_combine(outputs, "mean", "softmax", [1, 1, 1, 1])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    dyn = parse_config((served.repository / "dyn" / "config.pbtxt").read_text(), "dyn")
    assert list(dyn.input[0].dims) == [FEATURES]  # served at the declared shape
    assert (served.repository / "ext" / "1" / "ext.weights").is_file()
    assert (served.repository / "mixed_group" / "1" / "ext" / "ext.weights").is_file()


# ------------------------------------------------------------------------- the text example


@pytest.mark.parametrize("combiner", MODES)
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_text_example_matches_onnxruntime(served: Served, combiner: str, protocol: str) -> None:
    name = f"text_{combiner}"
    url = served.server.http_url if protocol == "http" else served.server.grpc_url
    ids, mask = (t.numpy() for t in text.random_tokens(MAX_BATCH, seed=21))
    feed = {"input_ids": ids, "attention_mask": mask}
    got = EnsembleClient(url, name, Protocol(protocol)).infer(feed)
    expected = reference_combine(_member_outputs(served, name, feed), "mean", "softmax", [1, 1, 1])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # the answer varies with the input, so that equality proves something
    assert np.ptp(got, axis=0).max() > 0.1 and len(set(got.argmax(axis=1))) >= 2


# ---------------------------------------------------------------------------------- warm-up


def test_every_rendered_member_is_warmed_up_with_valid_data(served: Served) -> None:
    members = {m.name: m for e in served.ensembles.values() for m in e.members}
    for member in members.values():
        folder = served.repository / member.name
        config = parse_config((folder / "config.pbtxt").read_text(), member.name)
        assert [w.batch_size for w in config.model_warmup] == [1, MAX_BATCH], member.name
        for warmup in config.model_warmup:
            assert set(warmup.inputs) == {i.name for i in member.inputs}
        for index, signature in enumerate(member.inputs):
            raw = folder / "warmup" / config.model_warmup[0].inputs[signature.name].input_data_file
            sample = np.frombuffer(raw.read_bytes(), dtype=signature.dtype)
            assert sample.size == int(np.prod(signature.dims)), (member.name, index)
            if "mask" in signature.name:
                assert (sample == 1).all()  # zeros would make the member answer NaN
    step_config = (served.repository / "text_ensemble_combine" / "config.pbtxt").read_text()
    step = parse_config(step_config, "text_ensemble_combine")
    assert [w.batch_size for w in step.model_warmup] == [1, MAX_BATCH]
    group = parse_config(
        (served.repository / "text_group" / "config.pbtxt").read_text(), "text_group"
    )
    assert [w.batch_size for w in group.model_warmup] == [1, MAX_BATCH]
    assert set(group.model_warmup[0].inputs) == {"input_ids", "attention_mask"}


def _tiny_modules(folder: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_modules_ref", folder / "tiny_modules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
