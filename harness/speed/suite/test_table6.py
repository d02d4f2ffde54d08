"""Table 6 speed suite: MAML / FOMAML / ANIL training and inference steps, and speedup gates.

    pytest harness/speed/suite                       # all devices present; prints pytest-benchmark's table
    harness bench                                 # the same, plus a Table-6-style summary and JSON in results/benchmarks/

The gate (``test_speedups_hold``) times its steps again, each shape's in interleaved rounds
(``harness.speed.benchmarks.gate_medians``), so that other work on the machine slows all of them
alike: ANIL over MAML, FOMAML over MAML, and MAML with PyTorch's composite double backwards over
MAML with the fused kernels. They must stay above the paper's (1.7x training, 4.1x inference for
ANIL on the MiniImageNet shapes) and within the noise tolerance below the lowest ratio recorded
for this device in ``results/benchmarks/<device>-ratios.json``; ``HARNESS_RECORD_RATIOS=<file>``
(``harness bench --record``) appends the measured ones there.
"""

import os
from datetime import date
from pathlib import Path

import pytest
import torch

from harness.plugin.manager import get_plugins
from harness.speed.benchmarks import (
    ALGORITHMS,
    CONFIGS,
    PHASES,
    gate_medians,
    make_step,
    record_ratios,
    reference_ratios,
    speed_gate_failures,
    speedups,
)
from harness.speed.records import device_file_name, machine_description

RECORDED = Path(__file__).resolve().parents[2] / "results" / "benchmarks"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_step(benchmark, algorithm, config, phase, device):
    step = make_step(get_plugins(), algorithm, CONFIGS[config], phase, device)
    benchmark.group = f"{config} {phase} {device}"
    benchmark.extra_info.update({"algorithm": algorithm, "config": config, "phase": phase, "device": device})
    benchmark.pedantic(step, rounds=benchmark_rounds(config, algorithm), warmup_rounds=1)


def benchmark_rounds(config, algorithm):
    # Slow steps get fewer rounds so the whole suite stays within a few minutes on 2 cores.
    quick = int(os.environ.get("HARNESS_BENCH_ROUNDS", "0"))
    if quick:
        return quick
    return 5 if (algorithm == "maml" and config != "mini-5w1s") else 10


@pytest.mark.parametrize("device", DEVICES)
def test_speedups_hold(device):
    rounds = int(os.environ.get("HARNESS_BENCH_ROUNDS", "0")) or 5
    measured = speedups(gate_medians(get_plugins(), device, rounds))
    failures = speed_gate_failures(measured, reference_ratios(RECORDED / f"{device}-ratios.json"))
    print("\n".join(f"{k}: {v:.2f}x" for k, v in sorted(measured.items())))
    record = os.environ.get("HARNESS_RECORD_RATIOS")
    if record:
        source = (
            f"speed gate ({rounds} interleaved rounds) on {machine_description(device)}, torch {torch.__version__}, "
            f"{date.today()}"
        )
        record_ratios(Path(record).with_name(f"{device_file_name(device)}-ratios.json"), measured, source)
    assert not failures, "; ".join(failures)
