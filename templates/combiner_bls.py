"""The combined model of a tritongen ensemble, as BLS: for each batch of requests it sends
one request to every member at once (async), waits for all, and combines their outputs.

Rendered by tritongen; imports only numpy, the standard library and the Python backend's
utilities. Members, rule and weights come from config.pbtxt `parameters`.
"""

import asyncio
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from combine import make_combiner, non_finite_rows


class MemberFailed(Exception):
    pass


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.members = json.loads(params["members"])
        self.combine = make_combiner(
            params["rule"], params["transform"], [m["weight"] for m in self.members]
        )
        self.rule, self.transform = params["rule"], params["transform"]
        self.min_members = int(params.get("min_members") or len(self.members))
        timeout_ms = int(params.get("member_timeout_ms") or 0)
        self.timeout_s = timeout_ms / 1000 if timeout_ms else None
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])
        self.remote = None
        if any(m.get("url") for m in self.members):
            # Rendered only for members served by another tritonserver; needs tritonclient[grpc].
            from remote import RemoteMembers

            self.remote = RemoteMembers()

    async def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        results = await asyncio.gather(
            *(self._infer(member, batch) for member in self.members), return_exceptions=True
        )
        answered = [not isinstance(r, BaseException) for r in results]
        if sum(answered) < self.min_members:
            failures = "; ".join(
                f"{m['name']}: {r}"
                for m, r in zip(self.members, results, strict=False)
                if isinstance(r, BaseException)
            )
            error = pb_utils.TritonError(
                f"{sum(answered)} of {len(self.members)} members answered, "
                f"{self.min_members} needed ({failures})"
            )
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        outputs = [r for r in results if not isinstance(r, BaseException)]
        combine = self.combine if all(answered) else self._combiner_for(answered)
        combined = combine(np.stack(outputs)).astype(self.output_dtype, copy=False)
        mask = np.tile(np.asarray(answered, dtype=np.bool_), (len(batch), 1))
        return self._responses(arrays, combined, mask)

    def _responses(self, arrays, combined, mask):
        bad = non_finite_rows(combined)
        responses, start = [], 0
        for array in arrays:
            stop = start + len(array)
            if bad[start:stop].any():
                error = pb_utils.TritonError("a member returned NaN or Inf for this request")
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensors = [
                    pb_utils.Tensor("OUTPUT", combined[start:stop]),
                    pb_utils.Tensor("ANSWERED", mask[start:stop]),
                ]
                responses.append(pb_utils.InferenceResponse(tensors))
            start = stop
        return responses

    def _combiner_for(self, answered):
        weights = [m["weight"] for m, ok in zip(self.members, answered, strict=False) if ok]
        return make_combiner(self.rule, self.transform, weights)

    async def _infer(self, member, batch):
        """The member's output for `batch`, in chunks of at most its max_batch_size."""
        step = member["max_batch_size"]
        chunks = [batch[i : i + step] for i in range(0, len(batch), step)]
        if member.get("url"):
            calls = [self.remote.infer(member, chunk) for chunk in chunks]
            return np.concatenate(await asyncio.wait_for(asyncio.gather(*calls), self.timeout_s))
        calls = [self._request(member, chunk).async_exec() for chunk in chunks]
        responses = await asyncio.wait_for(asyncio.gather(*calls), self.timeout_s)
        parts = []
        for response in responses:
            if response.has_error():
                raise MemberFailed(response.error().message())
            parts.append(pb_utils.get_output_tensor_by_name(response, member["output"]).as_numpy())
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _request(self, member, chunk):
        return pb_utils.InferenceRequest(
            model_name=member["name"],
            requested_output_names=[member["output"]],
            inputs=[pb_utils.Tensor(member["input"], chunk)],
        )
