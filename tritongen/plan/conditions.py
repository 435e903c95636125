"""The figures plan.json ships, each for the conditions it names: clients on other hosts (as
deployed) and a load generator on this host (as every check here), at the concurrency that
saturates the plan and at each concurrency from one request in flight up to it
(docs/FORMATS.md, docs/SERVING.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tritongen.plan.plan import Plan
from tritongen.plan.problem import Candidate, Problem, build_problem
from tritongen.plan.serving_model import ServingModel, plan_candidate
from tritongen.profile.profile import Profile, ServingCost
from tritongen.spec.devices import Inventory

LOCAL = "_local_client"  # the suffix of the figures for a client on the same host
CONDITIONS = {
    "predicted_throughput": "clients on other hosts (as deployed), at least "
    "predicted_concurrency requests in flight",
    "predicted_throughput_local_client": "a load generator on this host (its CPU per request "
    "is the serving cost's client_s), at least predicted_concurrency_local_client requests "
    "in flight",
    "predicted_levels": "throughput and p50 latency at k requests in flight, k = 1, 2, 4, ... "
    "up to the predicted concurrency",
}


def plan_figures(
    problem: Problem, cost: ServingCost, candidate: Candidate, dynamic_batching: bool = True
) -> dict[str, Any]:
    """plan.json's predictions for `candidate`, for both conditions."""
    figures: dict[str, Any] = {"prediction_conditions": CONDITIONS}
    for local in (False, True):
        suffix = LOCAL if local else ""
        model = ServingModel(problem, cost, client_on_host=local, dynamic_batching=dynamic_batching)
        saturated = model.predict(candidate)
        figures |= {
            f"predicted_throughput{suffix}": saturated.throughput,
            f"predicted_latency_ms{suffix}": round(saturated.latency_ms, 3),
            f"predicted_concurrency{suffix}": saturated.concurrency,
            f"predicted_p99_ms{suffix}": round(saturated.p99_ms, 3),
            f"predicted_levels{suffix}": _levels(model, candidate),
        }
    return figures


def _levels(model: ServingModel, candidate: Candidate) -> dict[str, dict[str, float]]:
    """At k requests in flight the plan serves at most what its batches hold with k in flight
    (the model held to k) and at most k requests per lone request's latency (a closed loop of
    k clients: Little's law, the asymptotic bound); the p50 is the mean latency that gives."""
    saturated = model.predict(candidate)
    alone_s = saturated.latency_ms / 1000
    levels = {}
    for k in levels_up_to(saturated.concurrency):
        held = ServingModel(
            model.problem,
            model.cost,
            client_on_host=model.client_on_host,
            dynamic_batching=model.dynamic_batching,
            max_in_flight=k,
        ).predict(candidate)
        throughput = min(held.throughput, saturated.throughput, k / alone_s)
        p50_ms = max(saturated.latency_ms, 1000 * k / throughput) if throughput > 0 else 0.0
        levels[str(k)] = {"throughput": round(throughput, 3), "p50_ms": round(p50_ms, 3)}
    return levels


def levels_up_to(concurrency: int) -> list[int]:
    """1, 2, 4, ... below `concurrency`, then `concurrency` itself."""
    levels, k = [], 1
    while k < concurrency:
        levels.append(k)
        k *= 2
    return [*levels, max(1, concurrency)]


def with_figures(plan: Plan, inventory: Inventory, profile: Profile) -> Plan:
    """`plan` carrying plan.json's predictions (a baseline made here, or an older plan.json
    that carries none)."""
    problem = build_problem(list(plan.allocation), inventory, profile)
    figures = plan_figures(
        problem, profile.serving_cost, plan_candidate(problem, plan), plan.dynamic_batching
    )
    return replace(
        plan, predicted_throughput=figures["predicted_throughput"], extra=plan.extra | figures
    )


def has_figures(plan: Plan) -> bool:
    return f"predicted_levels{LOCAL}" in plan.extra


def predicted_at(plan: Plan, level: int, local: bool = True) -> tuple[float, float] | None:
    """(samples/s, p50 ms) plan.json predicts at `level` requests in flight: its figure at that
    level, between the two levels around it (linear), or beyond them the saturated throughput
    and the latency Little's law gives it. None when plan.json carries no such figures."""
    levels = plan.extra.get(f"predicted_levels{LOCAL if local else ''}")
    if not isinstance(levels, dict) or not levels:
        return None
    known = sorted(
        (int(k), (float(v["throughput"]), float(v["p50_ms"]))) for k, v in levels.items()
    )
    below = max((kv for kv in known if kv[0] <= level), default=known[0])
    above = min((kv for kv in known if kv[0] >= level), default=known[-1])
    if level > known[-1][0]:  # saturated: more in flight only wait longer (Little's law)
        x, p50 = known[-1][1]
        return x, max(p50, 1000 * level / x) if x > 0 else p50
    if above[0] == below[0]:
        return below[1]
    share = (level - below[0]) / (above[0] - below[0])
    x = below[1][0] + share * (above[1][0] - below[1][0])
    p50 = below[1][1] + share * (above[1][1] - below[1][1])
    return x, p50
