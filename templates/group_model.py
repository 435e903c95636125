"""Several members of a tritongen ensemble served inside one Python-backend model: each batch
crosses the process boundary once and runs through every member's ONNX session, one after
another or, when the plan says so (`parallel_members`) and the cores are free, in parallel
threads: onnxruntime releases the GIL, so a lone request waits for the slowest member rather
than for all of them. The cores count as free for a batch of one request while no other
instance of this model is executing (`BusyInstances`); under load, threads would only crowd
the cores. A group that holds every member also combines
their outputs (same rules as the combine step) and is the ensemble's served model; otherwise
it returns each member's output.

Rendered by tritongen; imports only numpy, onnxruntime, the standard library and the Python
backend's utilities. Settings come from this model's config.pbtxt `parameters`."""

import contextlib
import hashlib
import json
import mmap
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from batching import answer, row_count, row_slices
from combine import make_combiner, non_finite_rows
from sessions import open_session


class MemberFailed(Exception):
    """A member's session raised on a batch."""


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.members = json.loads(params["members"])
        self.input_names = [i["name"] for i in config["input"]]
        folder = os.path.join(args["model_repository"], args["model_version"])
        sessions = [
            open_session(os.path.join(folder, m["file"]), args, params, m) for m in self.members
        ]
        self.pairs = list(zip(self.members, sessions, strict=True))  # (member, its session)
        self.pool = self.busy = None
        if params.get("parallel_members") == "1" and len(self.members) > 1:
            self.pool = ThreadPoolExecutor(len(self.members) - 1, "member")
            self.busy = BusyInstances(args, params["busy_file"])
        self.combine = None
        if params.get("combines") == "1":
            output = config["output"][0]
            self.output_name = output["name"]
            self.output_dtype = pb_utils.triton_string_to_numpy(output["data_type"])
            weights = [m["weight"] for m in self.members]
            self.combine = make_combiner(
                params["rule"], params["transform"], weights, self.output_dtype
            )

    def execute(self, requests):
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names}
            for r in requests
        ]
        parallel_members = self.busy is not None and self.busy.enter() and len(feeds) == 1
        try:
            return answer(
                feeds,
                lambda batch: self._run(batch, parallel_members),
                self._responses,
                lambda exc: _error(str(exc)),
                failure=MemberFailed,
                run_alone=self._run,
            )
        finally:
            if self.busy is not None:
                self.busy.leave()

    def finalize(self):
        if self.pool is not None:
            self.pool.shutdown()
            self.busy.close()

    def _run(self, batch, parallel_members=False):
        """Every member's output for `batch`: the batch crossed the process boundary once."""
        if not parallel_members:
            return [_run_member(member, session, batch) for member, session in self.pairs]
        # The first member runs on this thread while the pool runs the others.
        others = [self.pool.submit(_run_member, m, s, batch) for m, s in self.pairs[1:]]
        try:
            first = _run_member(*self.pairs[0], batch)
        finally:
            wait(others)  # the sessions are free again before the next batch comes
        return [first, *(f.result() for f in others)]

    def _responses(self, counts, outputs):
        if self.combine is None:
            return _split_members(counts, outputs, [m["served_as"] for m in self.members])
        combined = self.combine(np.stack(outputs)).astype(self.output_dtype, copy=False)
        bad = non_finite_rows(combined)
        responses = []
        for rows in row_slices(counts):
            if bad[rows].any():
                responses.append(_error("a member returned NaN or Inf for this request"))
            else:
                tensor = pb_utils.Tensor(self.output_name, combined[rows])
                responses.append(pb_utils.InferenceResponse([tensor]))
        return responses


class BusyInstances:
    """One byte per instance of this model, shared by its instances (the file `busy_file`
    followed by the server's PID and the model, which the embedded server removes when it
    stops): 1 while the instance executes. Without /dev/shm (or where the file there is not
    ours) every instance counts as alone."""

    SLOTS = 4096

    def __init__(self, args, busy_file):
        numbers = re.findall(r"\d+", args["model_instance_name"])[-2:]
        self.slot = (int(numbers[0]) * 512 + int(numbers[1])) % self.SLOTS if numbers else 0
        model = hashlib.sha256(args["model_repository"].encode()).hexdigest()[:16]
        self.path = f"{busy_file}-{os.getppid()}-{model}"
        self.map = bytearray(self.SLOTS)  # until shared
        try:
            # /dev/shm is world-writable: follow no link, share only a file of our own.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:
            self.path = None
            return
        try:
            if os.fstat(fd).st_uid == os.getuid():
                os.ftruncate(fd, self.SLOTS)
                self.map = mmap.mmap(fd, self.SLOTS)
            else:
                self.path = None
        finally:
            os.close(fd)

    def enter(self):
        """Mark this instance busy; True when no other instance is."""
        self.map[self.slot] = 1
        return self.map[:].count(b"\x01") == 1

    def leave(self):
        self.map[self.slot] = 0

    def close(self):
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # the others keep their mapping


def _run_member(member, session, batch):
    """The member's output for `batch`, run in chunks of its own batch size (the one with the
    least CPU per sample)."""
    step = member["batch_size"]
    try:
        parts = [
            session.run([member["output"]], _feed(member, batch, i, i + step))[0]
            for i in range(0, row_count(batch), step)
        ]
    except Exception as exc:
        raise MemberFailed(
            f"{member['name']}: {member.get('runtime', 'onnxruntime')} failed: {exc}"
        ) from None
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _feed(member, batch, start, stop):
    """Rows start:stop of the group's inputs, under the names the member's model takes."""
    return {mine: batch[combined][start:stop] for mine, combined in member["inputs"].items()}


def _split_members(counts, outputs, names):
    """One response per request holding each member's rows under the member's served name."""
    return [
        pb_utils.InferenceResponse(
            [pb_utils.Tensor(n, o[rows]) for n, o in zip(names, outputs, strict=True)]
        )
        for rows in row_slices(counts)
    ]


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
