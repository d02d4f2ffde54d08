"""Table 6 speed suite: MAML / FOMAML / ANIL training and inference steps, and speedup gates.

    pytest harness/speed/suite                       # all devices present; prints pytest-benchmark's table
    harness bench                                 # the same, plus a Table-6-style summary and JSON in results/benchmarks/

Ratios (ANIL over MAML, FOMAML over MAML) are computed from the medians of
this one session, so they compare like with like on one machine. They must
stay above the paper's (1.7x training, 4.1x inference for ANIL on the
MiniImageNet shapes) and within the noise tolerance below the lowest ratio
recorded for this device in ``results/benchmarks/<device>-ratios.json``.
"""

import os
from pathlib import Path

import pytest
import torch

from harness.plugin.manager import get_plugins
from harness.speed.benchmarks import (
    ALGORITHMS,
    CONFIGS,
    PHASES,
    make_step,
    reference_ratios,
    speed_gate_failures,
    speedups,
)

RECORDED = Path(__file__).resolve().parents[2] / "results" / "benchmarks"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_step(benchmark, step_times, algorithm, config, phase, device):
    step = make_step(get_plugins(), algorithm, CONFIGS[config], phase, device)
    benchmark.group = f"{config} {phase} {device}"
    benchmark.extra_info.update({"algorithm": algorithm, "config": config, "phase": phase, "device": device})
    benchmark.pedantic(step, rounds=benchmark_rounds(config, algorithm), warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        step_times[(algorithm, config, phase, device)] = benchmark.stats.stats.median


def benchmark_rounds(config, algorithm):
    # Slow steps get fewer rounds so the whole suite stays within a few minutes on 2 cores.
    quick = int(os.environ.get("HARNESS_BENCH_ROUNDS", "0"))
    if quick:
        return quick
    return 5 if (algorithm == "maml" and config != "mini-5w1s") else 10


@pytest.mark.parametrize("device", DEVICES)
def test_speedups_hold(step_times, device):
    measured = speedups({key: value for key, value in step_times.items() if key[3] == device})
    if not measured:
        pytest.skip("no benchmark timings in this session (run the whole file without --benchmark-disable)")
    failures = speed_gate_failures(measured, reference_ratios(RECORDED / f"{device}-ratios.json"))
    print("\n".join(f"{k}: {v:.2f}x" for k, v in sorted(measured.items())))
    assert not failures, "; ".join(failures)
