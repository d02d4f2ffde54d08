"""Checks at every load: a recorded sha256 must match, and a checkpoint must belong to the run it sits in."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from conftest import REPO, run_cli

FLAGS = ["--algo", "anil", "--data", "omniglot-5w1s", "--meta-batch-size", "2", "--iterations", "4"]
FLAGS += ["--val-every", "2", "--val-tasks", "4", "--test-tasks", "8", "--no-progress", "--no-download"]
RELEASED = REPO / "results" / "reproduce" / "runs" / "anil-omniglot-20w1s-seed0-4fa624ca1196"


@pytest.fixture(scope="module")
def stopped(data_root, tmp_path_factory):
    """A run stopped at step 2 (a simulated machine, tests only): checkpoint.pt and best.pt, no summary."""
    out = tmp_path_factory.mktemp("integrity") / "run"
    env = {"HARNESS_SIMULATED_SECONDS_PER_ITERATION": "1"}
    result = run_cli("run", *FLAGS, "--time-limit", "3s", "--data-root", data_root, "--out", out, env_extra=env)
    assert result.returncode == 75, result.stderr
    return out


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.realdata
def test_the_released_summary_records_the_checksum_that_sha256sums_lists():
    recorded = json.loads((RELEASED / "summary.json").read_text())["tested_checkpoint"]["sha256"]
    assert recorded == hashlib.sha256((RELEASED / "best.pt").read_bytes()).hexdigest()
    assert (
        f"{recorded}  results/reproduce/runs/{RELEASED.name}/best.pt" in (REPO / "results" / "SHA256SUMS").read_text()
    )


@pytest.mark.realdata
def test_a_flipped_byte_in_a_released_checkpoint_is_refused(data_root, tmp_path):
    copy = tmp_path / RELEASED.name
    shutil.copytree(RELEASED, copy)
    _flip_a_byte(copy / "best.pt")
    result = run_cli("eval", copy, "--evaluator", "nil", "--test-tasks", "4", "--data-root", data_root)
    assert (result.returncode, result.stderr) == (
        2,
        f"harness: error: {copy / 'best.pt'} does not match the sha256 recorded in {copy / 'summary.json'} "
        f"(3c83648b71fd...): the file was damaged or changed after it was recorded; restore it (git checkout, "
        f"or a fresh copy)\n",
    )
    assert not list(copy.glob("eval-nil-*"))


@pytest.mark.realdata
def test_a_checksum_listed_in_sha256sums_above_the_run_is_verified(stopped, data_root, tmp_path):
    root = tmp_path / "project"
    run = root / "results" / "runs" / "run"
    shutil.copytree(stopped, run)
    digest = hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    (root / "results" / "SHA256SUMS").write_text(f"{digest}  results/runs/run/best.pt\n")  # from the root
    evaluate = ["eval", run, "--evaluator", "nil", "--test-tasks", "4", "--data-root", data_root]
    assert run_cli(*evaluate).returncode == 0
    _flip_a_byte(run / "best.pt")
    refused = run_cli(*evaluate)
    assert refused.returncode == 2 and refused.stderr.startswith(
        f"harness: error: {run / 'best.pt'} does not match the sha256 recorded in {root / 'results' / 'SHA256SUMS'}"
    )


@pytest.mark.realdata
@pytest.mark.parametrize("key, value", [("algo", "protonet"), ("data", "omniglot-20w1s")])
def test_a_checkpoint_of_another_run_is_refused(stopped, data_root, tmp_path, key, value):
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    state = torch.load(run / "best.pt", weights_only=True)
    state["config"][key] = value  # as if copied in from a run trained with another algorithm or data set
    torch.save(state, run / "best.pt")
    result = run_cli("eval", run, "--evaluator", "nil", "--test-tasks", "4", "--data-root", data_root)
    own = json.loads((run / "config.json").read_text())[key]
    assert (result.returncode, result.stderr) == (
        2,
        f"harness: error: {run / 'best.pt'} belongs to another run: it was trained with {key} {value!r} "
        f"(the run: {own!r})\n",
    )


@pytest.mark.realdata
def test_resume_refuses_a_config_edited_since_its_checkpoint(stopped, data_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    config = json.loads((run / "config.json").read_text())
    config["algo"], config["inner_lr"] = "maml", 0.05
    (run / "config.json").write_text(json.dumps(config))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    result = run_cli("run", "--resume", run, "--data-root", data_root, "--no-progress")
    assert (result.returncode, result.stderr) == (
        2,
        f"harness: error: {run / 'config.json'} no longer matches the config checkpoint.pt was trained with: "
        f"algo 'maml' (checkpoint: 'anil'), inner_lr 0.05 (checkpoint: 0.4); restore config.json, or start a new run\n",
    )
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before
