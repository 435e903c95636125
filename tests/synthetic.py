"""Synthetic inventories and profiles for planner tests and benchmarks (no hardware)."""

from __future__ import annotations

import itertools

import numpy as np

from tritongen.plan.base_model import solve_time_sharing
from tritongen.plan.problem import Problem
from tritongen.profile.profile import Profile, ProfileEntry
from tritongen.spec.devices import Device, Inventory

GB = 10**9
GIB = 2**30
BATCHES = (1, 2, 4, 8, 16, 32, 64)

# Twelve heavy ImageNet CNNs on a 16 GB V100 (fp32, ~224x224): samples/s at the best batch
# size and memory per instance at batch 1 and at batch 64 (weights, workspace, activations).
IMAGENET = {
    "resnet50": (1150, 0.9, 5.0),
    "resnet101": (680, 1.1, 7.5),
    "resnet152": (470, 1.3, 10.0),
    "densenet121": (900, 0.8, 6.5),
    "densenet201": (560, 1.0, 9.0),
    "inception_v3": (1000, 0.9, 4.5),
    "xception": (620, 1.0, 6.0),
    "efficientnet_b4": (390, 0.9, 11.0),
    "vgg16": (560, 1.6, 8.0),
    "vgg19": (470, 1.7, 9.0),
    "nasnet_large": (160, 1.5, 15.5),  # at batch 64 it shares a GPU with no one
    "wide_resnet101": (300, 1.8, 12.5),
}


def gpu(i: int, gb: float = 16.0, device_class: str = "V100-16GB") -> Device:
    return Device(f"gpu{i}", "gpu", device_class, int(gb * GIB), index=i)


def cpu(cores: int = 16, gb: float = 64.0) -> Device:
    return Device("cpu", "cpu", "cpu", int(gb * GIB), cores=cores)


def gpus(n: int, gb: float = 16.0) -> Inventory:
    return Inventory(tuple(gpu(i, gb) for i in range(n)))


def cnn_entries(peak: float, mem1: float, mem64: float) -> dict[int, ProfileEntry]:
    """A saturating throughput curve and linear memory growth in the batch size."""
    entries = {}
    for b in BATCHES:
        throughput = peak * b / (b + 6.0) * (64 + 6.0) / 64
        memory = mem1 + (mem64 - mem1) * (b - 1) / 63
        entries[b] = ProfileEntry(round(throughput, 1), int(memory * GIB))
    return entries


def imagenet_profile(names: list[str] | None = None) -> Profile:
    names = names or list(IMAGENET)
    return Profile({n: {"V100-16GB": cnn_entries(*IMAGENET[n])} for n in names})


def random_problem_inputs(
    seed: int, members: int, devices: int, batches: tuple[int, ...] = (1, 8, 32)
) -> tuple[list[str], Inventory, Profile]:
    """Small random instances: two GPU classes and sometimes a CPU, tight memory."""
    rng = np.random.default_rng(seed)
    inventory_devices = []
    for i in range(devices):
        if i == devices - 1 and rng.random() < 0.4:
            inventory_devices.append(cpu(cores=8, gb=8))
        else:
            cls = "big" if rng.random() < 0.5 else "small"
            gb = 16.0 if cls == "big" else 8.0
            inventory_devices.append(gpu(i, gb, device_class=cls))
    names = [f"m{i}" for i in range(members)]
    data: dict[str, dict[str, dict[int, ProfileEntry]]] = {}
    for name in names:
        peak = rng.uniform(100, 2000)
        mem1, growth = rng.uniform(0.5, 4.0), rng.uniform(0.02, 0.25)
        per_class = {}
        for cls, speed in (("big", 1.0), ("small", 0.6), ("cpu", 0.08)):
            if rng.random() < 0.15 and cls != "big":
                continue  # some members are not profiled on some classes
            per_class[cls] = {
                b: ProfileEntry(
                    peak * speed * b / (b + rng.uniform(2, 12)), int((mem1 + growth * b) * GIB)
                )
                for b in batches
                if not (b != batches[0] and rng.random() < 0.1)  # some batch sizes missing
            }
        data[name] = per_class
    return names, Inventory(tuple(inventory_devices)), Profile(data)


def exhaustive_best(problem: Problem) -> float:
    """The best base-model throughput over every batch size and device subset per member
    (one instance per placed device: more only cost memory under the base model)."""
    n_members, n_devices = len(problem.members), len(problem.devices)
    subsets = [s for s in itertools.product((0, 1), repeat=n_devices) if any(s)]
    options = [
        [
            (b, subset)
            for b in range(len(problem.batch_sizes))
            for subset in subsets
            if all(problem.allowed(m, d, b) for d in range(n_devices) if subset[d])
        ]
        for m in range(n_members)
    ]
    best = 0.0
    for choice in itertools.product(*options):
        memory = sum(
            np.array(subset) * np.where(np.array(subset) > 0, problem.memory[m, :, b], 0)
            for m, (b, subset) in enumerate(choice)
        )
        if np.any(memory > problem.capacity):
            continue
        rates = np.array(
            [np.array(subset) * problem.rate[m, :, b] for m, (b, subset) in enumerate(choice)]
        )
        best = max(best, solve_time_sharing(rates).throughput)
    return best
