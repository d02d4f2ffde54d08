"""End-to-end runs on real Omniglot: learning, resume, bad input, run-directory contents."""

import json
import types

import pytest
import torch
from conftest import run_cli

import harness
from harness.data.taskspec import parse_task_spec
from harness.errors import HarnessError, NonFiniteLossError
from harness.plugin.manager import load_plugins
from harness.run.config import resolve_config
from harness.run.training import Trainer

SMALL = ["--val-tasks", "10", "--test-tasks", "20", "--no-progress", "--no-download"]


def small_config(plugins, data_root, algo="anil", data="omniglot-5w1s", **overrides):
    spec = parse_task_spec(data)
    values = dict(
        iterations=30,
        meta_batch_size=4,
        log_every=5,
        val_every=10,
        val_tasks=8,
        test_tasks=16,
        data_root=str(data_root),
        seed=3,
    )
    values.update(overrides)
    return resolve_config(algo, data, plugins.task_samplers.get(spec.dataset), spec, values)


def test_anil_learns_omniglot_20w1s(data_root, tmp_path):
    """A short CPU run must be far above chance (5 %) on the 423 held-out characters."""
    out = tmp_path / "anil"
    result = run_cli(
        "run",
        "--algo",
        "anil",
        "--data",
        "omniglot-20w1s",
        "--iterations",
        "150",
        "--val-every",
        "75",
        "--val-tasks",
        "20",
        "--test-tasks",
        "100",
        "--no-progress",
        "--no-download",
        "--data-root",
        data_root,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["tasks"] == 100
    assert summary["test"]["accuracy"] > 0.20, summary["test"]  # 4x chance
    assert summary["test"]["ci95"] < 0.05
    config = json.loads((out / "config.json").read_text())
    assert config["inner_lr"] == 0.1 and config["meta_batch_size"] == 16 and config["test_inner_steps"] == 10
    assert "Raghu" in config["sources"]["inner_lr"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "val"] == [75, 150]
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 150 and {"model", "optimizer", "rng", "config"} <= set(state)
    assert "s/iteration" in result.stdout


@pytest.mark.parametrize("algo", ["maml", "fomaml"])
def test_maml_and_fomaml_train_above_chance(algo, data_root, tmp_path):
    plugins = load_plugins()
    config = small_config(
        plugins,
        data_root,
        algo=algo,
        iterations=40,
        meta_batch_size=8,
        inner_lr=0.4,
        inner_steps=1,
        test_inner_steps=3,
        val_every=40,
        test_tasks=60,
    )
    summary = Trainer(config, plugins, tmp_path / algo, download=False, progress=False).train()
    assert summary["test"]["accuracy"] > 0.35, summary["test"]  # chance is 20 %


def test_resume_ends_with_the_same_numbers(data_root, tmp_path, monkeypatch):
    plugins = load_plugins()
    config = small_config(plugins, data_root)
    reference = Trainer(config, plugins, tmp_path / "straight", download=False, progress=False).train()

    interrupted = Trainer(config, plugins, tmp_path / "killed", download=False, progress=False)
    calls = {"n": 0}
    original = interrupted.samplers["train"].sample

    def dies_at_step_23(num_tasks, rng):
        calls["n"] += 1
        if calls["n"] == 23:
            raise KeyboardInterrupt
        return original(num_tasks, rng)

    interrupted.samplers["train"].sample = dies_at_step_23
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["step"] == 20

    resumed = Trainer(config, plugins, tmp_path / "killed", download=False, progress=False)
    resumed.restore()
    summary = resumed.train()
    assert summary["test"] == reference["test"]
    assert summary["best_val"] == reference["best_val"]
    strip = lambda path: [
        {k: v for k, v in json.loads(l).items() if k != "train_seconds"} for l in path.read_text().splitlines()
    ]
    assert strip(tmp_path / "killed" / "metrics.jsonl") == strip(tmp_path / "straight" / "metrics.jsonl")


def test_resume_through_the_cli(data_root, tmp_path):
    out = tmp_path / "run"
    first = run_cli(
        "run",
        "--algo",
        "anil",
        "--data",
        "omniglot-5w1s",
        "--iterations",
        "10",
        "--val-every",
        "5",
        "--log-every",
        "5",
        "--meta-batch-size",
        "2",
        *SMALL,
        "--data-root",
        data_root,
        "--out",
        out,
    )
    assert first.returncode == 0, first.stderr
    summary = (out / "summary.json").read_bytes()
    again = run_cli("run", "--resume", out, "--no-progress", "--no-download", "--data-root", data_root)
    assert again.returncode == 2 and "is finished (10 iterations, tested; summary.json)" in again.stderr
    extended = run_cli(
        "run", "--resume", out, "--iterations", "15", "--no-progress", "--no-download", "--data-root", data_root
    )
    assert extended.returncode == 0, extended.stderr
    assert (out / "summary.json").read_bytes() != summary
    assert json.loads((out / "summary.json").read_text())["iterations"] == 15


def nan_plugin():
    module = types.ModuleType("nan_plugin")

    class NaNAfterFour:
        name = "nan-after-4"
        description = "ANIL that reports a NaN loss at step 5"

        def __init__(self):
            self.calls = 0
            self.inner = load_plugins().algorithms.get("anil")

        def train_step(self, model, episodes, hp):
            self.calls += 1
            out = self.inner.train_step(model, episodes, hp)
            return {**out, "loss": float("nan")} if self.calls == 5 else out

        def predict(self, model, episodes, hp):
            return self.inner.predict(model, episodes, hp)

    @harness.hookimpl
    def register_algorithms(registry):
        registry.add(NaNAfterFour())

    module.register_algorithms = register_algorithms
    return module


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path):
    plugins = load_plugins(extra_plugins=(nan_plugin(),))
    config = small_config(plugins, data_root, algo="nan-after-4", log_every=2, val_every=0)
    trainer = Trainer(config, plugins, tmp_path / "nan", download=False, progress=False)
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train()
    assert str(error.value) == (
        f"non-finite loss or gradient (nan) at step 5; training stopped, the last good checkpoint is step 4 "
        f"({tmp_path / 'nan' / 'checkpoint.pt'})"
    )
    state = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert isinstance(error.value, HarnessError)  # the CLI turns it into one line and exit status 2


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--algo", "nope", "--data", "omniglot-5w1s"],
            "harness: error: unknown algorithm 'nope'; valid algorithms: anil, anil-rl, boil, fomaml, maml, maml++, maml-rl, meta-sgd, multiclass, multitask, nil-train, protonet, random-features, unicorn-maml",
        ),
        (
            ["--algo", "anil", "--data", "omniglot-5x1s"],
            "harness: error: malformed task spec 'omniglot-5x1s': expected <dataset>-<N>w<K>s[<Q>q], e.g. omniglot-20w1s or omniglot-5w5s15q",
        ),
        (
            ["--algo", "anil", "--data", "imagenet21k-5w1s"],
            "harness: error: unknown task sampler 'imagenet21k'; valid task samplers: cifar-fs, cub, fc100, miniimagenet, omniglot, tieredimagenet",
        ),
        (
            ["--algo", "anil", "--data", "omniglot-5w1s", "--backbone", "resnet"],
            "harness: error: unknown backbone 'resnet'; valid backbones: conv4, conv4-pool, resnet12",
        ),
        (
            ["--algo", "anil", "--data", "omniglot-5w1s", "--iterations", "0"],
            "harness: error: --iterations must be at least 1, got 0",
        ),
        (["--algo", "anil"], "harness: error: harness run needs --algo and --data (or --resume RUN_DIR)"),
        (
            ["--algo", "anil", "--data", "omniglot-5w1s", "--iterations", "ten"],
            "harness: error: harness run: argument --iterations: invalid int value: 'ten' (see harness run --help)",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run_cli("run", *args)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.stderr


def test_more_ways_than_classes_via_cli(data_root, tmp_path):
    result = run_cli(
        "run", "--algo", "anil", "--data", "omniglot-2000w1s", *SMALL, "--data-root", data_root, "--out", tmp_path / "r"
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "harness: error: 2000-way tasks need 2000 classes but the Omniglot maml train split has only 1100"
    )


def test_missing_data_via_cli(tmp_path):
    result = run_cli(
        "run",
        "--algo",
        "anil",
        "--data",
        "omniglot-5w1s",
        *SMALL,
        "--data-root",
        tmp_path / "empty",
        "--out",
        tmp_path / "r",
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"harness: error: Omniglot not found: expected {tmp_path / 'empty'}/omniglot/omniglot-py/"
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_unwritable_output_directory(data_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli(
        "run", "--algo", "anil", "--data", "omniglot-5w1s", *SMALL, "--data-root", data_root, "--out", blocker / "run"
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"harness: error: cannot write to output directory {blocker / 'run'}:")


def test_eval_on_a_finished_run_and_bad_run_dir(data_root, tmp_path):
    out = tmp_path / "run"
    first = run_cli(
        "run",
        "--algo",
        "anil",
        "--data",
        "omniglot-5w1s",
        "--iterations",
        "4",
        "--val-every",
        "2",
        "--meta-batch-size",
        "2",
        *SMALL,
        "--data-root",
        data_root,
        "--out",
        out,
    )
    assert first.returncode == 0, first.stderr
    result = run_cli("eval", out, "--test-tasks", "12", "--data-root", data_root, "--no-download")
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "eval-fewshot-num_tasks=12.json").read_text())
    assert saved["rows"][0]["tasks"] == 12 and saved["evaluator"] == "fewshot"
    assert "accuracy %" in result.stdout
    missing = run_cli("eval", tmp_path / "nothing-here")
    assert missing.returncode == 2
    assert (
        missing.stderr.strip() == f"harness: error: {tmp_path / 'nothing-here'} is not a run directory (no config.json)"
    )
    unknown = run_cli("eval", out, "--evaluator", "cka")
    valid = ", ".join(load_plugins().evaluators.names())
    assert unknown.stderr.strip() == f"harness: error: unknown evaluator 'cka'; valid evaluators: {valid}"
