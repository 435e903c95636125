"""Send arrays to a served ensemble with tritonclient, over HTTP or gRPC."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

from tritongen.errors import TritongenError


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


@dataclass(frozen=True)
class ModelSignature:
    input_name: str
    input_dtype: np.dtype[Any]
    input_dims: tuple[int, ...]
    output_name: str
    max_batch_size: int


class EnsembleClient:
    """A thin wrapper over tritonclient that knows the served model's signature."""

    def __init__(self, url: str, model: str, protocol: Protocol = Protocol.http) -> None:
        self.model = model
        self.protocol = Protocol(protocol)
        module = httpclient if self.protocol is Protocol.http else grpcclient
        self._module: Any = module
        self.client: Any = module.InferenceServerClient(url)
        self.signature = self._signature()

    def infer(self, batch: np.ndarray, outputs: tuple[str, ...] | None = None) -> np.ndarray:
        """The model's output for `batch` (rows beyond max_batch_size go in several calls)."""
        batch = np.ascontiguousarray(batch, dtype=self.signature.input_dtype)
        step = max(1, self.signature.max_batch_size)
        parts = [self._infer_once(batch[i : i + step]) for i in range(0, len(batch), step)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        self.client.close()

    def _infer_once(self, batch: np.ndarray) -> np.ndarray:
        sig = self.signature
        tensor = self._module.InferInput(
            sig.input_name, list(batch.shape), np_to_triton_dtype(batch.dtype)
        )
        tensor.set_data_from_numpy(batch)
        requested = [self._module.InferRequestedOutput(sig.output_name)]
        try:
            result = self.client.infer(self.model, [tensor], outputs=requested)
        except InferenceServerException as exc:
            raise TritongenError(f"{self.model}: inference failed: {exc.message()}") from None
        return np.asarray(result.as_numpy(sig.output_name))

    def _signature(self) -> ModelSignature:
        try:
            metadata = self.client.get_model_metadata(self.model)
            config = self.client.get_model_config(self.model)
        except InferenceServerException as exc:
            raise TritongenError(
                f"{self.model}: cannot read model metadata: {exc.message()}"
            ) from None
        except Exception as exc:  # connection refused and the like
            raise TritongenError(f"cannot reach the server: {exc}") from None
        if self.protocol is Protocol.grpc:
            from google.protobuf.json_format import MessageToDict

            metadata = MessageToDict(metadata, preserving_proto_field_name=True)
            config = MessageToDict(config, preserving_proto_field_name=True)["config"]
        first_input, first_output = metadata["inputs"][0], metadata["outputs"][0]
        return ModelSignature(
            input_name=first_input["name"],
            input_dtype=np.dtype(triton_to_np_dtype(first_input["datatype"])),
            input_dims=tuple(int(d) for d in first_input["shape"][1:]),
            output_name=first_output["name"],
            max_batch_size=int(config.get("max_batch_size", 0)),
        )


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Classes and scores of the k highest entries per row, best first."""
    k = min(k, probabilities.shape[-1])
    classes = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return classes, np.take_along_axis(probabilities, classes, axis=-1)
