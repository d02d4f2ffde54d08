"""Ending a run cleanly before it is killed: ``--time-limit`` and SIGTERM / SIGINT / SIGUSR1.

A cluster scheduler ends a job at its time limit (SLURM sends SIGTERM, or the
signal named by ``--signal``, shortly before SIGKILL); a preemptible instance
gets SIGTERM before it goes away. Both lose everything since the last
checkpoint unless the run stops at the next iteration boundary and writes one.
:class:`StopConditions` watches for those signals and for a wall-clock
deadline; the trainers ask it between iterations, write their checkpoint
atomically and raise :class:`RunStopped`, which the CLI turns into one line with
the exact resume command and exit status :data:`EXIT_STOPPED`.

    harness run --algo anil --data omniglot-20w1s --time-limit 90m     # SLURM job of 1 h 40 min
    harness run --resume RUN_DIR --time-limit 90m                      # the next job continues it

A second SIGINT (Ctrl-C twice) interrupts at once, keeping the last checkpoint.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

from harness.errors import HarnessError

#: Exit status of a run that stopped cleanly and can be resumed (sysexits.h EX_TEMPFAIL: "try again later").
EXIT_STOPPED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

#: Tests only: a simulated machine on which every iteration takes this many seconds. The stop's clock then
#: advances by that much per iteration boundary instead of reading the wall clock, so a ``--time-limit``
#: fires at an iteration fixed by the limit, however fast or slow the machine really is.
SIMULATED_SECONDS = "HARNESS_SIMULATED_SECONDS_PER_ITERATION"

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """``"90m"``, ``"1h30m"``, ``"45s"``, ``"1.5h"`` or plain seconds (``"5400"``) -> seconds (> 0)."""
    value = str(text).strip().lower()
    seconds = None
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value)
        if match and value and any(match.groups()):
            seconds = sum(float(part) * unit for part, unit in zip(match.groups(), _UNITS.values()) if part)
    if seconds is None or seconds <= 0:
        raise HarnessError(
            f"--time-limit: cannot read {text!r} as a duration; use e.g. 90m, 1h30m, 45s or 5400 (seconds)"
        )
    return seconds


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v) or "0s"


#: The run directory this process trains in, once its trainer is set up (for the message of an interrupted run).
active_run_dir: Path | None = None


class Terminated(BaseException):
    """SIGTERM outside the training loop (while data loads, while a run is tested): end with one line."""


def terminate_outside_training(signum, _frame) -> None:
    raise Terminated(signal.Signals(signum).name)


def interrupted_message(how: str) -> str:
    """One line for a run ended by Ctrl-C or SIGTERM between checkpoints: what is kept and how to go on."""
    from pathlib import Path

    run_dir = active_run_dir
    if run_dir is None or not Path(run_dir).is_dir():
        return f"{how} before training started; nothing was written"
    checkpoint = Path(run_dir) / "checkpoint.pt"
    if not checkpoint.exists():
        return f"{how} before the first checkpoint of {run_dir}; start the same command again"
    try:
        from harness.run.files import load_torch

        step = f"step {load_torch(checkpoint)['step']}"
    except (HarnessError, KeyError, TypeError):
        step = "the last checkpoint"
    return f"{how}; {step} is kept; continue with: harness run --resume {run_dir}"


class RunStopped(Exception):
    """A run ended early on purpose; its checkpoint is written and ``harness run --resume`` continues it."""

    def __init__(self, run_dir, step: int, iterations: int, reason: str, resume: str | None = None):
        self.run_dir, self.step, self.iterations, self.reason = run_dir, step, iterations, reason
        self.resume = resume or f"harness run --resume {run_dir}"
        where = "training finished, the test remains" if step >= iterations else f"step {step} of {iterations}"
        super().__init__(f"stopped at {where} ({reason}); checkpoint written; continue with: {self.resume}")

    def with_message(self, message: str) -> RunStopped:
        self.args = (message,)
        return self


class StopConditions:
    """A wall-clock deadline and stop signals, polled between iterations.

    Use as a context manager around the training loop: it installs handlers for
    :data:`STOP_SIGNALS` (with ``signals=True``, in the main thread only;
    otherwise only the deadline applies) and restores the previous handlers on exit.
    """

    def __init__(self, time_limit: float | None = None, signals: bool = True):
        self.time_limit, self.signals = time_limit, signals
        self.simulated = _simulated_seconds()
        self._boundaries = 0  # iteration boundaries seen (the simulated clock's only input)
        self.started = self._now()
        self.deadline = self.started + time_limit if time_limit else None
        self.reason: str | None = None
        self.listeners: list = []  # called with the signal number (harness reproduce forwards it to its runs)
        self._previous: dict = {}

    def _now(self) -> float:
        return time.monotonic() if self.simulated is None else self._boundaries * self.simulated

    def __enter__(self) -> StopConditions:
        if self.signals and threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum, _frame) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: do not wait for the iteration to end
        self.reason = f"received {signal.Signals(signum).name}"
        for listener in self.listeners:
            listener(signum)

    def should_stop(self, next_seconds: float = 0.0) -> str | None:
        """Why to stop now, or None: a signal arrived, or ``next_seconds`` more would pass the deadline.

        Called at every iteration boundary (on a simulated machine each call is one iteration).
        """
        if self.simulated is not None:
            next_seconds = self.simulated
        if self.reason is None and self.deadline is not None and self._now() + next_seconds >= self.deadline:
            self.time_is_up()
        self._boundaries += 1
        return self.reason

    def time_is_up(self) -> None:
        """Stop for the time limit from now on (also when a run this process started stopped for it)."""
        if self.reason is None and self.time_limit is not None:
            self.reason = f"time limit {format_duration(self.time_limit)} reached"

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - self._now())


def _simulated_seconds() -> float | None:
    text = os.environ.get(SIMULATED_SECONDS)
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise HarnessError(f"{SIMULATED_SECONDS}: expected seconds > 0, got {text!r}")
    return seconds
