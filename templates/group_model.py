"""Several members of a tritongen ensemble served inside one Python-backend model: each batch
crosses the process boundary once and runs through every member's ONNX session in turn. A
group that holds every member also combines their outputs (same rules as the combine step)
and is the ensemble's served model; otherwise it returns each member's output.

Rendered by tritongen; imports only numpy, onnxruntime, the standard library and the Python
backend's utilities. Settings come from this model's config.pbtxt `parameters`.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from combine import make_combiner, non_finite_rows


class MemberFailed(Exception):
    """A member's session raised on a batch."""


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.members = json.loads(params["members"])
        self.input_name = config["input"][0]["name"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU":
            device = {"device_id": int(args["model_instance_device_id"])}
            providers = [("CUDAExecutionProvider", device), "CPUExecutionProvider"]
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.sessions = [
            ort.InferenceSession(os.path.join(folder, m["file"]), options, providers=providers)
            for m in self.members
        ]
        self.combine = None
        if params.get("combines") == "1":
            weights = [m["weight"] for m in self.members]
            self.combine = make_combiner(params["rule"], params["transform"], weights)
            self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])

    def execute(self, requests):
        arrays = [
            pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
        ]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        try:
            outputs = self._run(batch)
        except MemberFailed as exc:
            if len(arrays) == 1:
                return [_error(str(exc))]
            # One request may be the cause: run each alone so that only it fails.
            return [self._respond_alone(array) for array in arrays]
        return self._responses(arrays, outputs)

    def _run(self, batch):
        """Every member's output for `batch`, each member run in chunks of its own batch size
        (the one with the least CPU per sample): the batch crossed the process boundary once."""
        outputs = []
        for member, session in zip(self.members, self.sessions, strict=True):
            step = member["batch_size"]
            try:
                parts = [
                    session.run([member["output"]], {member["input"]: batch[i : i + step]})[0]
                    for i in range(0, len(batch), step)
                ]
            except Exception as exc:
                raise MemberFailed(f"{member['name']}: onnxruntime failed: {exc}") from None
            outputs.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
        return outputs

    def _respond_alone(self, array):
        try:
            return self._responses([array], self._run(array))[0]
        except MemberFailed as exc:
            return _error(str(exc))

    def _responses(self, arrays, outputs):
        if self.combine is None:
            return _split_members(arrays, outputs, [m["served_as"] for m in self.members])
        combined = self.combine(np.stack(outputs)).astype(self.output_dtype, copy=False)
        bad = non_finite_rows(combined)
        responses, start = [], 0
        for array in arrays:
            stop = start + len(array)
            if bad[start:stop].any():
                responses.append(_error("a member returned NaN or Inf for this request"))
            else:
                tensor = pb_utils.Tensor("OUTPUT", combined[start:stop])
                responses.append(pb_utils.InferenceResponse([tensor]))
            start = stop
        return responses


def _split_members(arrays, outputs, names):
    """One response per request holding each member's rows under the member's served name."""
    responses, start = [], 0
    for array in arrays:
        stop = start + len(array)
        tensors = [pb_utils.Tensor(n, o[start:stop]) for n, o in zip(names, outputs, strict=True)]
        responses.append(pb_utils.InferenceResponse(tensors))
        start = stop
    return responses


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
