"""Executing planned runs: ``harness run`` subprocesses on this machine, or Ray tasks, under one time limit.

``harness reproduce`` plans run directories (``harness.reproduce.planning``) and hands the
unfinished ones here. Every run is the same ``harness run`` command line in both
executors, logged to ``<run_dir>.log``; a run stopped by its time limit or a
forwarded signal exits with ``EXIT_STOPPED`` and is resumed by the next call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from harness.errors import HarnessError
from harness.run.stopping import EXIT_STOPPED, StopConditions


class PlannedRun(Protocol):
    """What an executor needs of a run to train (``harness.reproduce.planning.PlannedRun`` has it)."""

    run_dir: Path
    skipped: str | None

    @property
    def done(self) -> bool: ...

    @property
    def lengthen_to(self) -> int | None: ...

    def command(
        self, data_root: str | None, time_limit: float | None = None, run_flags: tuple[str, ...] = ()
    ) -> list[str]: ...


def execute(command: list[str], log: str, threads: int, children: set | None = None) -> int:
    """Run one ``harness`` command, output to ``log``; used by both executors.

    The child gets its own session, so that a terminal's Ctrl-C reaches it once, forwarded by
    :func:`run_all` (as a second SIGINT it would mean "interrupt at once").
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with open(log, "a") as handle:
        child = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_stop_when_dies(os.getpid()),
        )
        if children is not None:
            children.add(child)
        try:
            return child.wait()
        finally:
            if children is not None:
                children.discard(child)


def _stop_when_dies(parent: int):
    """For the child, before it runs: SIGTERM when ``parent`` (``harness reproduce``) dies, however it dies
    (even SIGKILL), so that its runs checkpoint and stop instead of training on as orphans (Linux
    ``PR_SET_PDEATHSIG``; a parent that died before the call is caught by its pid)."""

    def arm() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)

    return arm


PR_SET_PDEATHSIG = 1


def run_all(
    runs: Sequence[PlannedRun],
    data_root: str | None,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    stop: StopConditions | None = None,
    run_flags: tuple[str, ...] = (),
) -> tuple[list[str], int]:
    """Train every run that is not done (or skipped); returns one line per failed run and the number stopped.

    With ``stop`` (``harness reproduce --time-limit``), each run gets the time that is left as its
    own ``--time-limit``, runs not started when it is spent stay unstarted, and SIGTERM / SIGINT /
    SIGUSR1 are forwarded to the running ones (local executor), which checkpoint and exit with
    :data:`EXIT_STOPPED`; the next ``harness reproduce`` resumes them. ``run_flags`` go to every
    ``harness run`` (``--report-to``). A finished run that its budget's ``until_plateau`` lengthens
    (``harness.reproduce.until_plateau``) is run on until done (Ray: one step each ``harness reproduce``).
    """
    todo, seen = [], set()
    for run in runs:
        if not run.done and not run.skipped and run.run_dir not in seen:
            seen.add(run.run_dir)
            todo.append(run)
    stop = stop or StopConditions(signals=False)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    for run in todo:
        run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    children: set = set()
    stop.listeners.append(lambda signum: [child.send_signal(signum) for child in list(children)])

    def launch(run: PlannedRun) -> int:
        code, targets = 0, set()  # targets: lengthened to each at most once (until_plateau)
        while code == 0 and not run.done and run.lengthen_to not in targets:
            if stop.should_stop(1.0):
                return EXIT_STOPPED  # not started (or not lengthened): nothing to checkpoint
            targets.add(run.lengthen_to)
            code = execute(
                run.command(data_root, stop.remaining(), run_flags), str(run.run_dir) + ".log", threads, children
            )
        if code == EXIT_STOPPED:
            stop.time_is_up()  # it stopped because one more iteration would not fit: nor would another run
        return code

    with stop:
        if executor == "ray":
            if stop.should_stop(1.0):
                codes = [EXIT_STOPPED] * len(todo)
            else:
                codes = run_on_ray(
                    [(run.command(data_root, stop.remaining(), run_flags), str(run.run_dir) + ".log") for run in todo],
                    address,
                    threads,
                )
        elif executor == "local":
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                codes = list(pool.map(launch, todo))
        else:
            raise HarnessError(f"unknown executor {executor!r}; executors: local, ray")
    failures = [failure(run, code) for run, code in zip(todo, codes) if code not in (0, EXIT_STOPPED)]
    return failures, sum(code == EXIT_STOPPED for code in codes)


def failure(run: PlannedRun, code: int) -> str:
    """One line for a run that failed: its error line (e.g. who holds its directory) and its log."""
    log = Path(f"{run.run_dir}.log")
    errors = (
        [line for line in log.read_text().splitlines() if line.startswith("harness: error: ")] if log.exists() else []
    )
    said = f": {errors[-1].removeprefix('harness: error: ')}" if errors else ""
    return f"{run.run_dir} failed (exit {code}){said}; log: {log}"


def run_on_ray(jobs, address: str | None, threads: int) -> list[int]:
    """Each run a Ray task (one GPU each where the cluster has GPUs), same command as the local executor."""
    try:
        import ray
    except ImportError:
        raise HarnessError("--executor ray needs Ray: pip install 'feature-reuse-harness[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False) if address else ray.init(
            num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False
        )
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=threads, num_gpus=gpus)(execute)
    return ray.get([task.remote(command, log, threads) for command, log in jobs])
