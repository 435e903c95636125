"""plan.json names the conditions of its figures and carries one for each: clients elsewhere
and a client on this host, at saturation and at each concurrency up to it."""

from __future__ import annotations

import pytest

from tests.unit.test_serving_model import cpu, cpu_profile
from tritongen.bench.compare import BenchReport
from tritongen.bench.perf import PerfPoint
from tritongen.plan.conditions import predicted_at
from tritongen.plan.plan import Plan
from tritongen.plan.search import make_plan

COSTS = {"big": 0.004, "mid": 0.002, "small": 0.001}


def test_plan_json_carries_both_figures_with_their_p99_and_concurrency() -> None:
    plan = Plan.from_json(make_plan(list(COSTS), cpu(), cpu_profile(COSTS)).to_json())
    extra = plan.extra

    for suffix in ("", "_local_client"):
        assert extra[f"predicted_p99_ms{suffix}"] >= extra[f"predicted_latency_ms{suffix}"]
        assert extra[f"predicted_concurrency{suffix}"] >= 1
    # perf_analyzer's CPU on the same cores leaves less for the members
    assert extra["predicted_throughput_local_client"] < plan.predicted_throughput
    assert set(extra["prediction_conditions"]) >= {
        "predicted_throughput",
        "predicted_throughput_local_client",
    }


def test_the_levels_run_from_one_request_to_the_saturating_concurrency() -> None:
    plan = make_plan(list(COSTS), cpu(), cpu_profile(COSTS))
    levels = plan.extra["predicted_levels_local_client"]
    concurrency = plan.extra["predicted_concurrency_local_client"]
    ks = sorted(int(k) for k in levels)
    throughputs = [levels[str(k)]["throughput"] for k in ks]

    assert ks[0] == 1 and ks[-1] == concurrency
    # one request at a time: one request per lone request's latency
    alone_ms = plan.extra["predicted_latency_ms_local_client"]
    assert levels["1"]["p50_ms"] == pytest.approx(alone_ms, rel=1e-3)
    assert levels["1"]["throughput"] == pytest.approx(1000 / alone_ms, rel=1e-3)
    assert throughputs == sorted(throughputs)
    assert throughputs[-1] <= plan.extra["predicted_throughput_local_client"] * (1 + 1e-9)


def test_a_level_between_two_predicted_ones_reads_between_them() -> None:
    plan = make_plan(list(COSTS), cpu(), cpu_profile(COSTS))
    levels = plan.extra["predicted_levels_local_client"]
    ks = sorted(int(k) for k in levels)
    low, high = ks[1], ks[2]

    between = predicted_at(plan, (low + high) // 2 + 1 if high - low > 1 else high)
    assert between is not None
    assert levels[str(low)]["throughput"] <= between[0] <= levels[str(high)]["throughput"]
    beyond = predicted_at(plan, 10 * ks[-1])
    assert beyond is not None and beyond[0] == levels[str(ks[-1])]["throughput"]
    assert beyond[1] == pytest.approx(1000 * 10 * ks[-1] / beyond[0])  # Little's law
    assert predicted_at(Plan({"m": {"cpu": 1}}, {"m": 1}), 4) is None


def test_parallel_members_are_chosen_only_when_asked_for() -> None:
    # In parallel, a lone request would wait ~6 ms instead of 10.5: worth it for latency, but
    # its throughput cost under load is not modelled, so the planner does not choose it alone.
    profile = cpu_profile(COSTS)
    (default,) = make_plan(list(COSTS), cpu(), profile).groups.values()
    (asked,) = make_plan(list(COSTS), cpu(), profile, parallel_members=True).groups.values()

    assert not default.parallel_members
    assert asked.parallel_members


def test_a_benchmark_compares_with_the_figures_its_plan_json_carries() -> None:
    # The figures are read from the plan served, not predicted again: a plan.json whose
    # local-client levels say 100/s and 200/s is compared with exactly those.
    plan = make_plan(list(COSTS), cpu(), cpu_profile(COSTS))
    levels = {
        "1": {"throughput": 100.0, "p50_ms": 10.0},
        "4": {"throughput": 200.0, "p50_ms": 20.0},
    }
    written = Plan.from_json(plan.to_json() | {"predicted_levels_local_client": levels})
    served = [PerfPoint(1, 90.0, 11.0, 12.0, 13.0), PerfPoint(4, 210.0, 19.0, 25.0, 30.0)]
    report = BenchReport(plans={"tritongen": written}, rounds=[{"tritongen": served}], bound=1e4)
    document = report.to_json()["configs"]["tritongen"]

    assert document["concurrency"]["1"]["predicted_throughput"] == 100.0
    assert document["concurrency"]["4"]["predicted_p50_ms"] == 20.0
    assert document["predicted_throughput"] == 200.0  # at the level it served best
    assert document["measured/predicted"] == pytest.approx(210.0 / 200.0)


def test_a_plan_for_a_client_on_this_host_keeps_its_budget_there_and_ships_both_figures() -> None:
    # A benchmark checks a budget with perf_analyzer on the same cores: planned for that, the
    # budget binds the local figure; plan.json's predicted_throughput stays the deployed one.
    profile = cpu_profile(COSTS)
    fastest = make_plan(list(COSTS), cpu(cores=2), profile, client_on_host=True)
    budget = fastest.extra["predicted_p99_ms_local_client"] / 3
    within = make_plan(list(COSTS), cpu(cores=2), profile, max_p99_ms=budget, client_on_host=True)

    assert within.extra["predicted_p99_ms_local_client"] <= budget
    for plan in (fastest, within):
        assert plan.predicted_throughput == plan.extra["predicted_throughput"]
        assert plan.extra["predicted_throughput_local_client"] < plan.predicted_throughput
