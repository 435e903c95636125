"""How a tritongen Python-backend model opens one member: an ONNX file with onnxruntime, or a
TorchScript file with torch (the member's `runtime`), with the intra-op threads its
config.pbtxt asks for and, on a KIND_GPU instance, the GPU Triton gave it
(`model_instance_kind` and `model_instance_device_id`).

Both sessions answer `run(output_names, feed)` with a list of numpy arrays, as onnxruntime
does. Copied next to every model.py that runs members, and imported by tritongen's profiler
too, so that a member is timed exactly as it is served; imports onnxruntime or torch, and only
the one the member needs.
"""

import contextlib
import warnings

TORCH = "torch"


def open_session(path, args, params, member=None):
    """The session of one member. `member` (a dict, optional) carries what the torch runtime
    needs: `runtime`, `inputs` (names in the order forward() takes them) and `output_index`."""
    member = member or {}
    threads = int(params.get("intra_op_threads", "1"))
    gpu = _gpu_of(args)
    if member.get("runtime") == TORCH:
        device = "cpu" if gpu is None else f"cuda:{gpu}"
        return TorchSession(path, device, threads, member["inputs"], member.get("output_index", 0))
    return open_onnx_session(path, threads, gpu)


def open_onnx_session(path, threads, gpu=None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if gpu is not None:
        providers = [("CUDAExecutionProvider", {"device_id": gpu}), "CPUExecutionProvider"]
    return ort.InferenceSession(path, options, providers=providers)


def _gpu_of(args):
    if args.get("model_instance_kind") == "GPU":
        return int(args["model_instance_device_id"])
    return None


class TorchSession:
    """A TorchScript module behind onnxruntime's `run`: the feed's arrays go to the device once
    per call, in forward()'s order; the one output the member serves comes back as numpy."""

    def __init__(self, path, device, threads, input_names, output_index=0):
        import torch

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # allowed once, before any parallel work
            torch.set_num_interop_threads(1)
        # Triton hands read-only arrays; torch copies nothing, it only warns that it could.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        # The member's float32, as its reference computes it: TF32 convolutions (torch's
        # default on recent GPUs) move a softmax by more than a tolerance would forgive.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        self._torch = torch
        self.device = torch.device(device)
        self._module = torch.jit.load(path, map_location=self.device).eval()
        self._input_names = list(input_names)
        self._output_index = int(output_index)

    def run(self, output_names, feed):
        torch = self._torch
        with torch.inference_mode():
            result = self._module(*(self._tensor(feed[n]) for n in self._input_names))
            if isinstance(result, (tuple, list)):
                result = result[self._output_index]
            return [result.cpu().numpy()]

    def _tensor(self, value):
        """A numpy array, or a tensor Triton already holds on a GPU (DLPack), on our device."""
        torch = self._torch
        if isinstance(value, torch.Tensor):
            return value.to(self.device, non_blocking=True)
        return torch.from_numpy(value).to(self.device, non_blocking=True)
