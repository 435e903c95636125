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
from batching import answer_async, row_count, row_slices
from combine import compute_dtype, make_combiner, non_finite_rows


class MemberFailed(Exception):
    """A member answered with an error (a retry with fewer requests may succeed)."""


class MemberLate(Exception):
    """A member gave no answer within member_timeout_ms."""


def _member_failed(results):
    return any(isinstance(r, MemberFailed) for r in results)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.members = json.loads(params["members"])
        self.input_names = [i["name"] for i in config["input"]]
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])
        self.stack_dtype = compute_dtype(self.output_dtype)  # NaN marks a missing member
        self.rule, self.transform = params["rule"], params["transform"]
        self.combine = self._make_combiner([m["weight"] for m in self.members])
        self.min_members = int(params.get("min_members") or len(self.members))
        self.timeout_ms = int(params.get("member_timeout_ms") or 0)
        self.subset_combiners = {}
        self.remote = None
        if any(m.get("url") for m in self.members):
            # Rendered only for members served by another tritonserver; needs tritonclient[grpc].
            from remote import RemoteMembers

            self.remote = RemoteMembers()

    def _make_combiner(self, weights):
        return make_combiner(self.rule, self.transform, weights, self.output_dtype)

    async def execute(self, requests):
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names}
            for r in requests
        ]
        # One request may have made a member fail: then each request is asked for alone.
        return await answer_async(feeds, self._ask_members, self._responses, _member_failed)

    async def _ask_members(self, batch):
        """Each member's output for `batch` (combined input name -> array), or the exception
        that stands for its failure."""
        calls = (self._infer(member, batch) for member in self.members)
        return await asyncio.gather(*calls, return_exceptions=True)

    def _responses(self, counts, results):
        """One response per request: the combination of the members that answered its rows
        (`ANSWERED` says which), or an error naming the members that did not."""
        if all(isinstance(r, BaseException) for r in results):
            error = pb_utils.TritonError(self._failure(results, None))
            return [pb_utils.InferenceResponse(error=error) for _ in counts]
        outputs, answered = self._member_rows(results)
        combined = self._combine_rows(outputs, answered).astype(self.output_dtype, copy=False)
        bad = non_finite_rows(combined)
        responses = []
        for rows in row_slices(counts):
            if bad[rows].any():
                error = pb_utils.TritonError(self._failure(results, answered[rows]))
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensors = [
                    pb_utils.Tensor("OUTPUT", combined[rows]),
                    pb_utils.Tensor("ANSWERED", answered[rows]),
                ]
                responses.append(pb_utils.InferenceResponse(tensors))
        return responses

    def _member_rows(self, results):
        """Outputs stacked as (members, rows, ...) with NaN for a failed member, and a
        (rows, members) mask of the members whose output for that row is finite."""
        shape = next(r for r in results if not isinstance(r, BaseException)).shape
        outputs = np.stack(
            [
                np.full(shape, np.nan, self.stack_dtype) if isinstance(r, BaseException) else r
                for r in results
            ]
        ).astype(self.stack_dtype, copy=False)
        answered = np.isfinite(outputs.reshape(len(outputs), shape[0], -1)).all(axis=2).T
        return outputs, np.ascontiguousarray(answered)

    def _combine_rows(self, outputs, answered):
        """Combine each row from its answering members; NaN where fewer than min_members."""
        if answered.all():
            return self.combine(outputs)
        combined = np.full(outputs.shape[1:], np.nan, self.stack_dtype)
        patterns, inverse = np.unique(answered, axis=0, return_inverse=True)
        for index, pattern in enumerate(patterns):
            if pattern.sum() >= self.min_members:
                rows = inverse.reshape(-1) == index
                combined[rows] = self._combiner_for(pattern)(outputs[pattern][:, rows])
        return combined

    def _combiner_for(self, pattern):
        key = tuple(pattern.tolist())
        if key not in self.subset_combiners:
            weights = [m["weight"] for m, ok in zip(self.members, key, strict=True) if ok]
            self.subset_combiners[key] = self._make_combiner(weights)
        return self.subset_combiners[key]

    def _failure(self, results, answered):
        """One line: how many members answered, how many were needed, and why others did not."""
        counted = np.zeros(len(self.members), bool) if answered is None else answered.all(axis=0)
        reasons = [
            f"{m['name']}: {r}" if isinstance(r, BaseException) else f"{m['name']}: NaN or Inf"
            for m, r, ok in zip(self.members, results, counted, strict=True)
            if not ok
        ]
        count = 0 if answered is None else int(answered.sum(axis=1).min())
        if count >= self.min_members:
            return "the combined output is NaN or Inf"
        return (
            f"{count} of {len(self.members)} members answered, {self.min_members} needed "
            f"({'; '.join(reasons)})"
        )

    async def _infer(self, member, batch):
        """The member's output for `batch`, in chunks of at most its max_batch_size."""
        step = member["max_batch_size"]
        feed = {mine: batch[combined] for mine, combined in member["inputs"].items()}
        rows = row_count(batch)
        chunks = [{n: a[i : i + step] for n, a in feed.items()} for i in range(0, rows, step)]
        if member.get("url"):  # one input (tritongen refuses more for a remote member)
            one = member["input"]
            calls = asyncio.gather(*(self.remote.infer(member, c[one]) for c in chunks))
        else:
            calls = asyncio.gather(*(self._request(member, c).async_exec() for c in chunks))
        try:
            responses = await asyncio.wait_for(calls, self.timeout_ms / 1000 or None)
        except asyncio.TimeoutError:
            raise MemberLate(f"no answer within {self.timeout_ms} ms") from None
        if member.get("url"):
            return np.concatenate(responses)
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
            inputs=[pb_utils.Tensor(name, array) for name, array in chunk.items()],
        )
