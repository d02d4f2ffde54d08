"""Runs that survive a stop: --time-limit and real signals end a run cleanly, --resume ends identically."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import HANG_SECONDS, REPO, run_cli

from harness.errors import HarnessError
from harness.run.stopping import EXIT_STOPPED, SIMULATED_SECONDS, StopConditions, format_duration, parse_duration

# ANIL, Omniglot 5-way 1-shot, small enough to take a few seconds, long enough to be stopped mid-way.
SHORT = [
    "--algo",
    "anil",
    "--data",
    "omniglot-5w1s",
    "--meta-batch-size",
    "2",
    "--val-every",
    "40",
    "--log-every",
    "10",
    "--val-tasks",
    "5",
    "--test-tasks",
    "10",
    "--no-progress",
    "--no-download",
]


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90m", 5400),
        ("1h30m", 5400),
        ("45s", 45),
        ("5400", 5400),
        ("1.5h", 5400),
        ("2h", 7200),
        ("1m30s", 90),
        (" 10M ", 600),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "90x", "m", "0", "-5m", "1h-30m", "1.2.3s", "30m1h"])
def test_bad_durations_are_refused_with_one_message(text):
    with pytest.raises(HarnessError) as error:
        parse_duration(text)
    assert str(error.value) == (
        f"--time-limit: cannot read {text!r} as a duration; use e.g. 90m, 1h30m, 45s or 5400 (seconds)"
    )


def test_format_duration():
    assert [format_duration(s) for s in (5400, 90, 3661, 0.4)] == ["1h30m", "1m30s", "1h1m1s", "0s"]


def test_deadline_counts_the_next_iteration():
    stop = StopConditions(time_limit=10.0, signals=False)
    assert stop.should_stop(1.0) is None
    assert stop.should_stop(10.0) == "time limit 10s reached"
    assert stop.should_stop(0.0) == "time limit 10s reached"  # once decided, it stays


def test_signal_handlers_are_restored():
    previous = signal.getsignal(signal.SIGTERM)
    with StopConditions() as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._on_signal
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.should_stop() == "received SIGUSR1"
    assert signal.getsignal(signal.SIGTERM) == previous


def test_malformed_time_limit_is_one_line_and_exit_2(tmp_path):
    result = run_cli("run", *SHORT, "--iterations", "5", "--time-limit", "ninety", "--out", tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr == (
        "harness: error: --time-limit: cannot read 'ninety' as a duration; use e.g. 90m, 1h30m, 45s or 5400 (seconds)\n"
    )
    assert not (tmp_path / "run").exists()


def _numbers(run_dir):
    """What must not depend on where the run was stopped: test result, best validation, metrics (no timings)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [
        {k: v for k, v in json.loads(line).items() if k != "train_seconds"}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    return summary["test"], summary["best_val"], summary["iterations"], rows


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    result = run_cli("run", *SHORT, "--iterations", "400", "--data-root", data_root, "--out", out)
    assert result.returncode == 0, result.stderr
    return _numbers(out)


def _resume(out, data_root):
    result = run_cli("run", "--resume", out, "--no-progress", "--no-download", "--data-root", data_root)
    assert result.returncode == 0, result.stderr
    return _numbers(out)


@pytest.mark.realdata
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_mid_training_stops_cleanly_and_resumes_identically(signum, uninterrupted, data_root, tmp_path):
    """The run waits after its step-50 row until the signal arrives (tests/inject_fault.py): the signal lands
    at iteration 50 on any machine, and the run stops at the next iteration boundary."""
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "inject_fault.py"), "pause-after-step:50", "run", *SHORT]
        + ["--iterations", "400", "--data-root", str(data_root), "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    paused = tmp_path / "run.paused"
    while not paused.exists():
        assert process.poll() is None, process.communicate()  # ended without reaching step 50
        time.sleep(0.01)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=HANG_SECONDS)
    assert process.returncode == EXIT_STOPPED, stderr
    name = signal.Signals(signum).name
    started, stderr = stderr.split("\n", 1)  # the one line that names the run directory, then the stop
    assert started == (
        "harness: training anil on omniglot-5w1s to 400 iterations (device cpu; inner loop fast: auto: the model "
        f"has fast paths); run directory {out}"
    )
    assert stderr == (
        f"harness: stopped at step 50 of 400 (received {name}); checkpoint written; "
        f"continue with: harness run --resume {out}\n"
    )
    assert not (out / "summary.json").exists()
    assert _resume(out, data_root) == uninterrupted


@pytest.mark.realdata
def test_time_limit_stops_at_the_same_iteration_on_any_machine_and_resumes_identically(
    uninterrupted, data_root, tmp_path
):
    """On a simulated machine where every iteration takes 0.25 s (HARNESS_SIMULATED_SECONDS_PER_ITERATION),
    a 25 s limit leaves room for 99 iterations and a 10 s one for 39 more, whatever the real speed."""
    out, simulated = tmp_path / "run", {SIMULATED_SECONDS: "0.25"}
    stopped = run_cli(
        "run",
        *SHORT,
        "--iterations",
        "400",
        "--time-limit",
        "25s",
        "--data-root",
        data_root,
        "--out",
        out,
        env_extra=simulated,
    )
    assert stopped.returncode == EXIT_STOPPED, stopped.stderr
    assert stopped.stderr.endswith(
        f"harness: stopped at step 99 of 400 (time limit 25s reached); checkpoint written; "
        f"continue with: harness run --resume {out}\n"
    )
    assert not (out / "summary.json").exists()
    again = run_cli(
        "run",
        "--resume",
        out,
        "--time-limit",
        "10s",
        "--no-progress",
        "--no-download",
        "--data-root",
        data_root,
        env_extra=simulated,
    )
    assert again.returncode == EXIT_STOPPED, again.stderr  # a resumed run honours a new limit too
    assert "harness: stopped at step 138 of 400 (time limit 10s reached)" in again.stderr
    assert _resume(out, data_root) == uninterrupted


@pytest.mark.realdata
def test_a_real_time_limit_stops_a_run_no_machine_can_finish_in_time(data_root, tmp_path):
    """The wall clock itself: a million iterations (about 3 h on this project's 2-core machine at 0.01 s
    each, and longer than the limit on a machine a thousand times faster) cannot finish within 3 s."""
    out = tmp_path / "run"
    stopped = run_cli(
        "run",
        *SHORT,
        "--iterations",
        "1000000",
        "--val-every",
        "0",
        "--time-limit",
        "3s",
        "--data-root",
        data_root,
        "--out",
        out,
    )
    assert stopped.returncode == EXIT_STOPPED, stopped.stderr
    last = stopped.stderr.splitlines()[-1]
    assert last.startswith("harness: stopped at step ") and last.endswith(
        f" of 1000000 (time limit 3s reached); checkpoint written; continue with: harness run --resume {out}"
    )
    step = int(last.split()[4])
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == step
    assert not (out / "summary.json").exists()


def test_a_simulated_machine_speed_must_be_positive(monkeypatch):
    monkeypatch.setenv(SIMULATED_SECONDS, "fast")
    with pytest.raises(HarnessError) as error:
        StopConditions(time_limit=1.0, signals=False)
    assert str(error.value) == f"{SIMULATED_SECONDS}: expected seconds > 0, got 'fast'"


def test_a_simulated_deadline_counts_iteration_boundaries(monkeypatch):
    monkeypatch.setenv(SIMULATED_SECONDS, "2")
    stop = StopConditions(time_limit=7.0, signals=False)
    assert [stop.should_stop(1000.0) for _ in range(3)] == [None, None, None]  # the estimate given is ignored
    assert stop.remaining() == 1.0  # 3 boundaries of 2 s each: one more would end at 8 s
    assert stop.should_stop() == "time limit 7s reached"
