"""A run directory belongs to one run: no silent overwrite, no two writers, no silently ignored flags on --resume."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import HANG_SECONDS, run_cli

from harness.run.rundir import held_by, lock_holder, prepare_run_dir, run_state
from harness.run.stopping import SIMULATED_SECONDS

FLAGS = [
    "--algo",
    "anil",
    "--data",
    "omniglot-5w1s",
    "--meta-batch-size",
    "2",
    "--val-every",
    "5",
    "--log-every",
    "5",
    "--val-tasks",
    "4",
    "--test-tasks",
    "8",
    "--no-progress",
    "--no-download",
]


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run_cli("run", *FLAGS, "--iterations", "10", "--data-root", data_root, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def _files(run_dir):
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}


@pytest.mark.realdata
def test_a_finished_run_is_not_overwritten(finished, data_root):
    before = _files(finished)
    result = run_cli("run", *FLAGS, "--iterations", "10", "--seed", "4", "--data-root", data_root, "--out", finished)
    assert result.returncode == 2
    assert result.stderr == (
        f"harness: error: {finished} already holds a run (finished); continue it with "
        f"--resume {finished}, or choose another --out\n"
    )
    assert _files(finished) == before


@pytest.mark.realdata
@pytest.mark.parametrize(
    "flags, named",
    [
        (["--seed", "5"], "--seed"),
        (["--inner-lr", "0.9", "--seed", "5"], "--seed, --inner-lr"),
        (["--algo", "maml"], "--algo"),
    ],
)
def test_resume_refuses_flags_it_would_ignore(finished, data_root, flags, named):
    before = _files(finished)
    result = run_cli("run", "--resume", finished, *flags, "--data-root", data_root, "--no-progress")
    assert result.returncode == 2
    assert result.stderr == (
        f"harness: error: a resumed run keeps its config: {named} cannot be changed; "
        f"only --iterations (to extend it), --device and --data-root can\n"
    )
    assert _files(finished) == before


@pytest.mark.realdata
def test_resume_can_extend_a_run_but_not_shorten_it(data_root, tmp_path):
    out = tmp_path / "run"
    assert run_cli("run", *FLAGS, "--iterations", "10", "--data-root", data_root, "--out", out).returncode == 0
    shorter = run_cli("run", "--resume", out, "--iterations", "5", "--data-root", data_root, "--no-progress")
    assert shorter.returncode == 2
    assert shorter.stderr == (
        "harness: error: --iterations 5 with --resume: the run was set to 10; it can be extended, not shortened\n"
    )
    longer = run_cli("run", "--resume", out, "--iterations", "15", "--data-root", data_root, "--no-progress")
    assert longer.returncode == 0, longer.stderr
    assert json.loads((out / "summary.json").read_text())["iterations"] == 15
    config = json.loads((out / "config.json").read_text())
    assert config["iterations"] == 15 and config["sources"]["iterations"] == "command line (extended on --resume)"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 5, 10, 10, 15, 15]  # train and validation rows, none repeated


@pytest.mark.realdata
def test_two_processes_cannot_train_in_one_directory(data_root, tmp_path):
    out = tmp_path / "busy"
    prepare_run_dir(out, lock=True)  # this test process holds the lock, as a running `harness run` would
    result = run_cli("run", *FLAGS, "--iterations", "5", "--data-root", data_root, "--out", out)
    assert result.returncode == 2
    assert result.stderr == (
        f"harness: error: {out} is in use by another harness process ({lock_holder()}); "
        f"wait for it to end or choose another --out\n"
    )
    assert not (out / "config.json").exists()


@pytest.mark.realdata
def test_a_start_that_never_checkpointed_starts_over_without_duplicate_rows(data_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"step": 5, "split": "val", "accuracy": 0.1}\n')  # killed before checkpoint.pt
    (out / "checkpoints").mkdir()
    leftovers = [out / ".checkpoint.pt.k1ll3d", out / ".best.pt.x7", out / "checkpoints" / ".step-0000005.pt.q2"]
    for leftover in leftovers:  # half-written temporary files of the killed writer
        leftover.write_bytes(b"\0" * 100)
    result = run_cli("run", *FLAGS, "--iterations", "5", "--data-root", data_root, "--out", out)
    assert result.returncode == 0, result.stderr
    assert not any(leftover.exists() for leftover in leftovers)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], row["split"]) for row in rows] == [(5, "train"), (5, "val")]


def _numbers(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows], summary["test"]


@pytest.mark.realdata
def test_resume_continues_from_the_newest_periodic_checkpoint_when_checkpoint_pt_is_gone(data_root, tmp_path):
    periodic = [*FLAGS, "--iterations", "15", "--checkpoint-every", "5", "--data-root", data_root]
    straight = tmp_path / "straight"
    assert run_cli("run", *periodic, "--out", straight).returncode == 0
    out = tmp_path / "run"  # stopped at step 12 on a simulated machine (1 s per iteration, a 13 s limit)
    stopped = run_cli("run", *periodic, "--out", out, "--time-limit", "13s", env_extra={SIMULATED_SECONDS: "1"})
    assert stopped.returncode == 75 and "stopped at step 12 of 15" in stopped.stderr, stopped.stderr
    (out / "checkpoint.pt").unlink()
    resumed = run_cli("run", "--resume", out, "--data-root", data_root, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.startswith(
        f"harness: continuing from {out / 'checkpoints' / 'step-0000010.pt'} (step 10), the newest checkpoint\n"
    )
    assert _numbers(out) == _numbers(straight)  # steps 11-15 recomputed, no row lost or repeated


@pytest.mark.realdata
def test_resume_refuses_a_finished_run_and_one_whose_checkpoints_are_gone(finished, data_root, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    before = _files(run)
    again = run_cli("run", "--resume", run, "--data-root", data_root, "--no-progress")
    assert (again.returncode, again.stderr) == (
        2,
        f"harness: error: {run} is finished (10 iterations, tested; summary.json); --resume continues an "
        f"unfinished run, or extends a finished one with --iterations above 10\n",
    )
    (run / "summary.json").unlink()
    (run / "checkpoint.pt").unlink()
    before = _files(run)
    lost = run_cli("run", "--resume", run, "--data-root", data_root, "--no-progress")
    assert (lost.returncode, lost.stderr) == (
        2,
        f"harness: error: {run} logged 10 iterations but keeps no checkpoint to continue from (checkpoint.pt "
        f"or checkpoints/step-N.pt); resuming would start it over and replace its metrics.jsonl and best.pt: "
        f"move them away first, or start a new run\n",
    )
    assert _files(run) == before


@pytest.mark.parametrize(
    "checkpoint, config, state",
    [
        ({"step": 5}, '{"iterations": 10}', "started (step 5 of 10)"),
        ({"step": 12345}, "{not json", "started (step 12,345)"),  # the step is still worth showing
        ({"step": 5}, '["a list"]', "started (step 5)"),
        ({"step": 5}, None, "started (step 5)"),
        ({"weights": torch.zeros(2)}, '{"iterations": 10}', "started"),  # another program's file: no step
        (b"not a checkpoint", '{"iterations": 10}', "started"),
        (None, '{"iterations": 10}', None),  # a config alone holds no run: nothing to continue
    ],
)
def test_run_state_names_the_step_a_continued_run_starts_from(tmp_path, checkpoint, config, state):
    if isinstance(checkpoint, bytes):
        (tmp_path / "checkpoint.pt").write_bytes(checkpoint)
    elif checkpoint is not None:
        torch.save(checkpoint, tmp_path / "checkpoint.pt")
    if config is not None:
        (tmp_path / "config.json").write_text(config)
    assert run_state(tmp_path) == state
    (tmp_path / "summary.json").write_text("{}")
    assert run_state(tmp_path) == "finished"


def test_a_held_run_directory_names_the_process_and_command_that_hold_it(tmp_path):
    script = "import sys; from harness.run.rundir import prepare_run_dir; prepare_run_dir(sys.argv[1], lock=True); "
    script += "print('held', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert held_by(tmp_path) == f"pid {holder.pid}: harness {tmp_path}"
    finally:
        holder.communicate("", timeout=HANG_SECONDS)
    assert held_by(tmp_path) is None  # the kernel released the lock with the process
    prepare_run_dir(tmp_path, lock=True)
    assert held_by(tmp_path) is None  # this process's own lock does not count


def test_a_failed_reproduce_run_is_reported_with_its_error_line(tmp_path):
    from types import SimpleNamespace

    from harness.reproduce.executors import failure

    run = SimpleNamespace(run_dir=tmp_path / "r")
    assert failure(run, 1) == f"{tmp_path / 'r'} failed (exit 1); log: {tmp_path / 'r'}.log"
    (tmp_path / "r.log").write_text(
        "harness: training ...\nharness: error: r is in use by another harness process (pid 7: harness run); wait\n"
    )
    assert failure(run, 2) == (
        f"{tmp_path / 'r'} failed (exit 2): r is in use by another harness process (pid 7: harness run); wait; "
        f"log: {tmp_path / 'r'}.log"
    )
