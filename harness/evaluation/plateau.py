"""Has a run's validation accuracy stopped rising? The evidence behind a "trained to its plateau" budget.

A run validates every ``val_every`` iterations on one fixed set of validation tasks
(``harness.evaluation.fewshot.VAL_TASK_SEED``), so its validation curve moves only because the
network does. :func:`plateau_gain` splits the curve's last ``2 * fraction`` of training into two
windows of equal length and compares their mean accuracies: ``gain`` = mean of the last window minus
mean of the window before, with a 95% Welch interval (the validations of each window taken as
samples around that window's level). A run whose gain is not significantly above zero (``gain -
ci95 <= 0``) is on its plateau: training it as long again would not be expected to move it by more
than its own validation noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError

# Two-sided 95% critical values of Student's t, df = 1..30 (any statistics table, e.g. NIST/SEMATECH
# e-Handbook of Statistical Methods, Section 1.3.6.7.2); beyond 30 the normal 1.96 is within 2%.
# Written out rather than importing scipy, which the harness does not otherwise need; tests compare
# the table with scipy.stats.t where scipy is installed.
T_95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
MIN_PER_WINDOW = 3  # fewer validations than this give a sample variance too rough to test
DEFAULT_FRACTION = 0.25  # quarters: the plateau evaluator's, ``until_plateau``'s and the report's default


def t_critical_95(df: float) -> float:
    """Two-sided 95% critical value of Student's t for ``df`` degrees of freedom (rounded down: conservative)."""
    if df > len(T_95):
        return 1.96
    return T_95[max(1, math.floor(df)) - 1]


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def plateau_gain(steps: Sequence[int], accuracies: Sequence[float], fraction: float) -> dict:
    """``{"gain", "ci95", "last", "last_ci95", "windows", "plateau"}`` of one validation curve.

    ``steps``/``accuracies``: the run's validations in training order. The last window is the
    validations in ``(T - w, T]``, the window before those in ``(T - 2w, T - w]``, with ``T`` the last
    validated step and ``w = fraction * T``.
    """
    if not 0 < fraction <= 0.5:
        raise HarnessError(f"the plateau fraction must be in (0, 0.5], got {fraction}")
    if not steps:
        raise HarnessError("the run has no validations (it trained with --val-every 0)")
    end = steps[-1]
    width = fraction * end
    last = [a for s, a in zip(steps, accuracies) if s > end - width]
    before = [a for s, a in zip(steps, accuracies) if end - 2 * width < s <= end - width]
    if min(len(last), len(before)) < MIN_PER_WINDOW:
        raise HarnessError(
            f"the plateau test needs at least {MIN_PER_WINDOW} validations in each window of {width:g} "
            f"iterations, the run has {len(before)} and {len(last)} (validate more often: --val-every)"
        )
    (mean_last, var_last), (mean_before, var_before) = _mean_var(last), _mean_var(before)
    a, b = var_last / len(last), var_before / len(before)
    error = math.sqrt(a + b)
    # Welch-Satterthwaite degrees of freedom; two flat windows (no variance) leave the normal value.
    df = (a + b) ** 2 / (a**2 / (len(last) - 1) + b**2 / (len(before) - 1)) if a + b > 0 else math.inf
    gain, ci95 = mean_last - mean_before, t_critical_95(df) * error
    return {
        "gain": gain,
        "ci95": ci95,
        "last": mean_last,
        "last_ci95": t_critical_95(len(last) - 1) * math.sqrt(var_last / len(last)),
        "windows": {"before": [end - 2 * width, end - width], "last": [end - width, end]},
        "validations": [len(before), len(last)],
        "plateau": gain - ci95 <= 0,
    }


def validation_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """The ``(steps, accuracies)`` of a run's validations, in training order (a resumed run's repeats dropped)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise HarnessError(f"{run_dir} has no metrics.jsonl: nothing to read a validation curve from")
    curve: dict[int, float] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("split") == "val":
            curve[int(record["step"])] = float(record["accuracy"])
    steps = sorted(curve)
    return steps, [curve[s] for s in steps]
