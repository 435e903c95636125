"""The served ensemble answers what the combining rules (docs/FORMATS.md) say, through real tritonclient calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.conftest import MAX_BATCH, RULES, TRANSFORMS, WEIGHTS, combined_name
from tests.onnx_factory import FEATURES, member_outputs, reference_combine
from tritongen.serve.client import EnsembleClient, Protocol
from tritongen.serve.server import EmbeddedServer

pytestmark = pytest.mark.server


def _rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, FEATURES)).astype(np.float32)


def _expected(
    member_models: list[Path], batch: np.ndarray, rule: str, transform: str
) -> np.ndarray:
    return reference_combine(member_outputs(member_models, batch), rule, transform, WEIGHTS)


@pytest.mark.parametrize("combiner", ["ensemble", "bls"])
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("rule", RULES)
def test_combined_output_matches_reference_for_every_rule(
    server: EmbeddedServer, member_models: list[Path], combiner: str, rule: str, transform: str
) -> None:
    client = EnsembleClient(server.http_url, combined_name(combiner, rule, transform))
    for rows in (1, MAX_BATCH):
        batch = _rows(rows, seed=rows)
        got = client.infer(batch)
        assert got.shape == (rows, 5)
        np.testing.assert_allclose(
            got, _expected(member_models, batch, rule, transform), rtol=1e-4, atol=1e-5
        )


def test_outputs_vary_with_the_input(server: EmbeddedServer) -> None:
    """Guard against members whose answers would make equality tests prove nothing."""
    got = EnsembleClient(server.http_url, combined_name("ensemble", "mean", "softmax")).infer(
        _rows(MAX_BATCH, 7)
    )
    assert np.ptp(got.max(axis=1)) > 0.2  # confidence differs from row to row
    assert got.max() > 2 / got.shape[1]  # far from uniform
    assert len(set(got.argmax(axis=1))) >= 3


@pytest.mark.parametrize("combiner", ["ensemble", "bls"])
def test_grpc_answers_equal_http_answers(server: EmbeddedServer, combiner: str) -> None:
    name = combined_name(combiner, "weighted_mean", "softmax")
    batch = _rows(5, seed=3)
    over_http = EnsembleClient(server.http_url, name, Protocol.http).infer(batch)
    over_grpc = EnsembleClient(server.grpc_url, name, Protocol.grpc).infer(batch)
    np.testing.assert_array_equal(over_http, over_grpc)


@pytest.mark.parametrize("combiner", ["ensemble", "bls"])
def test_32_concurrent_requests_are_all_correct(
    server: EmbeddedServer, member_models: list[Path], combiner: str
) -> None:
    name = combined_name(combiner, "mean", "softmax")
    batches = [_rows(1 + i % MAX_BATCH, seed=100 + i) for i in range(32)]

    def send(batch: np.ndarray) -> np.ndarray:
        client = httpclient.InferenceServerClient(server.http_url)
        tensor = httpclient.InferInput("INPUT", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = client.infer(name, [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT")])
        client.close()
        return result.as_numpy("OUTPUT")

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(send, batches))
    for batch, answer in zip(batches, answers, strict=True):
        np.testing.assert_allclose(
            answer, _expected(member_models, batch, "mean", "softmax"), rtol=1e-4, atol=1e-5
        )


def test_bls_reports_which_members_answered(server: EmbeddedServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    batch = _rows(3, seed=5)
    tensor = grpcclient.InferInput("INPUT", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = client.infer(combined_name("bls", "mean", "softmax"), [tensor])
    assert result.as_numpy("ANSWERED").tolist() == [[True, True, True]] * 3


def test_combined_model_metadata_names_input_and_output(server: EmbeddedServer) -> None:
    for combiner in ("ensemble", "bls"):
        metadata = httpclient.InferenceServerClient(server.http_url).get_model_metadata(
            combined_name(combiner, "max", "none")
        )
        assert metadata["inputs"][0]["name"] == "INPUT"
        assert metadata["inputs"][0]["shape"] == [-1, FEATURES]
        assert metadata["outputs"][0]["name"] == "OUTPUT"


def test_batch_above_maximum_is_refused_and_server_stays_ready(server: EmbeddedServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    batch = _rows(MAX_BATCH + 1, seed=9)
    tensor = httpclient.InferInput("INPUT", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    with pytest.raises(Exception, match="batch"):
        client.infer(combined_name("ensemble", "mean", "softmax"), [tensor])
    assert client.is_server_ready()
