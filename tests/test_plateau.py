"""The plateau evidence: Welch's interval on the last two windows of a validation curve, and its evaluator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import run_cli

from harness.errors import HarnessError
from harness.evaluation.plateau import T_95, plateau_gain, t_critical_95, validation_curve

STEPS = list(range(100, 1300, 100))  # 12 validations: windows (600, 900] and (900, 1200] at fraction 0.25


def _t_cdf(x: float, df: int) -> float:
    """Student's t distribution function by integrating its density (Simpson's rule), independent of the table."""
    norm = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    grid = np.linspace(0.0, x, 20_001)
    density = norm * (1 + grid**2 / df) ** (-(df + 1) / 2)
    h = grid[1] - grid[0]
    return 0.5 + h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())


def test_the_t_table_is_students_two_sided_95_percent_quantile():
    for df, value in enumerate(T_95, start=1):
        assert _t_cdf(value - 6e-4, df) < 0.975 < _t_cdf(value + 6e-4, df), df
    assert t_critical_95(2.9) == T_95[1]  # fractional degrees of freedom round down: a wider interval
    assert t_critical_95(31) == t_critical_95(math.inf) == 1.96


def test_the_gain_and_its_interval_are_welchs_between_the_last_two_windows():
    accuracies = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.91, 0.935, 0.92, 0.94, 0.95, 0.93]
    result = plateau_gain(STEPS, accuracies, 0.25)
    last, before = accuracies[9:], accuracies[6:9]
    a, b = np.var(last, ddof=1) / 3, np.var(before, ddof=1) / 3
    df = (a + b) ** 2 / (a**2 / 2 + b**2 / 2)  # Welch-Satterthwaite: 3.81 here, so t at 3 degrees of freedom
    assert 3 < df < 4
    assert result["gain"] == pytest.approx(np.mean(last) - np.mean(before), rel=1e-12)
    assert result["ci95"] == pytest.approx(3.182 * math.sqrt(a + b), rel=1e-12)
    assert result["last"] == pytest.approx(np.mean(last), rel=1e-12)
    assert result["windows"] == {"before": [600, 900], "last": [900, 1200]}
    assert result["validations"] == [3, 3]
    assert result["plateau"] is (result["gain"] - result["ci95"] <= 0)


def test_a_rising_curve_is_not_on_its_plateau_and_a_flat_noisy_one_is():
    rng = np.random.default_rng(0)
    steps = list(range(250, 10_250, 250))  # the converged budget's 40 validations
    rising = [0.5 + 0.4 * s / 10_000 + rng.normal(0, 0.003) for s in steps]
    flat = [0.95 + rng.normal(0, 0.003) for _ in steps]
    assert plateau_gain(steps, rising, 0.25)["plateau"] is False
    assert plateau_gain(steps, flat, 0.25)["plateau"] is True
    still = plateau_gain(steps, [0.9] * len(steps), 0.25)
    assert still["gain"] == 0.0 and still["ci95"] == pytest.approx(0.0, abs=1e-12) and still["plateau"] is True


@pytest.mark.parametrize(
    "steps, fraction, message",
    [
        (
            [100, 200, 300, 400],
            0.25,
            "the plateau test needs at least 3 validations in each window of 100 iterations, "
            "the run has 1 and 1 (validate more often: --val-every)",
        ),
        ([], 0.25, "the run has no validations (it trained with --val-every 0)"),
        (STEPS, 0.6, "the plateau fraction must be in (0, 0.5], got 0.6"),
    ],
)
def test_a_curve_too_short_to_judge_is_refused_with_one_line(steps, fraction, message):
    with pytest.raises(HarnessError) as raised:
        plateau_gain(steps, [0.5] * len(steps), fraction)
    assert str(raised.value) == message


def test_a_resumed_runs_repeated_validations_count_once_the_later_one(tmp_path):
    records = [
        {"step": 100, "split": "val", "accuracy": 0.5},
        {"step": 200, "split": "val", "accuracy": 0.6},
        {"step": 200, "split": "train", "accuracy": 0.1},
        {"step": 200, "split": "val", "accuracy": 0.7},  # after a resume from step 100
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert validation_curve(tmp_path) == ([100, 200], [0.5, 0.7])


FLAGS = ["--algo", "anil", "--data", "omniglot-5w1s", "--meta-batch-size", "2", "--iterations", "12"]
FLAGS += ["--val-every", "1", "--val-tasks", "4", "--test-tasks", "8", "--no-progress", "--no-download"]


@pytest.mark.realdata
def test_the_evaluator_reads_the_runs_own_curve_and_a_budget_that_validates_too_rarely_is_one_line(data_root, tmp_path):
    out = tmp_path / "run"
    assert run_cli("run", *FLAGS, "--data-root", data_root, "--out", out).returncode == 0
    result = run_cli("eval", out, "--evaluator", "plateau", "--data-root", data_root)
    assert result.returncode == 0, result.stderr
    written = json.loads((out / "eval-plateau.json").read_text())
    expected = plateau_gain(*validation_curve(out), 0.25)
    assert [row["key"] for row in written["rows"]] == ["gain", "last", "iterations"]
    assert written["rows"][2]["mean"] == 12 and written["rows"][2]["tasks"] == "12 validations"
    assert written["rows"][0]["mean"] == expected["gain"] and written["plateau"] == expected["plateau"]
    assert written["rows"][0]["name"] == "validation gain, steps 9-12 over the 3 validations before"
    sparse = run_cli("eval", out, "--evaluator", "plateau", "-o", "fraction=0.1", "--data-root", data_root)
    assert sparse.returncode != 0 and sparse.stderr.strip().count("\n") == 0, sparse.stderr
    assert sparse.stderr.strip().endswith(
        "the plateau test needs at least 3 validations in each window of 1.2 iterations, the run has 1 and 2 "
        "(validate more often: --val-every)"
    )
