"""The inner loop's implementation is chosen once per run by a rule (never a clock), recorded, and kept on --resume."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli
from test_runs import small_config
from torch import nn

import harness.engine.meta_learning as meta_learning
import harness.run.training as training
from harness.data.episodes import Episodes
from harness.engine.meta_learning import Engine
from harness.engine.side_by_side import fast_path_unavailable
from harness.plugin.manager import load_plugins
from harness.run.training import Trainer

TIMING_KEYS = {"train_seconds", "seconds_per_iteration", "test_seconds"}


class SkewedClock:
    """``time.perf_counter`` whose steps grow (``growth > 1``) or shrink (``< 1``) with every reading.

    Of any two things timed one after the other, the later looks slower on a growing clock and
    faster on a shrinking one: a choice made by timing would come out opposite under the two.
    """

    def __init__(self, growth: float):
        self.now, self.step, self.growth = 0.0, 1.0, growth

    def perf_counter(self) -> float:
        self.now += self.step
        self.step *= self.growth
        return self.now

    def __getattr__(self, name):  # every other member of the time module, unchanged
        import time

        return getattr(time, name)


def _train_under(clock: SkewedClock, plugins, data_root, run_dir, monkeypatch) -> Trainer:
    monkeypatch.setattr(training, "time", clock)
    config = small_config(plugins, data_root, algo="maml", iterations=6, log_every=2, val_every=3)
    trainer = Trainer(config, plugins, run_dir, download=False, progress=False)
    trainer.choose_inner_loop()
    trainer.train()
    return trainer


def _numbers(run_dir) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    strip = lambda row: {k: v for k, v in row.items() if k not in TIMING_KEYS}  # noqa: E731
    return [strip(row) for row in rows], strip(summary)


@pytest.mark.realdata
def test_runs_are_bit_identical_whatever_the_clock_says(data_root, tmp_path, monkeypatch):
    plugins = load_plugins()
    growing = _train_under(SkewedClock(1.01), plugins, data_root, tmp_path / "growing", monkeypatch)
    shrinking = _train_under(SkewedClock(0.99), plugins, data_root, tmp_path / "shrinking", monkeypatch)
    assert growing.inner_loop == shrinking.inner_loop == {"path": "fast", "how": "auto: the model has fast paths"}
    assert _numbers(tmp_path / "growing") == _numbers(tmp_path / "shrinking")  # every metrics row, the test result
    for name in ("checkpoint.pt", "best.pt"):
        a = torch.load(tmp_path / "growing" / name, weights_only=False)["model"]
        b = torch.load(tmp_path / "shrinking" / name, weights_only=False)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.realdata
def test_auto_takes_the_generic_path_where_the_model_has_no_fast_path(data_root, tmp_path):
    plugins = load_plugins()
    config = small_config(plugins, data_root, algo="maml", iterations=2, log_every=1, val_every=2)
    trainer = Trainer(config, plugins, tmp_path / "run", download=False, progress=False)
    trainer.model.body.insert(0, nn.GroupNorm(1, 1))  # a parametrised layer without a side-by-side rule
    chosen = trainer.choose_inner_loop()
    assert chosen["path"] == "generic" and chosen["how"].startswith("auto: no fast path (body.0 (GroupNorm)")
    assert trainer.hp.inner_loop == "generic"


def test_fast_path_availability_is_a_property_of_the_model():
    assert (
        fast_path_unavailable(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))) is None
    )
    tracked = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert fast_path_unavailable(tracked) == "1 keeps running statistics (per-task updates would mix tasks)"

    class OwnForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.GroupNorm(1, 2)

        def forward_tasks(self, params, images, channels_last):  # its own side-by-side forward
            return images

    assert fast_path_unavailable(OwnForward()) is None


@pytest.mark.realdata
def test_resume_keeps_the_recorded_choice(data_root, tmp_path):
    plugins = load_plugins()
    config = small_config(plugins, data_root, algo="maml", iterations=4, log_every=2, val_every=2, inner_loop="generic")
    first = Trainer(config, plugins, tmp_path / "run", download=False, progress=False)
    first.choose_inner_loop()
    chosen = first.train()["inner_loop"]
    extended = small_config(plugins, data_root, algo="maml", iterations=6, log_every=2, val_every=2)
    resumed = Trainer(extended, plugins, tmp_path / "run", download=False, progress=False)
    resumed.restore()
    assert resumed.inner_loop == chosen == {"path": "generic", "how": "--inner-loop generic"}
    assert resumed.train()["inner_loop"] == chosen


@pytest.mark.realdata
def test_an_explicit_inner_loop_is_used_and_recorded(data_root, tmp_path):
    common = ["run", "--algo", "anil", "--data", "omniglot-5w1s", "--iterations", "2", "--val-every", "2"]
    common += ["--val-tasks", "4", "--test-tasks", "8", "--no-progress", "--data-root", data_root]
    out = tmp_path / "generic"
    result = run_cli(*common, "--inner-loop", "generic", "--out", out)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["inner_loop"] == {
        "path": "generic",
        "how": "--inner-loop generic",
    }
    assert "(device cpu; inner loop generic: --inner-loop generic); run directory" in result.stderr
    short = run_cli(*common, "--out", tmp_path / "auto")
    assert "(device cpu; inner loop fast: auto: the model has fast paths); run directory" in short.stderr
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


def _meta_gradient(model, episodes, task_by_task: bool) -> torch.Tensor:
    model.zero_grad()
    if task_by_task:
        params = dict(model.named_parameters())
        logits = meta_learning._adapt_task_by_task(model, episodes, 2, 0.4, params, list(params), False)
    else:
        logits = meta_learning.adapt_and_predict(
            model, episodes, 2, 0.4, lambda name: True, False, False, Engine(False)
        )
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten()).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize(
    "norm, vmap_exact",
    [(lambda c: nn.GroupNorm(2, c), True), (lambda c: nn.BatchNorm2d(c, track_running_stats=False), False)],
    ids=["groupnorm", "batchnorm"],
)
def test_vmap_second_order_meta_gradient_is_exact_through_groupnorm_and_wrong_through_batch_statistics(
    norm, vmap_exact
):
    """Why a GroupNorm backbone without side-by-side rules keeps vmap and a BatchNorm one runs task by task
    (``meta_learning.VMAP_SECOND_ORDER_WRONG``): float64 meta-gradients of both loops compared."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), norm(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 3))
    model = model.double()
    x = lambda: torch.randn(3, 6, 1, 6, 6, dtype=torch.float64)  # [tasks, ways*shots, C, H, W]
    y = lambda: torch.randint(0, 3, (3, 6))
    episodes = Episodes(support_x=x(), support_y=y(), query_x=x(), query_y=y(), ways=3)
    vmapped, one_by_one = _meta_gradient(model, episodes, False), _meta_gradient(model, episodes, True)
    relative = float((vmapped - one_by_one).abs().max() / one_by_one.abs().max())
    assert (relative < 1e-12) == vmap_exact, relative
    assert meta_learning._normalises(model) == (not vmap_exact)


class RefusesFoldedTasks(nn.Module):
    """A plugin's model whose forward checks its input's channels, so it raises under the side-by-side rules
    (which fold tasks into channels)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.body, self.head = inner.body, inner.head

    def forward(self, x):
        if x.shape[1] != 1:
            raise ValueError(f"expected 1 channel, got {x.shape[1]}\nsecond line of the message")
        return self.head(self.body(x))


@pytest.mark.realdata
@pytest.mark.parametrize("asked", ["auto", "fast"])
def test_a_model_that_breaks_the_side_by_side_check_falls_back_in_one_line(data_root, tmp_path, capsys, asked):
    plugins = load_plugins()
    config = small_config(plugins, data_root, algo="maml", iterations=2, log_every=1, val_every=2, inner_loop=asked)
    trainer = Trainer(config, plugins, tmp_path / "run", download=False, progress=False)
    trainer.model = RefusesFoldedTasks(trainer.model)
    chosen = trainer.choose_inner_loop()
    why = "no fast path (its forward raised ValueError under the side-by-side rules: expected 1 channel, got 2)"
    if asked == "auto":
        assert chosen == {"path": "generic", "how": f"auto: {why}"}
    else:
        assert chosen["how"] == f"--inner-loop fast; {why.replace('no fast', 'no side-by-side fast')}"
        assert chosen["runs"].startswith("task by task")  # Conv4's BatchNorm: vmap's meta-gradient is wrong
    assert trainer.train()["inner_loop"] == chosen  # trains and tests through the fallback
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "side-by-side" in line]) == 1 and "Traceback" not in err


def test_a_groupnorm_model_without_rules_runs_maml_under_vmap():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 16, 5))
    images = torch.randn(2, 5, 1, 6, 6)
    assert meta_learning.inner_loop_route(model, Engine(fast=True), images) == (
        "vmap (no side-by-side fast path for this model)"
    )
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(), nn.Linear(64, 5))
    assert meta_learning.inner_loop_route(bn, Engine(fast=True), images) == "side by side"
    assert meta_learning.inner_loop_route(bn, Engine(fast=False), images) == "vmap"
