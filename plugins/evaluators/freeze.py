"""Layer freezing at test time (Raghu et al. 2020, Section 3.2.1, Table 1, Figure 3).

The run's inner loop adapts as usual, except that a contiguous block of body
layers is frozen. Layers are numbered from 1 as in the paper (layer 1 is
``body.0``). By default the paper's settings: none, 1, 1-2, 1-3, 1-4 (for a
four-layer body). Options (``-o KEY=VALUE``):

- ``layers=2-3``: one setting only (``none``, ``i`` or ``i-j``);
- ``all_checkpoints=1``: also evaluate every ``checkpoints/step-*.pt`` of the
  run (written by ``harness run --checkpoint-every 10000``), for Figure 3,
  drawn as test accuracy against training step, one line per setting, in
  ``RUN_DIR/analysis-freeze.png``;
- ``num_tasks=N``: test tasks per row (default: the run's, 600);
- ``adapt_as=maml``: adapt with that algorithm's inner loop (every layer for
  ``maml``) instead of the run's own; for an ANIL-trained network, whose own
  inner loop never touches the body, this is the only informative setting.

    harness eval RUN_DIR --evaluator freeze
    harness eval RUN_DIR --evaluator freeze -o all_checkpoints=1
"""

from __future__ import annotations

import re

import harness
from harness.errors import HarnessError
from harness.evaluation.activations import analysed_layers, layer_of, require_body_head
from harness.evaluation.fewshot import (
    TEST_TASK_SEED,
    adapt_with,
    inner_loop_algorithm,
    mean_and_ci95,
    per_task_accuracies,
)
from harness.evaluation.options import ADAPT_AS, ADAPT_LR, NUM_TASKS, TEST_INNER_STEPS, Option
from harness.reproduce.figures import new_figure, save_figure
from harness.run.files import load_torch, load_weights


def parse_layers(text: str, body_layers: int, backbone: str) -> tuple[int, int] | None:
    """``"none"`` -> None; ``"2"`` -> (2, 2); ``"1-3"`` -> (1, 3), checked against the body depth."""
    text = str(text).strip()
    if text == "none":
        return None
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if match is None:
        raise HarnessError(f"malformed layers {text!r}: expected none, i or i-j (layers numbered from 1)")
    first, last = int(match[1]), int(match[2] or match[1])
    if not 1 <= first <= last <= body_layers:
        raise HarnessError(
            f"cannot freeze layers {text}: backbone {backbone!r} has {body_layers} body layers (1-{body_layers})"
        )
    return first, last


def describe(block: tuple[int, int] | None) -> str:
    if block is None:
        return "none"
    return str(block[0]) if block[0] == block[1] else f"{block[0]}-{block[1]}"


class FreezeEvaluator:
    name = "freeze"
    description = "test-time adaptation with body layers frozen: none, 1, 1-2, 1-3, 1-4 (Table 1, Fig. 3)"
    options = (
        NUM_TASKS,
        TEST_INNER_STEPS,
        ADAPT_AS,
        ADAPT_LR,
        Option("layers", "one setting only: none, i or i-j (layers numbered from 1)"),
        Option("all_checkpoints", "also evaluate every checkpoints/step-*.pt (Figure 3)", kind="bool", default=False),
    )

    def evaluate(self, run, options) -> dict:
        require_body_head(run.model, f"evaluator {self.name!r}")
        algorithm = inner_loop_algorithm(run, options)
        if algorithm.adapts is None:
            raise HarnessError(
                f"evaluator 'freeze' needs an algorithm with an inner loop; {run.config.algo!r} has none "
                f"(-o adapt_as=maml adapts every layer instead)"
            )
        body = [name for name, _ in analysed_layers(run.model) if name != "head"]
        if options["layers"] is not None:
            blocks = [parse_layers(options["layers"], len(body), run.config.backbone)]
        else:
            blocks = [None] + [(1, last) for last in range(1, len(body) + 1)]
        checkpoints = [run.checkpoint_path]
        if options["all_checkpoints"]:
            periodic = sorted((run.path / "checkpoints").glob("step-*.pt"))
            if not periodic:
                raise HarnessError(f"{run.path}/checkpoints has no step-*.pt files (train with --checkpoint-every N)")
            checkpoints = periodic + checkpoints
        steps = options["test_inner_steps"]
        sampler = run.open_split("test")
        rows = [
            row
            for path in checkpoints
            for row in self._checkpoint_rows(run, algorithm, sampler, path, body, blocks, steps, options["num_tasks"])
        ]
        result = {"rows": rows, "inner_steps": steps, "inner_loop": algorithm.name}
        if len(checkpoints) > 1:
            variant = f"-adapt-as-{algorithm.name}" if options["adapt_as"] else ""
            result["figure"] = str(
                plot_over_training(
                    rows,
                    run.path / f"analysis-freeze{variant}.png",
                    f"{run.config.algo} {run.config.data}: layers frozen at test time",
                )
            )
        return result

    @staticmethod
    def _checkpoint_rows(
        run, algorithm, sampler, path, body: list[str], blocks: list, steps: int, num_tasks: int
    ) -> list[dict]:
        """One checkpoint's weights, adapted with each block of body layers frozen: one row per block."""
        names = [name for name, _ in run.model.named_parameters()]
        state = load_torch(path, needs=("model", "step"))
        load_weights(run.model, state["model"], path)
        if algorithm is run.algorithm and "algorithm" in state:  # its own learned parameters at that step
            load_weights(algorithm, state["algorithm"], path)
        rows = []
        for block in blocks:
            layers = set() if block is None else set(body[block[0] - 1 : block[1]])
            frozen = frozenset(name for name in names if layer_of(name) in layers)
            accuracies = per_task_accuracies(
                lambda episodes, frozen=frozen: adapt_with(
                    algorithm, run.model, episodes, steps, run.config, frozen=frozen
                ),
                sampler,
                num_tasks,
                TEST_TASK_SEED,
                run.config.eval_batch_size,
                run.device,
            )
            mean, ci95 = mean_and_ci95(accuracies)
            rows.append(
                {
                    "name": f"step {state['step']}: frozen {describe(block)}",
                    "step": state["step"],
                    "frozen": describe(block),
                    "checkpoint": path.name,
                    "mean": mean,
                    "ci95": ci95,
                    "tasks": len(accuracies),
                }
            )
        return rows


def plot_over_training(rows: list[dict], path, title: str):
    """Figure 3 (left): test accuracy of each freezing setting against the checkpoint's training step."""
    figure, axis = new_figure(figsize=(6, 4))
    periodic = [row for row in rows if row["checkpoint"].startswith("step-")]  # best.pt repeats a step
    for frozen in dict.fromkeys(row["frozen"] for row in periodic):
        points = [(row["step"], 100 * row["mean"], 100 * row["ci95"]) for row in periodic if row["frozen"] == frozen]
        steps, means, cis = zip(*points)
        axis.errorbar(steps, means, yerr=cis, marker="o", capsize=3, label=f"frozen: {frozen}")
    axis.set(title=title, xlabel="training iteration of the checkpoint", ylabel="test accuracy %")
    axis.legend(fontsize=8)
    return save_figure(figure, path, dpi=110)


@harness.hookimpl
def register_evaluators(registry):
    registry.add(FreezeEvaluator())
