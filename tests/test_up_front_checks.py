"""Checks made before any work: options an algorithm never reads, steps too big for memory, progress."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from harness.evaluation.fewshot import per_task_accuracies, progress_shown
from harness.plugin.algorithm import mark_ignored_options, refuse_ignored_options
from harness.plugin.manager import get_plugins
from harness.run import memory_estimate


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.head(self.body(x))


def test_the_per_image_bound_counts_the_outputs_of_parameter_holding_layers():
    # conv [4, 6, 6] + batch norm [4, 6, 6] + head [3], float32; ReLU and Flatten hold no parameters
    assert memory_estimate.activation_bytes_per_image(Tiny(), 1, 6) == (144 + 144 + 3) * 4


def test_a_step_above_the_free_memory_is_refused_with_both_sizes(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 4000 kB\nMemAvailable:    2000 kB\n")
    monkeypatch.setattr(memory_estimate, "MEMINFO", meminfo)
    memory_estimate.refuse_if_too_big("a meta-batch of 2 tasks", "--meta-batch-size", 20, 100_000, torch.device("cpu"))
    with pytest.raises(HarnessError) as refused:
        memory_estimate.refuse_if_too_big(
            "a meta-batch of 3 tasks", "--meta-batch-size", 30, 100_000, torch.device("cpu")
        )
    assert str(refused.value) == (
        "a meta-batch of 3 tasks (30 images) needs at least 3.0 MB for its layer outputs alone (a lower bound); "
        "cpu has 2.0 MB free; lower --meta-batch-size"
    )


def test_protonet_refuses_the_options_it_never_reads_and_records_them_as_unused():
    protonet = get_plugins().algorithms.get("protonet")
    refuse_ignored_options(protonet, {"inner_steps": None, "seed": 3})
    with pytest.raises(
        HarnessError, match=r"^protonet does not use --inner-lr \(it has no inner loop\); leave it out$"
    ):
        refuse_ignored_options(protonet, {"seed": 3, "inner_lr": 0.4})
    sources: dict[str, str] = {"inner_lr": "paper"}
    mark_ignored_options(protonet, sources)
    assert sources["inner_lr"] == "not used by protonet: it has no inner loop"
    assert set(sources) == {"inner_steps", "test_inner_steps", "inner_lr", "head_init"}
    refuse_ignored_options(get_plugins().algorithms.get("maml"), {"inner_steps": 5, "head_init": "normal"})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Sampler:
    def sample(self, count, rng):
        from harness.data.episodes import Episodes

        x = torch.zeros(count, 2, 1, 2, 2)
        y = torch.zeros(count, 2, dtype=torch.long)
        return Episodes(x, y, x, y, 2)


@pytest.mark.parametrize("shown", [True, False])
def test_an_evaluation_shows_tasks_done_and_time_left_only_when_asked(shown, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_shown(shown):
        accuracies = per_task_accuracies(lambda e: torch.zeros(e.query_y.shape[0], 2, 2), Sampler(), 5, 0, 2, "cpu")
    np.testing.assert_array_equal(accuracies, np.ones(5))
    assert ("evaluating: 100%" in terminal.getvalue() and "5/5" in terminal.getvalue()) == shown


def test_report_recomputes_agreement_from_the_numbers_and_names_what_it_corrected(tmp_path):
    from harness.reproduce.rendering import checked_rows

    result = {
        "rows": [
            {"label": "a", "unit": "%", "mean": 95.25, "ci95": 0.37, "paper": [96.2, 0.5], "agree": "yes"},
            {"label": "b", "unit": "%", "mean": 96.77, "ci95": 0.3, "paper": [96.7, 0.3], "agree": "yes"},
            {"label": "c", "unit": "x", "mean": 2.0, "ci95": 0.0, "paper": [1.5], "agree": "no"},
            {"label": "d", "unit": "%", "mean": None, "agree": "yes"},
        ]
    }
    corrected = checked_rows(tmp_path / "t.json", result)
    assert [row["agree"] for row in result["rows"]] == ["no", "yes", "yes", "not run"]
    assert corrected == [
        f"{tmp_path / 't.json'}: row 'a': agree recomputed as 'no' (file: 'yes')",
        f"{tmp_path / 't.json'}: row 'c': agree recomputed as 'yes' (file: 'no')",
        f"{tmp_path / 't.json'}: row 'd': agree recomputed as 'not run' (file: 'yes')",
    ]


@pytest.mark.parametrize(
    "row, problem",
    [
        ({"label": "a", "unit": "%", "mean": float("nan"), "ci95": 1}, "mean must be a number or null, got nan"),
        ({"label": "a", "unit": "%", "mean": 1, "ci95": -1}, "ci95 must be a number of at least 0, got -1"),
        ({"label": "a", "unit": "%", "mean": 1, "ci95": 1, "paper": [1, 2, 3]}, "paper must be null or ..."),
        ({"label": "a", "unit": "%", "mean": 1, "ci95": 1, "compare": "near"}, "compare must be one of ..."),
        ({"label": "a", "unit": "%", "mean": 1, "ci95": 1, "runs": "x"}, "runs must be a list of ..."),
        ({"label": "a", "unit": 3}, "unit must be a string, got 3"),
    ],
)
def test_report_refuses_a_malformed_row_in_one_line(row, problem, tmp_path):
    from harness.reproduce.rendering import checked_rows

    with pytest.raises(HarnessError) as refused:
        checked_rows(tmp_path / "t.json", {"rows": [row]})
    expected = f"{tmp_path / 't.json'}: row 1 ('a') {problem}"
    assert str(refused.value).startswith(expected.removesuffix("...")), str(refused.value)
