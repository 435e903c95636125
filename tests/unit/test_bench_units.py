"""The benchmark's configurations, bound, report and the Model-Analyzer-style hill climb,
on synthetic profiles and measurements (what a served measurement records:
integration/test_bench_served.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import spec_data, write_spec
from tritongen.bench.compare import (
    BenchReport,
    batch_only_plan,
    cpu_bound,
    naive_plan,
)
from tritongen.bench.hillclimb import MAX_INSTANCES, hill_climb, neighbours
from tritongen.bench.perf import PerfPoint, served_batches
from tritongen.errors import TritongenError
from tritongen.plan.plan import Plan
from tritongen.profile.profile import Profile, ProfileEntry
from tritongen.spec.devices import Device, Inventory
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

CPU4 = Inventory((Device("cpu", "cpu", "cpu", 16 * 2**30, cores=4),))


@pytest.fixture
def ensemble(tmp_path: Path, member_models: list[Path]) -> Ensemble:
    return load_ensemble(load_spec(write_spec(tmp_path, spec_data(member_models))))


def _profile(best: dict[str, int], costs: dict[str, float]) -> Profile:
    members = {
        name: {
            "cpu": {
                b: ProfileEntry(100.0 * (2.0 if b == best[name] else 1.0), 10**7)
                for b in (1, 2, 4, 8)
            }
        }
        for name in best
    }
    return Profile(members=members, extra={"cpu_cost_s_per_sample": costs})


def test_naive_plan_has_no_batcher_and_one_instance_each(ensemble: Ensemble) -> None:
    plan = naive_plan(ensemble, CPU4)
    assert not plan.dynamic_batching
    assert plan.allocation == {m.name: {"cpu": 1} for m in ensemble.members}
    assert set(plan.threads.values()) == {4}


def test_batch_only_plan_takes_each_members_best_batch(ensemble: Ensemble) -> None:
    profile = _profile({"linear": 8, "mlp": 2, "tanh": 4}, {})
    plan = batch_only_plan(ensemble, CPU4, profile)
    assert plan.batch_size == {"linear": 8, "mlp": 2, "tanh": 4}
    assert plan.dynamic_batching and plan.allocation["mlp"] == {"cpu": 1}


def test_cpu_bound_is_cores_over_summed_costs() -> None:
    profile = _profile({"a": 1}, {"a": 0.001, "b": 0.003})
    assert cpu_bound(profile, CPU4) == pytest.approx(4 / 0.004)


def test_cpu_bound_without_costs_is_a_clear_error() -> None:
    with pytest.raises(TritongenError, match="re-run `tritongen profile`"):
        cpu_bound(_profile({"a": 1}, {}), CPU4)


def test_report_takes_medians_over_rounds_and_ratios_against_the_bound() -> None:
    def point(c: int, t: float) -> PerfPoint:
        return PerfPoint(c, t, 1.0, 2.0, 3.0)

    plan = Plan(allocation={}, batch_size={})
    report = BenchReport(plans={"naive": plan, "batch_only": plan, "tritongen": plan}, bound=200.0)
    report.rounds = [
        {
            "naive": [point(1, 50), point(4, 60)],
            "batch_only": [point(1, 80), point(4, 90)],
            "tritongen": [point(1, 100), point(4, 150)],
        },
        {
            "naive": [point(1, 52), point(4, 64)],
            "batch_only": [point(1, 70), point(4, 110)],
            "tritongen": [point(1, 110), point(4, 170)],
        },
    ]
    document = report.to_json()
    assert document["configs"]["tritongen"]["concurrency"]["4"]["throughput"] == 160
    assert document["configs"]["naive"]["best_throughput"] == 62
    assert document["ratios"]["tritongen/batch_only"] == pytest.approx(160 / 100)
    assert document["ratios"]["tritongen/bound"] == pytest.approx(0.8)


def test_neighbours_stay_inside_the_search_box() -> None:
    point = ((1, 0), (MAX_INSTANCES, 3))
    found = set(neighbours(point, max_log_batch=3))
    assert found == {
        ((2, 0), (MAX_INSTANCES, 3)),
        ((1, 1), (MAX_INSTANCES, 3)),
        ((1, 0), (MAX_INSTANCES - 1, 3)),
        ((1, 0), (MAX_INSTANCES, 2)),
    }


def test_hill_climb_reaches_the_peak_and_counts_every_measurement(ensemble: Ensemble) -> None:
    peak = {"linear": (2, 4), "mlp": (2, 2), "tanh": (1, 4)}
    calls: list[Plan] = []

    def measure(plan: Plan) -> float:
        calls.append(plan)
        distance = sum(
            abs(plan.allocation[m]["cpu"] - i)
            + abs(plan.batch_size[m].bit_length() - b.bit_length())
            for m, (i, b) in peak.items()
        )
        return 1000.0 - distance

    result = hill_climb(ensemble, CPU4, measure)
    assert result.best_throughput == 1000.0
    assert {
        m: (result.best_plan.allocation[m]["cpu"], result.best_plan.batch_size[m]) for m in peak
    } == peak
    assert result.measurements == len(calls)  # each distinct configuration measured once
    assert len(calls) > 20  # the method's price: many served configurations


@pytest.mark.parametrize(
    ("load", "row", "expected"),
    [  # a run at a concurrency, and one at a request rate (no concurrency: 0)
        ("Concurrency", "2,1048.93,3,79,1,60,1507,244,1,1783,2316,2541,3454",
         PerfPoint(2, 1048.93, 1.783, 2.316, 3.454)),
        ("Request Rate", "117,116.812,11,321,86,31,375,158,2,979,1206,1265,1406",
         PerfPoint(0, 116.812, 0.979, 1.206, 1.406)),
    ],
)  # fmt: skip
def test_perf_analyzer_csv_is_parsed_in_milliseconds(
    load: str, row: str, expected: PerfPoint
) -> None:
    from tritongen.bench.perf import parse_report

    csv = (
        f"{load},Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
        "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
        f"p50 latency,p90 latency,p95 latency,p99 latency\n{row}\n"
    )
    assert parse_report(csv) == [expected]


def test_served_batches_are_samples_over_executions_between_two_snapshots() -> None:
    before = {("nv_inference_count", "a"): 10.0, ("nv_inference_exec_count", "a"): 10.0}
    after = {
        ("nv_inference_count", "a"): 70.0,
        ("nv_inference_exec_count", "a"): 25.0,
        ("nv_inference_count", "b"): 8.0,  # a model that appeared meanwhile
        ("nv_inference_exec_count", "b"): 8.0,
        ("nv_inference_count", "idle"): 3.0,  # no execution in the window: no batch
        ("nv_inference_exec_count", "idle"): 0.0,
    }
    assert served_batches(before, after) == {"a": 4.0, "b": 1.0}
