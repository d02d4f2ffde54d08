"""Conformance checks for plugin authors: the checks every bundled plugin passes, as functions for a plugin's
own tests (``tests/test_conformance.py`` runs them on the bundled plugins and on outside examples)::

    from harness.testing import check_fast_path, check_registers, check_resume_exact

    def test_my_algorithm_conforms(tmp_path):
        check_registers("algorithm", MyAlgorithm())
        check_resume_exact("my-algo", "omniglot-5w1s", DATA_ROOT, tmp_path, plugins=load_plugins((my_plugin,)))

Nothing in the harness imports this module; it imports from every layer (docs/architecture.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from harness.data.taskspec import parse_task_spec
from harness.engine.side_by_side import TOLERANCE, rules_problem, unsupported
from harness.plugin.manager import Plugins, load_plugins
from harness.plugin.protocols import OwnForwardTasks
from harness.plugin.registry import Registry
from harness.run.config import resolve_config
from harness.run.files import load_torch
from harness.run.training import Trainer

#: Fields of metrics rows and summaries that time the machine, not the run.
TIMING_KEYS = frozenset({"train_seconds", "seconds_per_iteration", "test_seconds"})


def check_registers(kind: str, obj: Any) -> Any:
    """``obj`` as a registry of ``kind`` (``"algorithm"``, ``"backbone"``, ...) resolves it, its optional
    members defaulted; ``HarnessError`` naming what it lacks otherwise."""
    registry: Registry[Any] = Registry(kind)
    registry.current_plugin = "harness.testing"
    return registry.add(obj)


def check_fast_path(model: nn.Module, images: torch.Tensor) -> str | None:
    """None when ``model``'s side-by-side fast path (its own ``forward_tasks``, else the harness's rules) gives
    what a forward per task gives on ``images`` ``[tasks >= 2, n, C, H, W]``; else why not. Never raises: a
    model the fast path cannot run is one the harness runs without it."""
    if not isinstance(model, OwnForwardTasks):
        return unsupported(model) or rules_problem(model, images)
    try:
        with torch.no_grad():
            params = {name: p.unsqueeze(0).expand(images.shape[0], *p.shape) for name, p in model.named_parameters()}
            got = model.forward_tasks(params, images, False)  # [tasks, n, out]
            want = torch.stack([functional_call(model, dict(model.named_parameters()), (x,)) for x in images])
    except Exception as exc:  # the model is the plugin's: report, never propagate
        return f"its forward_tasks raised {type(exc).__name__}: {exc}"
    error = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    return None if error <= TOLERANCE else f"its forward_tasks differs from a forward per task ({error:.1e})"


def check_resume_exact(
    algo: str, data: str, data_root: str | Path, workdir: Path, *, plugins: Plugins | None = None, **overrides: Any
) -> dict:
    """Train ``iterations`` (default 4) straight, and the same stopped half way and resumed: ``AssertionError``
    unless every metrics row (timings aside), the test result and the final weights agree bit for bit.
    Returns the straight run's summary."""
    plugins = plugins or load_plugins()
    spec = parse_task_spec(data)
    iterations = int(overrides.pop("iterations", 4))
    values = dict(meta_batch_size=2, log_every=1, val_every=max(1, iterations // 2), val_tasks=4, test_tasks=8)

    def config(steps: int):
        chosen = {**values, **overrides, "iterations": steps, "data_root": str(data_root)}
        return resolve_config(algo, data, plugins.task_samplers.get(spec.dataset), spec, chosen)

    summary = Trainer(config(iterations), plugins, workdir / "straight", download=False, progress=False).train()
    Trainer(config(iterations // 2), plugins, workdir / "resumed", download=False, progress=False).train()
    resumed = Trainer(config(iterations), plugins, workdir / "resumed", download=False, progress=False)
    resumed.restore()
    again = resumed.train()
    assert summary is not None and again is not None
    assert again["test"] == summary["test"], (again["test"], summary["test"])
    assert _rows(workdir / "straight") == _rows(workdir / "resumed"), "metrics rows differ after a resume"
    straight, stopped = (load_torch(workdir / run / "checkpoint.pt") for run in ("straight", "resumed"))
    for part in ("model", "algorithm"):
        mine, theirs = straight.get(part, {}), stopped.get(part, {})
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine), part
    return summary


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]
