"""The last step of a tritongen ensemble on Triton's native ensemble scheduler: it receives
every member's output (MEMBER_0, MEMBER_1, ...) and combines them.

Rendered by tritongen; imports only numpy, the standard library and the Python backend's
utilities. Rule and weights come from config.pbtxt `parameters`.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from batching import merged, row_count, row_slices
from combine import make_combiner, non_finite_rows


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        weights = json.loads(params["weights"])
        self.names = [f"MEMBER_{i}" for i in range(len(weights))]
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])
        self.combine = make_combiner(
            params["rule"], params["transform"], weights, self.output_dtype
        )

    def execute(self, requests):
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.names}
            for r in requests
        ]
        batch = merged(feeds)
        stacked = np.stack([batch[name] for name in self.names])
        combined = self.combine(stacked).astype(self.output_dtype, copy=False)
        bad = non_finite_rows(combined)
        responses = []
        for rows in row_slices([row_count(f) for f in feeds]):
            if bad[rows].any():
                error = pb_utils.TritonError("a member returned NaN or Inf for this request")
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                output = pb_utils.Tensor("OUTPUT", combined[rows])
                responses.append(pb_utils.InferenceResponse([output]))
        return responses
