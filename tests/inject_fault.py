"""Run ``harness`` with one fault injected at a precise point: ``python tests/inject_fault.py FAULT harness-args...``.

Faults (``N`` counts writes of that file from 1):

- ``kill-after-first-row``: SIGKILL right after the first ``metrics.jsonl`` row, before any checkpoint;
- ``kill-writing-checkpoint:N``: SIGKILL halfway through writing ``checkpoint.pt`` the N-th time
  (its temporary file is left half-written, as a real kill leaves it);
- ``kill-writing-periodic:N``: the same for the N-th ``checkpoints/step-*.pt``;
- ``kill-in-test``: SIGKILL when the final test starts;
- ``enospc-writing-checkpoint:N``: the N-th write of ``checkpoint.pt`` fails with ENOSPC (a full disk);
- ``kill-in-iteration:N``: SIGKILL in the middle of training iteration N (its batch drawn, its step not taken);
- ``pause-after-step:N``: after the ``metrics.jsonl`` row of step N, create ``RUN_DIR.paused`` beside the run
  directory and wait there (at most 10 minutes) until a stop signal arrives, so that a test's signal lands
  at a known iteration however fast or slow the machine is.

Used by ``tests/test_reliability.py``; a subprocess, so that a kill ends only the run.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import harness.run.files as run_files
import harness.run.stopping as stopping
import harness.run.training as training
from harness.cli import main
from harness.evaluation.fewshot import TEST_TASK_SEED


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str) -> None:
    name, _, count = fault.partition(":")
    target = int(count or 0)
    real_write = run_files._atomic_write
    seen = {"n": 0}

    def matches(path) -> bool:
        if name.endswith("writing-checkpoint"):
            return path.name == "checkpoint.pt"
        return name.endswith("writing-periodic") and path.parent.name == "checkpoints"

    def faulty_write(path, data):
        if matches(path):
            seen["n"] += 1
            if seen["n"] == target:
                if name.startswith("kill"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
                    os.write(fd, data[: len(data) // 2])
                    _kill()
                real_fsync = os.fsync  # the real write path, failing where a full disk fails it

                def disk_full(_fd):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                os.fsync = disk_full
                try:
                    return real_write(path, data)
                finally:
                    os.fsync = real_fsync
        real_write(path, data)

    if name in ("kill-writing-checkpoint", "kill-writing-periodic", "enospc-writing-checkpoint"):
        run_files._atomic_write = faulty_write
    elif name == "kill-after-first-row":
        real_append = run_files.MetricsLog.append

        def append_then_die(self, row):
            real_append(self, row)
            _kill()

        run_files.MetricsLog.append = append_then_die
    elif name == "kill-in-test":
        real_evaluate = training.evaluate

        def evaluate_or_die(algorithm, model, sampler, config, num_tasks, set_seed, device):
            if set_seed == TEST_TASK_SEED:
                _kill()
            return real_evaluate(algorithm, model, sampler, config, num_tasks, set_seed, device)

        training.evaluate = evaluate_or_die
    elif name == "kill-in-iteration":
        real_batch = training.Trainer._training_batch

        def batch_then_die(self, rng=None):
            batch = real_batch(self, rng)
            if self.step + 1 == target:
                _kill()
            return batch

        training.Trainer._training_batch = batch_then_die
    elif name == "pause-after-step":
        _pause_after_step(target)
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def _pause_after_step(target: int) -> None:
    real_append, real_on_signal = run_files.MetricsLog.append, stopping.StopConditions._on_signal
    heard = []

    def on_signal(self, signum, frame):
        heard.append(signum)
        real_on_signal(self, signum, frame)

    def append_then_wait(self, row):
        real_append(self, row)
        if row["step"] == target and row.get("split") == "train":
            run_dir = Path(self.path).parent
            run_dir.with_name(run_dir.name + ".paused").touch()
            deadline = time.monotonic() + 600
            while not heard and time.monotonic() < deadline:
                time.sleep(0.01)  # a signal interrupts the sleep and its handler runs

    stopping.StopConditions._on_signal = on_signal
    run_files.MetricsLog.append = append_then_wait


if __name__ == "__main__":
    install(sys.argv[1])
    raise SystemExit(main(sys.argv[2:]))
