"""The `Plan` value of a search candidate: its allocation, batch sizes, threads, queue delays
and groups, with the serving model's prediction written beside them."""

from __future__ import annotations

from typing import Any

from tritongen.plan.conditions import plan_figures
from tritongen.plan.greedy import CostModelEvaluator
from tritongen.plan.plan import Group, Plan
from tritongen.plan.problem import Candidate, Problem
from tritongen.plan.serving_model import ServingModel, runs_members_in_parallel
from tritongen.plan.serving_units import combine_step_instances
from tritongen.profile.profile import default_cost


def plan_from_candidate(
    problem: Problem,
    candidate: Candidate,
    model: ServingModel | None = None,
    extra: dict[str, Any] | None = None,
) -> Plan:
    """The `Plan` of a candidate, with the serving model's prediction for it exactly as
    written (and the base model's LP figure beside it)."""
    model = model or ServingModel(problem, default_cost("not given"))
    prediction = model.predict(candidate)
    figures = plan_figures(problem, model.cost, candidate, model.dynamic_batching)
    return Plan(
        allocation=allocation(problem, candidate),
        batch_size=batch_sizes(problem, candidate),
        predicted_throughput=figures["predicted_throughput"],  # as deployed, whatever `model`
        threads=_threads(problem, candidate),
        queue_delay_us=_queue_delays(problem, candidate),
        groups=_groups(problem, candidate),
        combine_instances=combine_step_instances(
            prediction.throughput, model.cost, len(problem.members)
        ),
        extra={
            "model": "serving",
            "serving_cost": model.cost.to_json(),
            "base_lp_throughput": CostModelEvaluator(problem).evaluate(candidate),
            "bottleneck": problem.members[prediction.bottleneck],
            "predicted_batches": {
                problem.members[m]: round(b, 2) for m, b in sorted(prediction.batches.items())
            },
            **figures,
            **({"max_p99_ms": model.max_p99_ms} if model.max_p99_ms is not None else {}),
            **(extra or {}),
        },
    )


def _groups(problem: Problem, c: Candidate) -> dict[str, Group]:
    """One group per grouped device, named after it; its batcher forms the largest batch."""
    groups = {}
    for d, device in enumerate(problem.devices):
        members = problem.group_members(c, d)
        if members:
            groups[device.id] = Group(
                members=tuple(problem.members[m] for m in members),
                allocation={device.id: c.counts[members[0]][d]},
                batch_size=problem.group_batch_size(c, d),
                threads=1,
                queue_delay_us=0,
                parallel_members=runs_members_in_parallel(problem, c, d),
            )
    return groups


def allocation(problem: Problem, c: Candidate) -> dict[str, dict[str, int]]:
    return {
        member: {problem.devices[d].id: n for d, n in enumerate(c.counts[m]) if n}
        for m, member in enumerate(problem.members)
    }


def batch_sizes(problem: Problem, c: Candidate) -> dict[str, int]:
    return {member: problem.batch_sizes[c.batch[m]] for m, member in enumerate(problem.members)}


def _threads(problem: Problem, c: Candidate) -> dict[str, int]:
    """Threads per CPU instance: the search's choice, else one (independent one-thread
    instances keep every core busy, as the serving model assumes)."""
    return {
        member: max(1, c.threads[m])
        for m, member in enumerate(problem.members)
        if any(c.counts[m][d] for d, dev in enumerate(problem.devices) if dev.kind == "cpu")
    }


def _queue_delays(problem: Problem, c: Candidate) -> dict[str, int]:
    """No batcher waits for a fuller batch. A busy instance lets requests queue on their own
    while its call runs (one thread on a CPU; on a GPU its process takes each call's requests
    in and out between GPU calls, docs/SERVING.md), and the queue is its next batch; a delay
    would only hold a request that arrives alone."""
    return {member: 0 for member in problem.members}
