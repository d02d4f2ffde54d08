"""How fast a step could run on this machine: its arithmetic floor and its memory floor.

A training or inference step (``harness.speed.benchmarks.make_step``) is run once under two
dispatch-level counters:

- **arithmetic**: floating-point operations of convolutions and matrix products, counted by
  ``torch.utils.flop_counter``; at the measured float32 matmul rate this is the compute floor;
- **memory traffic**: bytes read and written by every other kernel (BatchNorm, ReLU, max-pool,
  additions, copies, optimiser updates), the tensors each kernel takes and returns; at the
  measured memory bandwidth this is the memory floor. View operations move nothing and are not
  counted; a kernel that rereads its input (BatchNorm reads twice: statistics, then normalise) is
  counted once, so the memory floor is a lower bound too.

The floor is their sum: on a CPU, convolutions and the elementwise kernels between them run one
after another, so their times add. The counters see the kernels below ``torch.func``'s
transforms, i.e. what actually runs. Steps are counted on one task and multiplied by the number
of tasks: with several tasks vmap's grouped convolutions are counted as dense by the FLOP counter
(a factor ``tasks`` too high).

Used by ``harness bench --floor``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from harness.speed.benchmarks import (
    ALGORITHMS,
    CONFIGS,
    PAPER_TRAINING,
    PHASES,
    BenchConfig,
    interleaved_medians,
    make_step,
)

#: Kernel families named in the memory-traffic breakdown (aten name prefixes); the rest is "other".
FAMILIES = {
    "batch norm": ("native_batch_norm", "_native_batch_norm_legit", "batch_norm"),
    "relu": ("relu", "threshold_backward"),
    "max-pool": ("max_pool2d",),
}


def family(op_name: str) -> str:
    for name, prefixes in FAMILIES.items():
        if op_name.startswith(prefixes):
            return name
    return "other"


class MemoryTraffic(TorchDispatchMode):
    """Bytes taken and returned by every kernel that is neither a view nor counted as arithmetic."""

    def __init__(self):
        super().__init__()
        self.bytes = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view or func.overloadpacket in flop_registry:
            return out
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.bytes[family(func.overloadpacket.__name__)] += sum(t.numel() * t.element_size() for t in tensors)
        return out


@dataclass(frozen=True)
class StepCost:
    flops: int
    bytes: dict  # family -> bytes


def step_cost(plugins, algorithm_name: str, config: BenchConfig, phase: str) -> StepCost:
    step = make_step(plugins, algorithm_name, replace(config, tasks=1), phase, "cpu")
    step()  # the first call builds what later calls reuse (e.g. the fast-path check)
    traffic = MemoryTraffic()
    with FlopCounterMode(display=False) as counter, traffic:
        step()
    return StepCost(
        counter.get_total_flops() * config.tasks,
        {name: count * config.tasks for name, count in traffic.bytes.items()},
    )


def matmul_rate(size: int = 1024, repeats: int = 10) -> float:
    """Measured float32 matrix-multiply rate of this machine in FLOP/s."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    return 2 * size**3 / interleaved_medians({"matmul": lambda: a @ b}, repeats)["matmul"]


def memory_bandwidth(megabytes: int = 128, repeats: int = 10) -> float:
    """Measured bytes per second of an elementwise kernel (``add`` of two large float32 tensors)."""
    n = megabytes * 2**20 // 4
    a, b, c = torch.rand(n), torch.rand(n), torch.empty(n)
    return 3 * n * 4 / interleaved_medians({"add": lambda: torch.add(a, b, out=c)}, repeats)["add"]


def floor_steps() -> list[tuple[BenchConfig, str]]:
    """Every Table 6 step, then one training iteration at each of the paper's own settings."""
    steps = [(config, phase) for config in CONFIGS.values() for phase in PHASES]
    return steps + [(config, "train") for config in PAPER_TRAINING.values() if config.name.startswith("paper")]


def floor_rows(plugins, rate: float, bandwidth: float, rounds: int = 0, steps=None) -> list[dict]:
    """One row per step and algorithm: FLOPs, bytes by family, the floors, and (``rounds`` > 0) the measured median."""
    rows = []
    for config, phase in steps or floor_steps():
        for algorithm in ALGORITHMS:
            cost = step_cost(plugins, algorithm, config, phase)
            total_bytes = sum(cost.bytes.values())
            row = {
                "config": config.name,
                "phase": phase,
                "algorithm": algorithm,
                "gflop": cost.flops / 1e9,
                "gbyte": total_bytes / 1e9,
                **{f"gbyte {name}": cost.bytes.get(name, 0) / 1e9 for name in (*FAMILIES, "other")},
                "compute_floor_s": cost.flops / rate,
                "memory_floor_s": total_bytes / bandwidth,
            }
            row["floor_s"] = row["compute_floor_s"] + row["memory_floor_s"]
            if rounds:
                row["measured_s"] = interleaved_medians(
                    {"step": make_step(plugins, algorithm, config, phase, "cpu")}, rounds
                )["step"]
                row["distance"] = row["measured_s"] / row["floor_s"]
            rows.append(row)
    return rows
