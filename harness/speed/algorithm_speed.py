"""The speed of any algorithm as ratios to a reference algorithm timed in the same run (``harness bench --algo``).

Every Table 6 step (``harness.speed.benchmarks.CONFIGS`` x train / inference) of the algorithm is timed
with the same step of a reference, rounds interleaved (``interleaved_medians``), and reported as
``ratio = median(algorithm) / median(reference)``: a CI machine twice as slow, or one busy with
something else for a while, slows both alike and leaves the ratio where it was. The reference is
MAML for a second-order algorithm and FOMAML for a first-order one (``first_order``), or one the
user names. A saved baseline is a JSON file of those ratios with what they were measured on; a
comparison refuses a baseline of another algorithm, reference, backbone, set of steps or harness
version before timing anything, and fails when a ratio grew by more than the tolerance.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import harness
from harness.errors import HarnessError
from harness.run.files import read_json, write_json
from harness.speed.benchmarks import CONFIGS, PHASES, BenchConfig, interleaved_medians, make_step

BASELINE_KIND = "harness-bench-ratios"
BASELINE_FOLDER = Path(".benchmarks") / "ratios"
#: Repeat runs of one step's ratio on the 2-core CPU differ by up to 25 % (results/benchmarks/NOTES.md).
DEFAULT_TOLERANCE = 0.25


def reference_for(algorithm) -> str:
    """MAML for a second-order algorithm (or one without an inner loop), FOMAML for a first-order one."""
    return "fomaml" if algorithm.first_order else "maml"


def timed_phases(algorithm) -> tuple[str, ...]:
    """The Table 6 phases this algorithm has: an episodic training step (unless it never trains) and inference."""
    name = algorithm.name
    if algorithm.batch_kind != "episodes":
        raise HarnessError(
            f"{name} trains on {algorithm.batch_kind} batches, not episodes: the Table 6 steps are episodic"
        )
    return PHASES if algorithm.trains else ("inference",)


def step_shapes(names: list[str] | None, backbone: str | None) -> list[BenchConfig]:
    for name in names or []:
        if name not in CONFIGS:
            raise HarnessError(f"unknown step shape {name!r}; shapes: {', '.join(CONFIGS)}")
    return [
        dataclasses.replace(config, backbone=backbone or config.backbone)
        for name, config in CONFIGS.items()
        if not names or name in names
    ]


def baseline_path(name: str) -> Path:
    """``NAME.json`` as given, or ``.benchmarks/ratios/NAME.json``."""
    return Path(name) if name.endswith(".json") else BASELINE_FOLDER / f"{name}.json"


def describe(algorithm: str, reference: str, backbone: str | None, steps: list[str]) -> dict:
    """What a set of ratios was measured on; a baseline must match it to be compared."""
    return {
        "harness": harness.__version__,
        "algorithm": algorithm,
        "reference": reference,
        "backbone": backbone or "default",
        "steps": sorted(steps),
    }


def load_baseline(name: str, wanted: dict) -> dict:
    """The saved baseline ``name``, refused in one line when it was measured on anything else than ``wanted``."""
    path = baseline_path(name)
    if not path.exists():
        saved = ", ".join(sorted(p.stem for p in BASELINE_FOLDER.glob("*.json"))) or "none saved yet"
        raise HarnessError(f"--compare {name}: no baseline at {path} (saved: {saved}); save one with --save {name}")
    baseline = read_json(path)
    if not isinstance(baseline, dict) or baseline.get("kind") != BASELINE_KIND:
        raise HarnessError(f"{path} is not a harness bench --algo baseline (no kind {BASELINE_KIND!r})")
    for key, value in wanted.items():
        recorded = baseline["measured_on"].get(key) if key != "steps" else sorted(baseline["ratios"])
        if recorded != value:
            raise HarnessError(
                f"baseline {path} was measured with {key} {recorded!r}, this run has {value!r}: "
                f"compare like with like, or save a new baseline with --save"
            )
    return baseline


def measure(plugins, algorithm: str, reference: str, shapes: list[BenchConfig], device, rounds: int) -> dict:
    """``{"omniglot-20w1s train": {"seconds": s, "reference_seconds": r, "ratio": s / r}, ...}``."""
    phases = timed_phases(plugins.algorithms.get(algorithm))
    steps = {}
    for shape in shapes:
        for phase in phases:
            pair = {
                name: make_step(plugins, name, shape, phase, device) for name in dict.fromkeys([algorithm, reference])
            }
            medians = interleaved_medians(pair, rounds)
            seconds, reference_seconds = medians[algorithm], medians[reference]
            steps[f"{shape.name} {phase}"] = {
                "seconds": round(seconds, 5),
                "reference_seconds": round(reference_seconds, 5),
                "ratio": round(seconds / reference_seconds, 4),
            }
    return steps


def save_baseline(name: str, measured_on: dict, steps: dict, machine: str, rounds: int) -> Path:
    path = baseline_path(name)
    record = {
        "kind": BASELINE_KIND,
        "measured_on": {k: v for k, v in measured_on.items() if k != "steps"},
        "machine": machine,
        "rounds": rounds,
        "date": time.strftime("%Y-%m-%d"),
        "ratios": {key: step["ratio"] for key, step in steps.items()},
    }
    write_json(path, record)
    return path


def regressions(baseline: dict, name: str, steps: dict, tolerance: float) -> list[str]:
    """One line per step whose ratio grew by more than ``tolerance`` over the baseline's."""
    algorithm, reference = baseline["measured_on"]["algorithm"], baseline["measured_on"]["reference"]
    lines = []
    for key, step in steps.items():
        before = baseline["ratios"][key]
        if step["ratio"] > before * (1 + tolerance):
            lines.append(
                f"{key}: {algorithm} takes {step['ratio']:.2f}x the time of {reference}, baseline {name} "
                f"{before:.2f}x: {step['ratio'] / before - 1:.0%} slower (tolerance {tolerance:.0%})"
            )
    return lines
