"""A member of a tritongen ensemble: runs its model file (ONNX with onnxruntime, or TorchScript
with torch: its `runtime`) on every input its config.pbtxt declares, and returns the one
output it declares (the one that is combined).

Rendered by tritongen; imports only numpy, onnxruntime or torch (through sessions.py beside
it) and the Python backend's utilities; batching.py beside it merges the requests of a batch.
Settings come from this model's config.pbtxt `parameters`, never from code generation.
"""

import json
import os
import sys

import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from batching import answer, row_slices
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
        return answer(feeds, self._run, self._responses, self._error)

    def _run(self, batch):
        (output,) = self.session.run([self.output_name], batch)
        return output

    def _responses(self, counts, output):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, output[rows])])
            for rows in row_slices(counts)
        ]

    def _feed(self, request):
        return {
            n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names
        }

    def _error(self, exc):  # reported to the callers; the instance stays up
        message = f"{self.runtime} failed: {exc}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
