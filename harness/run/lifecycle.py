"""One run's life, the same for image and meta-RL runs: directory, metrics, checkpoints, stops, summary.

:class:`RunLifecycle` owns what every run does the same way, each with its lifecycle hook
(``harness.plugin.hookspecs``): the run directory (created, locked, named in interrupt messages),
``config.json`` (written at every start, so a resumed run's extended iterations are in it),
``metrics.jsonl`` (``on_metrics``), checkpoints (periodic ones first, then ``checkpoint.pt``;
``best.pt``; ``on_checkpoint`` for each), clean stops (``--time-limit``, signals: checkpoint,
then :class:`harness.run.stopping.RunStopped`), the non-finite stop and the full-disk message
(both naming the last good checkpoint), the progress bar, and ``summary.json``
(``on_run_start`` / ``on_run_end``), and the experiment trackers of ``--report-to`` (``harness.run.trackers``),
which see the same config, rows and summary. A trainer keeps only what is its own: its step, the
state it checkpoints, and its evaluation (``harness.run.training.Trainer``,
``harness.rl.training.RLTrainer``).

Under ``torchrun`` only the main rank writes (``is_main``); the others run the same calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import NonFiniteLossError
from harness.run import stopping
from harness.run.files import DiskFullError, MetricsLog, load_torch, save_torch, write_json
from harness.run.rundir import prepare_run_dir
from harness.run.stopping import RunStopped, StopConditions
from harness.run.trackers import RunTrackers


class RunLifecycle:
    def __init__(
        self,
        plugins,
        run_dir: Path,
        iterations: int,
        checkpoint_every: int,
        description: str,
        *,
        is_main: bool = True,
        progress: bool = True,
        stop: StopConditions | None = None,
        report_to: list[str] | None = None,
    ):
        self.plugins, self.iterations, self.checkpoint_every = plugins, iterations, checkpoint_every
        self.description, self.is_main, self.progress = description, is_main, progress
        self.stop = stop or StopConditions(signals=False)
        self.run_dir = prepare_run_dir(run_dir, lock=is_main)
        stopping.active_run_dir = self.run_dir
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self.trackers = RunTrackers(plugins.trackers, self.run_dir, report_to) if is_main else None
        self._bar = None

    def _notify(self, hook: str, **kwargs) -> None:
        if self.is_main:
            self.plugins.notify(hook, run_dir=str(self.run_dir), **kwargs)

    # -- the run -------------------------------------------------------------------------------

    @contextmanager
    def running(self, config: dict, step: int) -> Iterator[None]:
        """Around the training loop: stop signals and deadline, ``on_run_start``, the progress bar, and a
        full disk turned into one line naming the checkpoint to resume from."""
        if self.is_main:
            write_json(self.run_dir / "config.json", config)  # the resolved config, as this start runs it
        self._notify("on_run_start", config=config)
        if self.trackers is not None:
            self.trackers.start(config, step)
        if self.progress and self.is_main:
            from tqdm import tqdm

            self._bar = tqdm(total=self.iterations, initial=step, desc=self.description, unit="it", dynamic_ncols=True)
        try:
            with self.stop:
                yield
        except DiskFullError as exc:
            raise DiskFullError(
                f"{exc}; {self.kept()}; free space, then continue with harness run --resume {self.run_dir}"
            ) from None
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if self.trackers is not None:
                self.trackers.close()  # after finish() there is nothing left to close

    def advanced(self, shown: dict[str, str]) -> None:
        """One iteration done: the progress bar moves and shows ``shown`` (no placeholders: leave unknowns out)."""
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(shown)

    def log(self, row: dict[str, Any]) -> None:
        if self.is_main:
            self.metrics.append(row)
            self._notify("on_metrics", step=row["step"], row=row)
            if self.trackers is not None:
                self.trackers.log(row)

    def truncate_metrics(self, step: int) -> None:
        """Forget rows after ``step`` (recomputed on resume; -1: a start that never checkpointed)."""
        if self.is_main:
            self.metrics.truncate_after(step)

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self, step: int, state: dict) -> None:
        """The periodic checkpoint first (``--checkpoint-every``), then ``checkpoint.pt``: a kill between
        the two leaves ``checkpoint.pt`` at an earlier step, so the resumed run passes this step again
        and writes the periodic one; the other order would lose it."""
        if not self.is_main:
            return
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            periodic = self.run_dir / "checkpoints" / f"step-{step:07d}.pt"
            save_torch(periodic, state)
            self._notify("on_checkpoint", step=step, path=str(periodic))
        latest = self.run_dir / "checkpoint.pt"
        save_torch(latest, state)
        self._notify("on_checkpoint", step=step, path=str(latest))

    def save_best(self, step: int, state: dict) -> None:
        if self.is_main:
            best = self.run_dir / "best.pt"
            save_torch(best, state)
            self._notify("on_checkpoint", step=step, path=str(best))

    def kept(self) -> str:
        """Which checkpoint a failed run leaves to resume from (written atomically, so it is whole)."""
        saved = self.run_dir / "checkpoint.pt"
        if not saved.exists():
            return "no checkpoint was written yet"
        return f"the last good checkpoint is step {load_torch(saved)['step']} ({saved})"

    # -- ends ----------------------------------------------------------------------------------

    def stop_if_asked(self, step: int, next_seconds: float, state: Callable[[], dict]) -> None:
        """Checkpoint and raise ``RunStopped`` when a signal came or ``next_seconds`` more would pass the deadline."""
        reason = self.stop.should_stop(next_seconds)
        if reason:
            self.checkpoint(step, state())
            raise RunStopped(self.run_dir, step, self.iterations, reason)

    def non_finite(self, what: str) -> NonFiniteLossError:
        """The error that stops a run whose loss or gradient is not finite, naming the checkpoint kept."""
        return NonFiniteLossError(f"{what}; training stopped, {self.kept()}")

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        write_json(self.run_dir / "summary.json", summary)
        self._notify("on_run_end", summary=summary)
        if self.trackers is not None:
            self.trackers.finish(summary)
        return summary
