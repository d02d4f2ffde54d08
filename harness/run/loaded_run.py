"""A finished (or stopped) run opened for evaluation: its config, its model with the checkpoint's weights.

The checkpoint is checked first (``harness.run.integrity``): its recorded sha256, and that it was trained
as this run (algorithm, data, backbone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError
from harness.run.assembly import build_model, run_algorithm
from harness.run.config import RunConfig
from harness.run.files import load_torch, load_weights, read_json
from harness.run.integrity import refuse_foreign_checkpoint, verify_checkpoint


@dataclass
class LoadedRun:
    """A run directory opened for evaluation: config, model (best weights), plugins."""

    path: Path
    config: RunConfig
    model: torch.nn.Module
    algorithm: Any
    task_sampler: Any
    spec: Any
    checkpoint_path: Path
    data_root: Path | None = None
    download: bool = True
    device: Any = "cpu"
    geometry: dict = field(default_factory=dict)  # the checkpoint's in_channels, image_size, head_outputs

    def open_split(self, split: str, queries: int | None = None):
        """The task sampler of ``split`` with this run's task spec (optionally more query images)."""
        options = {"split": self.config.split, "queries": queries or self.config.queries, "download": self.download}
        return self.task_sampler.open(self.spec, split, self.data_root, options)


def load_run(path: Path, plugins, checkpoint: str | None = None) -> LoadedRun:
    """Open ``path`` and build its model from ``best.pt`` (or the given checkpoint)."""
    from harness.data.taskspec import parse_task_spec

    path = Path(path)
    if not (path / "config.json").exists():
        raise HarnessError(f"{path} is not a run directory (no config.json)")
    config = RunConfig.from_dict(read_json(path / "config.json"))
    spec = parse_task_spec(config.data)
    algorithm = plugins.algorithms.get(config.algo)
    task_sampler = plugins.task_samplers.get(spec.dataset)
    backbone = plugins.backbones.get(config.backbone)
    checkpoint_path = Path(checkpoint) if checkpoint else path / "best.pt"
    if not checkpoint_path.exists() and checkpoint is None:
        checkpoint_path = path / "checkpoint.pt"
    verify_checkpoint(checkpoint_path)
    state = load_torch(checkpoint_path, needs=("model", "geometry"))
    refuse_foreign_checkpoint(checkpoint_path, state, read_json(path / "config.json"))
    geometry = state["geometry"]
    head_outputs = geometry.get("head_outputs", spec.ways)
    model = build_model(
        backbone, algorithm, geometry["in_channels"], geometry["image_size"], head_outputs, config.bn_mode
    )
    load_weights(model, state["model"], checkpoint_path)
    algorithm = run_algorithm(algorithm, model, config)
    if algorithm.owns_parameters:  # the algorithm's own learned parameters (Meta-SGD's step sizes)
        if "algorithm" not in state:
            raise HarnessError(
                f"{checkpoint_path} has no 'algorithm' entry: {config.algo!r} keeps parameters of its own"
            )
        load_weights(algorithm, state["algorithm"], checkpoint_path)
    return LoadedRun(path, config, model, algorithm, task_sampler, spec, checkpoint_path, geometry=geometry)
