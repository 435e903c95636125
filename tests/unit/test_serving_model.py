"""The serving model as the search sees it: shapes, instances and what a plan predicts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest

from tests.synthetic import gpu
from tritongen.plan.plan import Plan
from tritongen.plan.problem import Shape, build_problem
from tritongen.plan.search import PlanEvaluator, make_plan
from tritongen.plan.serving_model import ServingModel, predict_plan
from tritongen.profile.profile import Profile, ProfileEntry, ServingCost
from tritongen.spec.devices import Device, Inventory

GIB = 2**30
CALL_S = 0.0005  # a served call's CPU cost beyond the member's compute


def cpu(cores: int = 4, gb: float = 8.0) -> Inventory:
    return Inventory((Device("cpu", "cpu", "cpu", int(gb * GIB), cores=cores),))


def cpu_entry(one_thread_s: float, batch: int, memory: float = 0.1) -> ProfileEntry:
    # All cores run 3x faster than one thread (sub-linear, as onnxruntime does on small models);
    # larger batches cost a little less per sample.
    cost = one_thread_s * (1 + 0.5 / batch)
    return ProfileEntry(3 / cost, int(memory * GIB), {"cpu_cost_s_per_sample": cost})


def cpu_profile(costs: dict[str, float], memory: float = 0.1, call_s: float = CALL_S) -> Profile:
    serving = ServingCost(call_s, 1e-5, 0.0003, "measured", wire_s=0.00005, client_s=0.0002)
    return Profile(
        members={
            name: {"cpu": {b: cpu_entry(cost, b, memory) for b in (1, 2, 4, 8, 16)}}
            for name, cost in costs.items()
        },
        extra={"serving_cost": serving.to_json()},
    )


COSTS = {"tiny": 0.0001, "small": 0.0005, "large": 0.002}


def test_cpu_members_are_served_in_one_model_when_calls_cost_cpu() -> None:
    plan = make_plan(list(COSTS), cpu(), cpu_profile(COSTS))

    (group,) = plan.groups.values()
    assert set(group.members) == set(COSTS)
    assert group.allocation == {"cpu": 4}  # one one-thread instance per core
    assert all(plan.allocation[m] == {"cpu": 4} for m in COSTS)  # readers of allocation
    assert all(plan.threads[m] == 1 for m in COSTS)


def test_the_grouped_plan_is_predicted_faster_than_the_best_separate_one() -> None:
    profile = cpu_profile(COSTS)
    grouped = make_plan(list(COSTS), cpu(), profile)
    separate = make_plan(list(COSTS), cpu(), profile, shape=Shape.separate)

    assert not separate.groups
    assert grouped.predicted_throughput > separate.predicted_throughput


def test_a_group_that_does_not_fit_in_memory_leaves_the_members_separate() -> None:
    # Each member instance takes 1 GiB: four instances of all three (12 GiB) do not fit 5 GiB.
    plan = make_plan(list(COSTS), cpu(gb=5.0), cpu_profile(COSTS, memory=1.0))

    assert not plan.groups
    used = sum(n for per_device in plan.allocation.values() for n in per_device.values())
    assert used <= 5


def test_separate_members_get_one_thread_instances_in_proportion_to_their_cost() -> None:
    plan = make_plan(list(COSTS), cpu(cores=8), cpu_profile(COSTS), shape=Shape.separate)

    instances = {m: plan.allocation[m]["cpu"] for m in COSTS}
    assert instances["large"] > instances["small"] >= instances["tiny"] >= 1
    assert all(plan.threads[m] == 1 for m in COSTS)


def test_a_fast_members_batcher_forms_smaller_batches_than_the_bottlenecks() -> None:
    plan = make_plan(list(COSTS), cpu(), cpu_profile(COSTS), shape=Shape.separate)

    reached = plan.extra["predicted_batches"]
    # Requests queue at the member whose instances have the most to do: full batches there.
    assert reached["large"] == plan.batch_size["large"]
    assert reached["tiny"] < plan.batch_size["tiny"] or plan.batch_size["tiny"] == 1


def gpu_profile(two_instances: float) -> Profile:
    """One member on a GPU whose two instances together run `two_instances` x one's."""
    entries = {
        b: ProfileEntry(
            100.0 * b,
            int(1 * GIB),
            {"concurrency": {"1": 100.0 * b, "2": two_instances * 100.0 * b}},
        )
        for b in (1, 8)
    }
    return Profile({"net": {"V100-16GB": entries}})


@pytest.mark.parametrize(("scaling", "instances"), [(1.6, 2), (1.0, 1)])
def test_gpu_instances_follow_the_profiled_concurrency(scaling: float, instances: int) -> None:
    plan = make_plan(["net"], Inventory((gpu(0),)), gpu_profile(scaling))

    assert plan.allocation["net"] == {"gpu0": instances}
    assert plan.predicted_throughput == pytest.approx(800.0 * max(1.0, scaling), rel=1e-6)


def test_plan_measure_writes_the_plan_it_measured() -> None:
    measured: list[Plan] = []

    def measure(plan: Plan) -> float:
        measured.append(plan)
        return float(len(measured))  # the last one measured wins

    profile = cpu_profile(COSTS)
    written = make_plan(
        list(COSTS),
        cpu(),
        profile,
        refine_with=lambda problem: PlanEvaluator(problem, measure, profile.serving_cost),
    )

    last = measured[-1]
    for field in ("allocation", "batch_size", "threads", "queue_delay_us", "groups"):
        assert getattr(written, field) == getattr(last, field), field
    assert written.extra["refined_throughput"] == len(measured)


def test_without_cpu_or_concurrency_entries_the_model_is_the_base_lp() -> None:
    profile = gpu_profile(1.0)
    plain = Profile(
        {
            "net": {
                c: {b: ProfileEntry(e.throughput, e.memory_bytes) for b, e in by.items()}
                for c, by in profile.members["net"].items()
            }
        }
    )
    problem = build_problem(["net"], Inventory((gpu(0), gpu(1))), plain)

    assert ServingModel(problem, ServingCost(0.001, 0, 0, "measured")).placement_only


def separate_plan(batch: int, *, batching: bool = True, members: Iterable[str] = COSTS) -> Plan:
    return Plan(
        allocation={m: {"cpu": 1} for m in members},
        batch_size={m: batch for m in members},
        threads={m: 1 for m in members},
        queue_delay_us={m: 0 for m in members},
        dynamic_batching=batching,
    )


def test_batch_size_1_lets_the_batcher_fill_up_and_no_batcher_runs_requests_alone() -> None:
    # Triton's batcher without a preferred size forms the largest batch queued; the rendered
    # config gives none for a batch size of 1. On 4 cores the one-thread "large" member cannot
    # keep up: requests queue there.
    profile = cpu_profile(COSTS)
    filled = predict_plan(separate_plan(1), cpu(), profile).batches
    alone = predict_plan(separate_plan(1, batching=False), cpu(), profile).batches

    assert filled[2] == 16.0  # "large", up to the served maximum (the largest profiled batch)
    assert set(alone.values()) == {1.0}


def test_runnable_server_threads_slow_calls_and_grow_the_batches_they_form() -> None:
    """Where tritonserver's threads keep the cores busy (members that compute little, as in
    the digits example), a member's call takes longer, so more requests arrive during it:
    bigger batches, less CPU per sample, more throughput."""
    fast = {"a": 0.00002, "b": 0.00005, "c": 0.0001}
    calm = cpu_profile(fast)
    crowded = cpu_profile(fast)
    crowded.extra["serving_cost"]["runnable_per_core"] = 5.0
    plan = separate_plan(16, members=fast)

    quiet = predict_plan(plan, cpu(cores=2), calm)
    busy = predict_plan(plan, cpu(cores=2), crowded)

    assert all(busy.batches[m] > quiet.batches[m] for m in range(len(fast)))
    assert busy.throughput > quiet.throughput


def test_tritonservers_cost_per_call_lowers_an_unbatched_plan_most() -> None:
    fast = {"a": 0.00002, "b": 0.00005, "c": 0.0001}  # the server's CPU binds, not a member

    def throughputs(server_call_s: float) -> tuple[float, float]:
        profile = cpu_profile(fast)
        profile.extra["serving_cost"]["server_call_s"] = server_call_s
        batched = separate_plan(16, members=fast)
        unbatched = separate_plan(1, batching=False, members=fast)
        return (
            predict_plan(batched, cpu(cores=2), profile).throughput,
            predict_plan(unbatched, cpu(cores=2), profile).throughput,
        )

    (batched, unbatched), (batched_dear, unbatched_dear) = throughputs(0.0), throughputs(0.0005)
    assert unbatched_dear < unbatched and batched_dear <= batched
    assert unbatched_dear / unbatched < batched_dear / batched


def threaded(plan: Plan, threads: int) -> Plan:
    return Plan(
        allocation=plan.allocation,
        batch_size=plan.batch_size,
        threads={m: threads for m in plan.threads},
        queue_delay_us=plan.queue_delay_us,
        dynamic_batching=plan.dynamic_batching,
    )


def test_threads_that_want_more_cores_than_exist_spin_and_slow_the_plan() -> None:
    """onnxruntime's spare intra-op threads spin between calls: three two-thread instances on
    four cores do one thread's work each while their spinners take a share of the cores, so
    two threads are slower than one, alone and under load. One such instance alone on the
    CPU has the cores to itself and runs faster with two."""
    profile = cpu_profile(COSTS)
    crowded = separate_plan(1, batching=False)
    one, two = (predict_plan(threaded(crowded, t), cpu(), profile) for t in (1, 2))
    assert two.throughput < one.throughput
    assert two.latency_ms > one.latency_ms

    alone = separate_plan(1, batching=False, members=["large"])
    one, two = (predict_plan(threaded(alone, t), cpu(), profile) for t in (1, 2))
    assert two.throughput > one.throughput
    assert two.latency_ms < one.latency_ms


def test_fewer_requests_in_flight_form_smaller_batches_and_serve_less() -> None:
    # As in the batch-size-1 test, requests queue at "large" when enough are in flight; with
    # at most 8 (a benchmark's highest concurrency), about half of them wait in its batcher.
    profile = cpu_profile(COSTS)
    unbounded = predict_plan(separate_plan(1), cpu(), profile)
    held = predict_plan(separate_plan(1), cpu(), profile, max_in_flight=8)

    assert unbounded.batches[2] == 16.0
    assert held.batches[2] <= 4.0
    assert held.throughput < unbounded.throughput
    assert held.concurrency <= 8 < unbounded.concurrency


def test_a_group_of_heavy_members_runs_them_in_parallel_and_a_lone_request_waits_less() -> None:
    # At batch 1 the members cost 6, 3 and 1.5 ms: in parallel on 4 cores a lone request
    # waits for the slowest (and the hand-offs) instead of all three, so it gains something,
    # and at most the 4.5 ms of the two others; under load the cores are busy either way.
    costs = {"big": 0.004, "mid": 0.002, "small": 0.001}
    profile = cpu_profile(costs)
    plan = make_plan(list(costs), cpu(), profile, parallel_members=True)
    (group,) = plan.groups.values()
    serial = replace(plan, groups={"cpu": replace(group, parallel_members=False)})

    assert group.parallel_members
    alone, one_by_one = (predict_plan(p, cpu(), profile) for p in (plan, serial))
    assert 0 < one_by_one.latency_ms - alone.latency_ms <= 4.5 + 1e-9
    assert alone.latency_ms >= 6.0
    assert alone.throughput <= one_by_one.throughput


@pytest.mark.parametrize(
    "costs",
    [
        {"a": 0.0001, "b": 0.0001, "c": 0.00005},  # 0.375 ms in all: less than the hand-offs
        {"a": 0.001, "b": 0.0005, "c": 0.0004},  # saves 1.35 ms of 2.85, less 1: under a fifth
    ],
)
def test_a_group_whose_lone_request_would_gain_little_runs_members_one_after_another(
    costs: dict[str, float],
) -> None:
    plan = make_plan(list(costs), cpu(), cpu_profile(costs), parallel_members=True)
    (group,) = plan.groups.values()

    assert not group.parallel_members


def test_a_lone_request_waits_for_the_measured_trip_and_its_slowest_member() -> None:
    # Two members on two cores, 1 ms and 4 ms a sample alone, served separately, one thread
    # each: alone, a request takes the trip the serving cost measured (3 ms, the hops between
    # processes) and the slower member, whatever CPU seconds the trip's hops charge.
    costs = {"a": 0.001, "b": 0.004}
    profile = cpu_profile(costs)
    profile.extra["serving_cost"]["path_s"] = 0.003
    plan = Plan(
        {m: {"cpu": 1} for m in costs}, {m: 1 for m in costs}, threads={m: 1 for m in costs}
    )
    alone = predict_plan(plan, cpu(cores=2), profile).latency_ms
    cpu_only = profile.extra["serving_cost"] | {"path_s": 0.0}
    charged = predict_plan(plan, cpu(cores=2), Profile(profile.members, {"serving_cost": cpu_only}))

    slowest_ms = 1000 * 0.004 * (1 + 0.5 / 1)  # cpu_entry's cost at batch 1
    one_more_request_ms = 0.0  # the cost carries no request_s
    assert alone == pytest.approx(3.0 + slowest_ms + one_more_request_ms, rel=0.05)
    assert charged.latency_ms < alone


def test_a_lone_request_waits_for_each_members_lone_call_where_the_profile_measured_it() -> None:
    # The two members on one core: a lone request waits for the trip and both members' calls.
    # Where the profile measured their batch-1 calls as a lone request makes them (2 ms and
    # 7 ms, slower than their 1.5 ms and 6 ms of CPU in a hot loop), it waits for those.
    costs = {"a": 0.001, "b": 0.004}
    profile = cpu_profile(costs)
    profile.extra["serving_cost"]["path_s"] = 0.003
    plan = Plan({m: {"cpu": 1} for m in costs}, {m: 1 for m in costs}, threads={"a": 1, "b": 1})
    hot = predict_plan(plan, cpu(cores=1), profile).latency_ms
    for name, lone_s in {"a": 0.002, "b": 0.007}.items():
        profile.members[name]["cpu"][1].extra["lone_latency_s_by_threads"] = {"1": lone_s}
    cold = predict_plan(plan, cpu(cores=1), profile).latency_ms

    assert hot == pytest.approx(3.0 + 1.5 + 6.0, rel=0.05)
    assert cold == pytest.approx(3.0 + 2.0 + 7.0, rel=0.05)


def test_the_p99_tail_weighs_the_stand_ins_against_the_calls_by_their_cpu() -> None:
    # The stand-in computes nothing, so its measured p99/mean (1.8) is the server's path's;
    # waiting IN_FLIGHT calls, half a call more for a request that misses its batch, is 1.25.
    # Members of 10-20 ms leave the path a sliver of the CPU; of 10-20 us, most of it.
    tails = {}
    for name, costs in {"heavy": {"a": 0.01, "b": 0.02}, "light": {"a": 1e-5, "b": 2e-5}}.items():
        profile = cpu_profile(costs)
        profile.extra["serving_cost"]["tail"] = 1.8
        plan = make_plan(list(costs), cpu(cores=2), profile)
        prediction = predict_plan(plan, cpu(cores=2), profile)
        mean_ms = 1000 * prediction.concurrency / prediction.throughput
        assert prediction.p99_ms == pytest.approx(
            max(prediction.latency_ms, prediction.tail * mean_ms)
        )
        tails[name] = prediction.tail

    assert tails["heavy"] == pytest.approx(1.25, abs=0.02)
    assert 1.25 + 0.1 < tails["light"] < 1.8


def test_a_lone_request_through_a_group_waits_for_its_members_timed_one_after_another() -> None:
    # Grouped on one core, one thread: the profile timed each member's batch-1 call after the
    # other's (3 ms and 9 ms); a lone request waits for the trip and both of those.
    costs = {"a": 0.001, "b": 0.004}
    profile = cpu_profile(costs)
    profile.extra["serving_cost"]["path_s"] = 0.003
    for name, lone_s in {"a": 0.003, "b": 0.009}.items():
        profile.members[name]["cpu"][1].extra["lone_latency_s_in_group"] = lone_s
    separate = Plan({m: {"cpu": 1} for m in costs}, {m: 1 for m in costs}, threads={"a": 1, "b": 1})
    grouped = make_plan(list(costs), cpu(cores=1), profile, shape=Shape.grouped)

    assert len(grouped.groups) == 1
    assert predict_plan(grouped, cpu(cores=1), profile).latency_ms == pytest.approx(
        3.0 + 3.0 + 9.0, rel=0.05
    )
    assert predict_plan(separate, cpu(cores=1), profile).latency_ms == pytest.approx(
        3.0 + 1.5 + 6.0, rel=0.05
    )


def test_a_groups_members_are_charged_the_cpu_their_rotation_measured() -> None:
    # Heavy members (members' work dwarfs the calls), one thread each, grouped on two cores.
    # The profile's rotation at batch 16 found each member 25% dearer run after the other
    # than in its own hot loop: the group's throughput falls by about that; the same members
    # served apart keep their hot-loop cost.
    costs = {"a": 0.004, "b": 0.008}
    profile = cpu_profile(costs)
    inventory = cpu(cores=2)
    grouped = make_plan(list(costs), inventory, profile, shape=Shape.grouped)
    apart = Plan(
        {m: {"cpu": 1} for m in costs}, {m: 16 for m in costs}, threads={m: 1 for m in costs}
    )
    before = (predict_plan(grouped, inventory, profile), predict_plan(apart, inventory, profile))
    for entries in profile.members.values():
        hot = entries["cpu"][16].extra["cpu_cost_s_per_sample"]
        entries["cpu"][16].extra["cpu_cost_s_per_sample_in_group"] = 1.25 * hot
    after = (predict_plan(grouped, inventory, profile), predict_plan(apart, inventory, profile))

    assert len(grouped.groups) == 1
    assert after[0].throughput == pytest.approx(before[0].throughput / 1.25, rel=0.05)
    assert after[1].throughput == pytest.approx(before[1].throughput)


def test_a_rotation_on_every_core_is_compared_with_hot_loops_on_every_core() -> None:
    # Two one-thread instances of each member together run at 0.8 of one alone (the instance
    # curve at batch 16); the rotation, two processes at once as a group's two instances,
    # cost 1.25x those hot loops together. The group is charged 1.25x, not 1.25 / 0.8.
    costs = {"a": 0.004, "b": 0.008}
    profile = cpu_profile(costs)
    inventory = cpu(cores=2)
    grouped = make_plan(list(costs), inventory, profile, shape=Shape.grouped)
    for entries in profile.members.values():
        hot = entries["cpu"][16].extra["cpu_cost_s_per_sample"]
        entries["cpu"][16].extra["concurrency"] = {"1": 1 / hot, "2": 1.6 / hot}
    together = predict_plan(grouped, inventory, profile)
    for entries in profile.members.values():
        hot = entries["cpu"][16].extra["cpu_cost_s_per_sample"]
        entries["cpu"][16].extra["cpu_cost_s_per_sample_in_group"] = 1.25 * hot / 0.8
    rotated = predict_plan(grouped, inventory, profile)

    assert rotated.throughput == pytest.approx(together.throughput / 1.25, rel=0.05)


def test_a_rotation_measured_cheaper_than_the_hot_loops_charges_the_hot_loops() -> None:
    # The rotation came out 6% cheaper than each member's own hot loop: the two timings'
    # noise (a hot loop keeps the member's weights in the caches; a rotation cannot beat it).
    # The group is charged its hot loops, as with no rotation measured.
    costs = {"a": 0.004, "b": 0.008}
    profile = cpu_profile(costs)
    inventory = cpu(cores=2)
    grouped = make_plan(list(costs), inventory, profile, shape=Shape.grouped)
    unmeasured = predict_plan(grouped, inventory, profile)
    for entries in profile.members.values():
        hot = entries["cpu"][16].extra["cpu_cost_s_per_sample"]
        entries["cpu"][16].extra["cpu_cost_s_per_sample_in_group"] = 0.94 * hot
    cheaper = predict_plan(grouped, inventory, profile)

    assert cheaper.throughput == pytest.approx(unmeasured.throughput)


def _with_waiting(profile: Profile, call_s: float, after_s: float) -> Profile:
    serving = dict(profile.extra["serving_cost"], wait_call_s=call_s, wait_after_s=after_s)
    return replace(profile, extra={**profile.extra, "serving_cost": serving})


def test_a_long_call_costs_the_processes_waiting_on_it_what_the_serving_cost_measured() -> None:
    # Heavy members in one group on two cores: its calls of 16 samples last far longer than
    # the 5 ms the waiting was measured on, so each call costs 2 ms more of the cores
    # (and the batches the cores' busier server lets form).
    costs = {"a": 0.004, "b": 0.008}
    profile, inventory = cpu_profile(costs), cpu(cores=2)
    plan = make_plan(list(costs), inventory, profile, shape=Shape.grouped)
    instant = predict_plan(plan, inventory, profile)
    waiting = predict_plan(plan, inventory, _with_waiting(profile, 0.002, 0.005))

    # once per call, not per sample: between a sixteenth of it and all of it per sample
    extra = 2 / waiting.throughput - 2 / instant.throughput
    assert 0.002 / 16 <= extra < 0.002


def test_a_call_shorter_than_the_waiting_measured_is_charged_its_share_of_it() -> None:
    # Light members: a call lasts well under 50 ms, so measured on calls twice as long the
    # same waiting costs each call half as much.
    costs = {"a": 0.0001, "b": 0.0002}
    profile, inventory = cpu_profile(costs), cpu(cores=2)
    plan = make_plan(list(costs), inventory, profile, shape=Shape.grouped)
    instant = 2 / predict_plan(plan, inventory, profile).throughput
    extra = [
        2 / predict_plan(plan, inventory, _with_waiting(profile, 0.002, after)).throughput - instant
        for after in (0.05, 0.1)
    ]

    assert extra[0] > 0
    assert extra[1] == pytest.approx(extra[0] / 2, rel=0.05)


def test_separate_members_lone_calls_share_the_cores_as_their_batch_1_curves_say() -> None:
    # Two members apart on two cores, each a 10 ms lone call; at batch 1 two instances
    # together serve what one does alone (each streams its weights and the two share the
    # memory's bandwidth): a lone request's two calls, at once, take twice as long.
    costs = {"a": 0.01, "b": 0.01}
    profile = cpu_profile(costs)
    profile.extra["serving_cost"]["path_s"] = 0.001
    for entries in profile.members.values():
        entries["cpu"][1].extra["lone_latency_s_by_threads"] = {"1": 0.01}
    apart = Plan({m: {"cpu": 1} for m in costs}, {m: 1 for m in costs}, threads={"a": 1, "b": 1})
    alone = predict_plan(apart, cpu(cores=2), profile).latency_ms
    for entries in profile.members.values():
        one = entries["cpu"][1].extra["cpu_cost_s_per_sample"]
        entries["cpu"][1].extra["concurrency"] = {"1": 1 / one, "2": 1 / one}
    shared = predict_plan(apart, cpu(cores=2), profile).latency_ms

    assert alone == pytest.approx(1.0 + 10.0, rel=0.05)
    assert shared == pytest.approx(1.0 + 20.0, rel=0.05)


def test_the_members_refill_beside_the_path_lowers_a_path_bound_plan_most() -> None:
    heavy = {"a": 0.002, "b": 0.004}

    def ratio(members: dict[str, float]) -> float:
        profile = cpu_profile(members)
        plain = make_plan(list(members), cpu(cores=2), profile).predicted_throughput
        profile.extra["serving_cost"]["refill"] = 0.5
        refilled = make_plan(list(members), cpu(cores=2), profile).predicted_throughput
        return refilled / plain

    fast = {"a": 0.00002, "b": 0.00005, "c": 0.0001}  # the path's CPU takes most of the cores
    assert ratio(fast) < ratio(heavy) < 1.0
