"""One run across processes with torchrun: 2 CPU processes (gloo) give the 1-process meta-gradient."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import HANG_SECONDS, REPO, run_cli

COMMON = [
    "--data",
    "omniglot-5w1s",
    "--iterations",
    "2",
    "--meta-batch-size",
    "4",
    "--val-every",
    "0",
    "--test-tasks",
    "4",
    "--log-every",
    "1",
    "--no-progress",
    "--no-download",
]


def torchrun(*args, processes=2):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(processes),
            "--standalone",
            "-m",
            "harness",
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=HANG_SECONDS,
    )


@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_two_processes_train_exactly_like_one(algo, data_root, tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    result = run_cli("run", "--algo", algo, *COMMON, "--data-root", data_root, "--out", single)
    assert result.returncode == 0, result.stderr
    result = torchrun("run", "--algo", algo, *COMMON, "--data-root", data_root, "--out", double)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"{algo} on omniglot-5w1s: test accuracy") == 1  # rank 0 reports, rank 1 is quiet
    one = torch.load(single / "checkpoint.pt", weights_only=False)
    two = torch.load(double / "checkpoint.pt", weights_only=False)
    assert one["step"] == two["step"] == 2
    for name, value in one["model"].items():
        if name.startswith("body.") and name.endswith(".0.bias"):
            # A convolution bias followed by BatchNorm has a gradient of exactly 0 in exact arithmetic;
            # Adam rescales its rounding noise (which depends on the reduction order) into full steps.
            continue
        # Two Adam steps on the averaged second-order meta-gradient land on the same weights. Adam's first
        # steps move a weight by about lr * sign(gradient), so the odd weight whose meta-gradient is rounding
        # noise (the tasks are split across processes, so reductions run in another order) may land up to
        # two steps away; a wrongly averaged meta-gradient (a task lost or counted twice) moves most weights.
        off = ~torch.isclose(value, two["model"][name], atol=1e-5, rtol=1e-4)
        assert off.sum() <= max(1, value.numel() // 10_000), (name, int(off.sum()))
        assert (value - two["model"][name]).abs().max() <= 2 * 1e-3 * 1.01, name  # two Adam steps of lr 1e-3
    rows = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    rows_two = [json.loads(line) for line in (double / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(rows_two) == 2
    for row, row_two in zip(rows, rows_two):  # per-rank losses are averaged into the whole batch's
        assert row_two["loss"] == pytest.approx(row["loss"], rel=1e-5)


def test_uneven_meta_batch_is_a_clear_error(data_root, tmp_path):
    result = torchrun(
        "run", "--algo", "anil", *COMMON, "--meta-batch-size", "3", "--data-root", data_root, "--out", tmp_path / "run"
    )
    assert result.returncode != 0
    assert (
        "harness: error: meta-batch of 3 tasks does not split evenly across 2 processes; "
        "choose --meta-batch-size divisible by --nproc-per-node"
    ) in result.stderr
