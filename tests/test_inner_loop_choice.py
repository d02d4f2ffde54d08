"""The inner loop's implementation is chosen once per run, from its config, recorded, and kept on --resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from test_runs import small_config

import harness.training as training
from harness.meta_learning import Engine
from harness.plugin_manager import load_plugins
from harness.training import Trainer


@pytest.mark.realdata
def test_auto_measures_both_paths_without_touching_the_run_and_resume_keeps_the_choice(
    data_root, tmp_path, monkeypatch
):
    monkeypatch.setattr(training, "MEASURE_AT_LEAST", 1)
    plugins = load_plugins()
    config = small_config(plugins, data_root, algo="maml", iterations=4, log_every=2, val_every=2)
    trainer = Trainer(config, plugins, tmp_path / "run", download=False, progress=False)
    weights = copy.deepcopy(trainer.model.state_dict())
    episodes_rng, torch_rng = copy.deepcopy(trainer.rng.bit_generator.state), torch.get_rng_state()
    timings = trainer._time_inner_loops()
    assert set(timings) == {"fast", "generic"} and all(seconds > 0 for seconds in timings.values())
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())  # measured on copies
    assert trainer.rng.bit_generator.state == episodes_rng and torch.equal(torch.get_rng_state(), torch_rng)

    summary = trainer.train()
    chosen = summary["inner_loop"]
    assert chosen["how"] == "auto, measured" and chosen["path"] == min(
        chosen["seconds_per_step"], key=chosen["seconds_per_step"].get
    )

    extended = small_config(plugins, data_root, algo="maml", iterations=6, log_every=2, val_every=2)
    resumed = Trainer(extended, plugins, tmp_path / "run", download=False, progress=False)
    resumed.restore()
    assert resumed.inner_loop == chosen  # not measured again: the paths agree to rounding, not bit for bit
    assert resumed.train()["inner_loop"] == chosen


@pytest.mark.realdata
def test_an_explicit_inner_loop_is_used_and_recorded(data_root, tmp_path):
    out = tmp_path / "generic"
    result = run_cli(
        "run",
        "--algo",
        "anil",
        "--data",
        "omniglot-5w1s",
        "--iterations",
        "2",
        "--val-every",
        "2",
        "--val-tasks",
        "4",
        "--test-tasks",
        "8",
        "--inner-loop",
        "generic",
        "--no-progress",
        "--data-root",
        data_root,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["inner_loop"] == {
        "path": "generic",
        "how": "--inner-loop generic",
    }
    assert "(device cpu; inner loop generic: --inner-loop generic); run directory" in result.stderr
    short = run_cli(
        "run",
        "--algo",
        "anil",
        "--data",
        "omniglot-5w1s",
        "--iterations",
        "2",
        "--val-every",
        "2",
        "--val-tasks",
        "4",
        "--test-tasks",
        "8",
        "--no-progress",
        "--data-root",
        data_root,
        "--out",
        tmp_path / "short",
    )
    assert (
        "(device cpu; inner loop fast: auto, not measured: 2 iterations, fewer than 500); run directory" in short.stderr
    )
    bad = run_cli(
        "run", "--algo", "anil", "--data", "omniglot-5w1s", "--inner-loop", "fastest", "--out", tmp_path / "x"
    )
    assert bad.returncode == 2 and bad.stderr.startswith(
        "harness: error: harness run: argument --inner-loop: invalid choice"
    )


def test_the_engine_comes_from_the_config_not_from_module_state():
    assert Engine.of(type("Hp", (), {"inner_loop": "generic", "precision": "bf16"})()) == Engine(
        fast=False, precision="bf16"
    )
    assert Engine.of(type("Hp", (), {"inner_loop": "fast"})()) == Engine(fast=True, precision="fp32")
    assert Engine(precision="bf16").body_dtype == torch.bfloat16 and Engine().body_dtype is None
    assert np.isscalar(training.MEASURE_AT_LEAST)
