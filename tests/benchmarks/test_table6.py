"""Table 6 speed suite: MAML / FOMAML / ANIL training and inference steps, and speedup gates.

    pytest tests/benchmarks                       # all devices present; prints pytest-benchmark's table
    harness bench                                 # the same, plus a Table-6-style summary and JSON in results/benchmarks/

Ratios (ANIL over MAML, FOMAML over MAML) are computed from the medians of
this one session, so they compare like with like on one machine. They must
stay above the paper's (1.7x training, 4.1x inference for ANIL on the
MiniImageNet shapes) and within the noise tolerance below the ratios recorded
for this device in ``results/benchmarks/<device>-ratios.json``.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from harness.benchmarks import ALGORITHMS, CONFIGS, PAPER_SPEEDUP, PHASES, make_step, speedups
from harness.plugin_manager import get_plugins

RECORDED = Path(__file__).resolve().parents[2] / "results" / "benchmarks"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NOISE_TOLERANCE = 0.25  # repeat runs of one step on the 2-core CPU differ by up to 25 %


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


def recorded_ratios(device) -> dict:
    path = RECORDED / f"{device}-ratios.json"
    return json.loads(path.read_text()) if path.exists() else {}


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
    failures = []
    for key, value in measured.items():
        if key.startswith("anil/maml mini"):
            floor = PAPER_SPEEDUP["train" if key.endswith("train") else "inference"]
            if value < floor:
                failures.append(f"{key}: {value:.2f}x is below the paper's {floor}x")
        if key.startswith("fomaml/maml") and value < 1.0:
            failures.append(f"{key}: first-order MAML is not faster than MAML ({value:.2f}x)")
        recorded = recorded_ratios(device).get(key)
        if recorded and value < recorded * (1 - NOISE_TOLERANCE):
            failures.append(f"{key}: {value:.2f}x is more than {NOISE_TOLERANCE:.0%} below the recorded {recorded:.2f}x")
    print("\n".join(f"{k}: {v:.2f}x" for k, v in sorted(measured.items())))
    assert not failures, "; ".join(failures)
