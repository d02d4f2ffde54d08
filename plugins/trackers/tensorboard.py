"""``--report-to tensorboard``: event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir results/runs``).

Scalars at their steps; the config and ``summary.json`` as text; evaluator figures as images (those
in the run directory at its end, and those of a later ``harness eval`` / ``analyze``).
TensorBoard has no artifacts, so checkpoints stay in the run directory. A resumed run writes to the
same folder with ``purge_step`` at the step after its checkpoint, so TensorBoard drops the rows the
stopped start logged past it, which the resumed run logs again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import harness
from harness.run.trackers import Tracker, TrackerRun


class TensorBoardRun(TrackerRun):
    def __init__(self, writer):
        self.writer = writer

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def finish(self, summary: dict[str, Any], scalars: dict[str, float], artifacts: list[Path]) -> None:
        step = summary.get("iterations", 0)
        self.log_scalars(step, scalars)
        self.writer.add_text("summary", _code_block(summary), step)
        self._figures(step, artifacts)
        self.writer.close()

    def report_evaluation(self, step: int, scalars: dict[str, float], files: list[Path]) -> None:
        self.log_scalars(step, scalars)
        self._figures(step, files)
        self.writer.close()

    def _figures(self, step: int, files: list[Path]) -> None:
        import numpy as np
        from PIL import Image

        for figure in (path for path in files if path.suffix == ".png"):
            with Image.open(figure) as image:
                pixels = np.asarray(image.convert("RGB"))  # [H, W, 3] uint8
            self.writer.add_image(f"figures/{figure.stem}", pixels, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class TensorBoardTracker(Tracker):
    name = "tensorboard"
    description = "TensorBoard event files in RUN_DIR/tensorboard: scalars, config and summary text, figures"
    requirement = "tensorboard"

    def start(self, run_dir: Path, config: dict[str, Any], step: int, kept: dict[str, Any]) -> TrackerRun:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=step + 1 if step else None)
        if not step:
            writer.add_text("config", _code_block(config), 0)
        return TensorBoardRun(writer)


def _code_block(value: dict[str, Any]) -> str:
    """JSON as a Markdown code block: TensorBoard's text plugin renders Markdown."""
    return "```\n" + json.dumps(value, indent=2, default=str) + "\n```"


@harness.hookimpl
def register_trackers(registry):
    registry.add(TensorBoardTracker())
