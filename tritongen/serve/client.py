"""Send arrays to a served ensemble with tritonclient, over HTTP or gRPC, read from .npy/.npz
files or made up with the values tritongen feeds by default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

from tritongen.errors import TritongenError
from tritongen.spec.values import default_fill


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


@dataclass(frozen=True)
class InputSignature:
    name: str
    dtype: np.dtype[Any]
    dims: tuple[int, ...]  # per sample, -1 where any size goes


@dataclass(frozen=True)
class ModelSignature:
    inputs: tuple[InputSignature, ...]
    output_name: str
    max_batch_size: int


Inputs = np.ndarray | Mapping[str, np.ndarray]


class EnsembleClient:
    """A thin wrapper over tritonclient that knows the served model's signature."""

    def __init__(self, url: str, model: str, protocol: Protocol = Protocol.http) -> None:
        self.model = model
        self.protocol = Protocol(protocol)
        module = httpclient if self.protocol is Protocol.http else grpcclient
        self._module: Any = module
        self.client: Any = module.InferenceServerClient(url)
        self.signature = self._signature()

    def infer(self, inputs: Inputs, outputs: tuple[str, ...] | None = None) -> np.ndarray:
        """The model's output for `inputs`: one array when the model takes one input, else
        input name -> array (rows beyond max_batch_size go in several calls)."""
        feed = self._feed(inputs)
        rows = len(next(iter(feed.values())))
        step = max(1, self.signature.max_batch_size)
        parts = [
            self._infer_once({n: a[i : i + step] for n, a in feed.items()})
            for i in range(0, rows, step)
        ]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        self.client.close()

    def _feed(self, inputs: Inputs) -> dict[str, np.ndarray]:
        wanted = self.signature.inputs
        if isinstance(inputs, np.ndarray):
            if len(wanted) != 1:
                names = ", ".join(i.name for i in wanted)
                raise TritongenError(f"{self.model} takes {len(wanted)} inputs ({names})")
            inputs = {wanted[0].name: inputs}
        missing = [i.name for i in wanted if i.name not in inputs]
        if missing or len(inputs) != len(wanted):
            names = ", ".join(i.name for i in wanted)
            raise TritongenError(f"{self.model} takes the inputs {names}; got {', '.join(inputs)}")
        return {i.name: np.ascontiguousarray(inputs[i.name], dtype=i.dtype) for i in wanted}

    def _infer_once(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        tensors = []
        for name, array in feed.items():
            tensor = self._module.InferInput(
                name, list(array.shape), np_to_triton_dtype(array.dtype)
            )
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        output = self.signature.output_name
        requested = [self._module.InferRequestedOutput(output)]
        try:
            result = self.client.infer(self.model, tensors, outputs=requested)
        except InferenceServerException as exc:
            raise TritongenError(f"{self.model}: inference failed: {exc.message()}") from None
        return np.asarray(result.as_numpy(output))

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
        return ModelSignature(
            inputs=tuple(
                InputSignature(
                    name=i["name"],
                    dtype=np.dtype(triton_to_np_dtype(i["datatype"])),
                    dims=tuple(int(d) for d in i["shape"][1:]),
                )
                for i in metadata["inputs"]
            ),
            output_name=metadata["outputs"][0]["name"],
            max_batch_size=int(config.get("max_batch_size", 0)),
        )


def read_rows(data: Path | None, random: int, signature: ModelSignature) -> dict[str, np.ndarray]:
    """Input name -> rows, from a .npy (one input) or .npz (arrays named after the inputs)
    file, or `random` rows with the values tritongen feeds by default (spec/values.py)."""
    if data is None and random <= 0:
        raise TritongenError("infer: give a .npy or .npz file, or --random N")
    if data is None:
        rng = np.random.default_rng(0)
        return {
            i.name: default_fill(i.name, i.dtype.name).sample(
                rng, i.dtype.name, (random, *(d if d > 0 else 1 for d in i.dims))
            )
            for i in signature.inputs
        }
    arrays = _read_arrays(data, signature)
    for i in signature.inputs:
        shape = arrays[i.name].shape[1:]
        if len(shape) != len(i.dims) or any(
            d > 0 and d != s for d, s in zip(i.dims, shape, strict=True)
        ):
            raise TritongenError(
                f"{data}: rows of {i.name} have shape {list(shape)}, the model takes "
                f"{list(i.dims)}; reshape the array"
            )
    return arrays


def _read_arrays(data: Path, signature: ModelSignature) -> dict[str, np.ndarray]:
    names = [i.name for i in signature.inputs]
    try:
        loaded = np.load(data, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TritongenError(f"{data}: not a readable .npy or .npz file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise TritongenError(
                f"{data}: the model takes {len(names)} inputs ({', '.join(names)}); give an "
                ".npz file with one array per input (numpy.savez(path, name=array, ...))"
            )
        return {names[0]: loaded}
    with loaded:
        missing = [n for n in names if n not in loaded.files]
        if missing:
            raise TritongenError(
                f"{data}: has no array named {missing[0]!r}; the model takes {', '.join(names)}"
            )
        return {n: loaded[n] for n in names}


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Classes and scores of the k highest entries per row, best first."""
    k = min(k, probabilities.shape[-1])
    classes = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return classes, np.take_along_axis(probabilities, classes, axis=-1)
