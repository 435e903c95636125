"""How a tritongen Python-backend model opens an ONNX file with onnxruntime: the intra-op
threads its config.pbtxt asks for, one inter-op thread, and the CUDA provider on the GPU
its instance was given (Triton's `model_instance_kind` and `model_instance_device_id`).

Copied next to every model.py that runs members; imports only onnxruntime.
"""

import onnxruntime as ort


def open_session(path, args, params):
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if args.get("model_instance_kind") == "GPU":
        device = {"device_id": int(args["model_instance_device_id"])}
        providers = [("CUDAExecutionProvider", device), "CPUExecutionProvider"]
    return ort.InferenceSession(path, options, providers=providers)
