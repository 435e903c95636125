"""A member of a tritongen ensemble: runs one ONNX file with onnxruntime.

Rendered by tritongen; imports only numpy, onnxruntime and the Python backend's utilities.
Settings come from this model's config.pbtxt `parameters`, never from code generation.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU":
            device = {"device_id": int(args["model_instance_device_id"])}
            providers = [("CUDAExecutionProvider", device), "CPUExecutionProvider"]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=providers)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        arrays = [
            pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
        ]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        try:
            (output,) = self.session.run([self.output_name], {self.input_name: batch})
        except Exception as exc:  # report to the callers; the instance stays up
            if len(arrays) > 1:  # one request may be the cause: run each alone
                return [self._respond_alone(array) for array in arrays]
            return [self._error(exc)]
        if len(arrays) == 1:
            return [pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, output)])]
        bounds = np.cumsum([len(a) for a in arrays[:-1]])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, part)])
            for part in np.split(output, bounds)
        ]

    def _respond_alone(self, array):
        try:
            (output,) = self.session.run([self.output_name], {self.input_name: array})
        except Exception as exc:
            return self._error(exc)
        return pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, output)])

    @staticmethod
    def _error(exc):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime failed: {exc}"))
