"""Training a budget's runs until their validation accuracy stops rising (``until_plateau``).

A budget that means "trained to convergence" cannot know in advance how long each algorithm needs. A
definition's budget may say::

    [budgets.converged]
    image = { iterations = 10000, val_every = 250 }
    until_plateau = { every = 2500, max_iterations = 30000 }   # fraction = 0.25 by default

Then a run that finished its iterations is tested with the plateau test
(:func:`harness.evaluation.plateau.plateau_gain`: the last ``fraction`` of training against the
``fraction`` before it, Welch's 95% interval). While its gain is significantly above zero it is
lengthened by ``every`` iterations (``harness run --resume RUN --iterations N``, exact: the stream of
tasks and the optimiser continue where they stopped) up to ``max_iterations``; then the table's
evaluations measure the lengthened network. The run keeps its directory and config key (those of the
budget's iterations); ``config.json`` records the extension. An algorithm whose ``progress`` spans the
run (``progress_spans_run``: MAML++'s cosine annealing) is never lengthened, since its annealing would
start over mid-run; its plateau column shows where it stands.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError
from harness.evaluation.plateau import DEFAULT_FRACTION, plateau_gain, validation_curve
from harness.run.rundir import recorded_iterations


def check_until_plateau(value: object, where: str) -> None:
    """A budget's ``until_plateau`` table, checked before anything is planned (one line per mistake)."""
    if not isinstance(value, dict):
        raise HarnessError(f"{where} must be a table {{ every = N, max_iterations = M }}, got {value!r}")
    unknown = sorted(set(value) - {"every", "max_iterations", "fraction"})
    if unknown:
        raise HarnessError(f"{where} has no key {unknown[0]!r}; keys: every, max_iterations, fraction")
    for key in ("every", "max_iterations"):
        number = value.get(key)
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise HarnessError(f"{where}.{key} must be a whole number of iterations >= 1, got {number!r}")
    fraction = value.get("fraction", DEFAULT_FRACTION)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 0.5:
        raise HarnessError(f"{where}.fraction must be in (0, 0.5], got {fraction!r}")


def lengthen_to(run_dir: Path, until_plateau: dict | None, progress_spans_run: bool) -> int | None:
    """The iterations a finished run still has to train to, or None when it is done.

    A run whose ``config.json`` is set longer than its ``summary.json`` was stopped while being lengthened:
    it finishes that first. Otherwise, with ``until_plateau``, a run still rising is lengthened by its
    ``every`` (at most to ``max_iterations``).
    """
    if not (run_dir / "summary.json").exists():
        return None
    tested, target = recorded_iterations(run_dir / "summary.json"), recorded_iterations(run_dir / "config.json")
    if tested is not None and target is not None and target > tested:
        return target
    if not until_plateau or progress_spans_run or tested is None or tested >= until_plateau["max_iterations"]:
        return None
    try:
        gain = plateau_gain(*validation_curve(run_dir), until_plateau.get("fraction", DEFAULT_FRACTION))
    except HarnessError as exc:
        raise HarnessError(f"{run_dir}: until_plateau cannot test it: {exc}") from None
    if gain["plateau"]:
        return None
    return min(tested + until_plateau["every"], until_plateau["max_iterations"])
