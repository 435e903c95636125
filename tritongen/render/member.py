"""The model of one member served alone: its config.pbtxt (Python backend or Triton's native
onnxruntime with its TensorRT parameters), its ONNX file, warm-up data and model.py."""

from __future__ import annotations

import numpy as np

from tritongen.render.context import RenderContext, RenderTarget
from tritongen.render.layout import InstanceGroup, instance_groups, served_max_batch
from tritongen.render.model_files import (
    WARMUP_DIR,
    copy_model,
    served_file_name,
    warmup_batches,
    write_warmup_data,
)
from tritongen.spec.ensemble import Accelerator, ExecutionSpec
from tritongen.spec.members import MemberModel

# Where TensorRT keeps built engines so that a restart skips the build; docker-compose.yml and
# the Kubernetes manifests mount a volume here.
TRT_CACHE_DIR = "/var/cache/trt-engines"


def write_member(ctx: RenderContext, member: MemberModel) -> None:
    plan, ensemble = ctx.plan, ctx.ensemble
    batch = plan.batch_size[member.name]
    groups = instance_groups(plan.allocation[member.name], ctx.inventory)
    config = ctx.render(
        "member.pbtxt.j2",
        ensemble_name=ensemble.spec.name,
        member=member,
        target=ctx.target.value,
        max_batch_size=served_max_batch(ensemble),
        warmup_batches=warmup_batches(member, batch) if ctx.warmup else [],
        instance_groups=groups,
        tensorrt=tensorrt_parameters(ensemble.spec.execution_of(member.name), groups, ctx.target),
        preferred_batch_sizes=[batch] if batch > 1 else [],
        queue_delay_us=plan.queue_delay_us.get(member.name, 0),
        dynamic_batching=plan.dynamic_batching,
        threads=plan.threads.get(member.name, 1),
        served_file=served_file_name(member),
    )
    version = ctx.model_dir(member.name, config)
    copy_model(member, version, torchscript=ctx.target is RenderTarget.embedded)
    if ctx.warmup:
        rng = np.random.default_rng(0)
        samples = [
            ensemble.member_fill(member, s.name).sample(rng, s.dtype, s.dims) for s in member.inputs
        ]
        write_warmup_data(samples, ctx.root / member.name / WARMUP_DIR)
    if ctx.target is RenderTarget.embedded:
        ctx.copy_templates(
            version,
            {
                "member_model.py": "model.py",
                "batching.py": "batching.py",
                "sessions.py": "sessions.py",
            },
        )


def tensorrt_parameters(
    execution: ExecutionSpec, groups: list[InstanceGroup], target: RenderTarget
) -> dict[str, str]:
    """The TensorRT accelerator's parameters for the native backend; empty when the member
    runs on the CUDA provider (the backend's default on KIND_GPU) or has no GPU instance."""
    on_gpu = any(g.kind == "KIND_GPU" for g in groups)
    if target is not RenderTarget.docker or not on_gpu or execution.accelerator is Accelerator.cuda:
        return {}
    return {
        "precision_mode": execution.precision.value.upper(),
        "max_workspace_size_bytes": str(execution.workspace_mb * 2**20),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": TRT_CACHE_DIR,
    }
