"""A member of a tritongen ensemble: runs its model file (ONNX with onnxruntime, or TorchScript
with torch: its `runtime`) on every input its config.pbtxt declares, and returns the one
output it declares (the one that is combined).

Rendered by tritongen; imports only numpy, onnxruntime or torch (through sessions.py beside
it) and the Python backend's utilities.
Settings come from this model's config.pbtxt `parameters`, never from code generation.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sessions import open_session


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.input_names = [i["name"] for i in config["input"]]
        member = {
            "runtime": params.get("runtime", "onnxruntime"),
            "inputs": self.input_names,
            "output_index": int(params.get("output_index", "0")),
        }
        self.runtime = member["runtime"]
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.session = open_session(
            os.path.join(folder, params["model_file"]), args, params, member
        )
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        feeds = [self._feed(r) for r in requests]
        batch = feeds[0] if len(feeds) == 1 else self._concatenate(feeds)
        try:
            (output,) = self.session.run([self.output_name], batch)
        except Exception as exc:  # report to the callers; the instance stays up
            if len(feeds) > 1:  # one request may be the cause: run each alone
                return [self._respond_alone(feed) for feed in feeds]
            return [self._error(exc)]
        if len(feeds) == 1:
            return [pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, output)])]
        first = self.input_names[0]
        bounds = np.cumsum([len(f[first]) for f in feeds[:-1]])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, part)])
            for part in np.split(output, bounds)
        ]

    def _feed(self, request):
        return {
            n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names
        }

    def _concatenate(self, feeds):
        return {n: np.concatenate([f[n] for f in feeds]) for n in self.input_names}

    def _respond_alone(self, feed):
        try:
            (output,) = self.session.run([self.output_name], feed)
        except Exception as exc:
            return self._error(exc)
        return pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, output)])

    def _error(self, exc):
        message = f"{self.runtime} failed: {exc}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
