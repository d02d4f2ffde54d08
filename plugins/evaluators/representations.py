"""Representation analyses of Raghu et al. (ICLR 2020): does the inner loop change the features?

- ``similarity`` (Figure 2): per layer, CCA/CKA between the representation
  before and after inner-loop adaptation, on each test task's query images,
  averaged over tasks, and the body's mean over its layers (``body mean``).
  Feature reuse shows as body similarity near 1 and a low head similarity.
- ``weight-distance`` (Figure 6): per layer, Euclidean distance between the
  meta-initialisation and the adapted weights, averaged over tasks, and the
  whole body's (``body``).
- ``run-similarity`` (Tables 3 and 8, Figure 11): per layer, similarity
  between two runs' representations of the same test images, before and
  after adaptation, and the mean over the body.
- ``seed-similarity`` (Figures 7 and 8): for two seeds A and B of one
  configuration, per (task, body layer): x = sim(A pre, B pre) against
  sim(A pre, B post), sim(A post, B pre) and sim(A post, B post), each with a
  least-squares line and R^2.

    harness analyze similarity RUN_DIR --measure cca
    harness analyze similarity RUN_DIR --against OTHER_RUN --measure cka
    harness analyze weights RUN_DIR
    harness analyze seeds RUN_SEED1 --against RUN_SEED2

Each writes ``analysis-<name>.json`` and ``analysis-<name>.png`` into the
(first) run directory. Options (``harness eval -o KEY=VALUE``): ``measure``,
``num_tasks``, ``queries``, ``test_inner_steps``, ``against`` and
``adapt_as=maml`` (adapt every layer, whatever algorithm trained the network:
on an ANIL network its own inner loop leaves the body identical by
construction, so only this shows whether the body would move).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import harness
from harness.errors import HarnessError
from harness.evaluation.activations import analysed_layers, layer_of, pre_post, starting_point
from harness.evaluation.fewshot import (
    TEST_TASK_SEED,
    fixed_tasks,
    inner_loop_algorithm,
    mean_and_ci95,
)
from harness.evaluation.options import ADAPT_AS, ADAPT_LR, Option
from harness.evaluation.similarity import MEASURES, as_neurons_by_datapoints
from harness.reproduce.figures import new_figure, save_figure

DEFAULT_TASKS = 50
DEFAULT_QUERIES = 15  # more query images than training uses, so the head has more datapoints than neurons


MEASURE = Option("measure", "similarity measure", choices=tuple(MEASURES), default="cca")
TASKS = (
    Option("num_tasks", "test tasks to average over", kind="int", minimum=1, default=DEFAULT_TASKS),
    Option("queries", "query images per class", kind="int", minimum=1, default=DEFAULT_QUERIES),
    Option(
        "test_inner_steps",
        "inner-loop steps (default: the run's)",
        kind="int",
        minimum=1,
        default=lambda run: run.config.test_inner_steps,
    ),
    ADAPT_AS,
    ADAPT_LR,
)
AGAINST = Option("against", "the second run directory", kind="run")


def _measure(options) -> tuple[str, callable]:
    return options["measure"], MEASURES[options["measure"]]


def _tasks(run, options):
    sampler = run.open_split("test", queries=options["queries"])
    return fixed_tasks(sampler, 0, options["num_tasks"], TEST_TASK_SEED).to(run.device)


def _similarity(measure, a: torch.Tensor, b: torch.Tensor) -> float:
    try:
        return measure(as_neurons_by_datapoints(a), as_neurons_by_datapoints(b))
    except ValueError as exc:
        raise HarnessError(f"similarity undefined: {exc}") from None


def _rows(per_layer: dict[str, list[float]], label: str) -> list[dict]:
    rows = []
    for layer, values in per_layer.items():
        mean, ci95 = mean_and_ci95(np.asarray(values))
        rows.append({"name": f"{layer} {label}", "layer": layer, "mean": mean, "ci95": ci95, "tasks": len(values)})
    return rows


def _bar_figure(path: Path, rows: list[dict], title: str, ylabel: str, ylim=(0, 1.05)) -> None:
    fig, ax = new_figure(figsize=(6, 3.5))
    ax.bar(
        [r["layer"] for r in rows],
        [r["mean"] for r in rows],
        yerr=[r["ci95"] for r in rows],
        capsize=4,
        color="#4c72b0",
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ylim:
        ax.set_ylim(*ylim)
    save_figure(fig, path)


def _variant(options) -> str:
    """File-name suffix of a non-default inner loop, so its figure does not overwrite the run's own."""
    return f"-adapt-as-{options['adapt_as']}" if options["adapt_as"] else ""


def _steps(run, options) -> int:
    return options["test_inner_steps"]


class PrePostSimilarity:
    name = "similarity"
    description = "per-layer CCA/CKA between representations before and after inner-loop adaptation (Fig. 2)"
    options = (MEASURE, *TASKS)

    def evaluate(self, run, options) -> dict:
        measure_name, measure = _measure(options)
        episodes = _tasks(run, options)
        per_layer: dict[str, list[float]] = {name: [] for name, _ in analysed_layers(run.model)}
        for before, after, _ in pre_post(
            run.model, inner_loop_algorithm(run, options), episodes, _steps(run, options), run.config
        ):
            for layer in per_layer:
                per_layer[layer].append(_similarity(measure, before[layer], after[layer]))
        rows = _rows(per_layer, f"{measure_name} pre vs post")
        body = [values for layer, values in per_layer.items() if layer != "head"]
        # One number for the body (the feature-reuse scoreboard): each task's mean over body layers.
        body_mean = _rows({"body mean": list(np.mean(body, axis=0))}, f"{measure_name} pre vs post")
        figure = run.path / f"analysis-{self.name}-{measure_name}{_variant(options)}.png"
        _bar_figure(
            figure,
            rows,
            f"{run.config.algo} {run.config.data}: {measure_name} before vs after adaptation",
            f"{measure_name} similarity",
        )
        return {
            "rows": rows + body_mean,
            "measure": measure_name,
            "figure": str(figure),
            "inner_steps": _steps(run, options),
        }


class WeightDistance:
    name = "weight-distance"
    description = "per-layer Euclidean distance between meta-initialisation and adapted weights (Fig. 6)"
    options = TASKS

    def evaluate(self, run, options) -> dict:
        episodes = _tasks(run, options)
        base = starting_point(run.model, inner_loop_algorithm(run, options), episodes.ways)
        per_layer: dict[str, list[float]] = {name: [] for name, _ in analysed_layers(run.model)}
        body: list[float] = []
        for _, _, adapted in pre_post(
            run.model, inner_loop_algorithm(run, options), episodes, _steps(run, options), run.config
        ):
            for name in adapted:  # an adapted tensor outside the analysed layers (a context) gets a row of its own
                per_layer.setdefault(layer_of(name), [])
            squared: dict[str, float] = {layer: 0.0 for layer in per_layer}
            for name, value in adapted.items():
                squared[layer_of(name)] += float(((value.detach() - base[name]) ** 2).sum())
            for layer, total in squared.items():
                per_layer[layer].append(total**0.5)
            body.append(sum(total for layer, total in squared.items() if layer != "head") ** 0.5)
        rows = _rows(per_layer, "L2 distance")
        figure = run.path / f"analysis-{self.name}{_variant(options)}.png"
        _bar_figure(figure, rows, f"{run.config.algo} {run.config.data}: ||adapted - init||", "L2 distance", ylim=None)
        # The whole body's distance (all body weights as one vector), beside the head's: the scoreboard's pair.
        return {"rows": rows + _rows({"body": body}, "L2 distance"), "figure": str(figure)}


def _two_runs(run, options):
    other = options["against"]
    if other is None:
        raise HarnessError("this analysis compares two runs: pass --against OTHER_RUN_DIR")
    if (run.spec.ways, run.spec.shots, run.spec.dataset) != (other.spec.ways, other.spec.shots, other.spec.dataset):
        raise HarnessError(f"runs use different task specs: {run.config.data} vs {other.config.data}")
    return other


def _paired_activations(run, options):
    """Both runs' (pre, post) activations on the same test tasks, task by task."""
    other = _two_runs(run, options)
    measure_name, measure = _measure(options)
    episodes = _tasks(run, options)
    steps = _steps(run, options)
    pairs = zip(
        pre_post(run.model, inner_loop_algorithm(run, options), episodes, steps, run.config),
        pre_post(other.model, inner_loop_algorithm(other, options), episodes, steps, other.config),
    )
    return other, measure_name, measure, episodes, pairs


class RunSimilarity:
    name = "run-similarity"
    description = "per-layer similarity between two runs' representations, pre and post adaptation (Tables 3, 8)"
    options = (AGAINST, MEASURE, *TASKS)

    def evaluate(self, run, options) -> dict:
        other, measure_name, measure, episodes, pairs = _paired_activations(run, options)
        layers = [name for name, _ in analysed_layers(run.model)]
        pre = {layer: [] for layer in layers}
        post = {layer: [] for layer in layers}
        for (a_pre, a_post, _), (b_pre, b_post, _) in pairs:
            for layer in layers:
                pre[layer].append(_similarity(measure, a_pre[layer], b_pre[layer]))
                post[layer].append(_similarity(measure, a_post[layer], b_post[layer]))
        rows = _rows(pre, f"{measure_name} pre vs pre") + _rows(post, f"{measure_name} post vs post")
        body = [np.mean([pre[l][t] for l in layers if l != "head"]) for t in range(episodes.num_tasks)]
        mean, ci95 = mean_and_ci95(np.asarray(body))
        rows.append(
            {
                "name": f"body mean {measure_name} pre vs pre",
                "layer": "body",
                "mean": mean,
                "ci95": ci95,
                "tasks": len(body),
            }
        )
        # Table 8 of the paper averages over the first three conv layers only.
        first3 = [np.mean([pre[l][t] for l in layers if l != "head"][:3]) for t in range(episodes.num_tasks)]
        mean, ci95 = mean_and_ci95(np.asarray(first3))
        rows.append(
            {
                "name": f"body layers 1-3 mean {measure_name} pre vs pre",
                "layer": "body 1-3",
                "mean": mean,
                "ci95": ci95,
                "tasks": len(first3),
            }
        )
        figure = run.path / f"analysis-{self.name}-{measure_name}-vs-{other.path.name}.png"  # one per pair
        _bar_figure(
            figure,
            rows[: len(layers)],
            f"{run.config.algo} vs {other.config.algo} ({other.path.name}): {measure_name}",
            f"{measure_name} similarity",
        )
        return {"rows": rows, "measure": measure_name, "against": str(other.path), "figure": str(figure)}


class SeedSimilarity:
    name = "seed-similarity"
    description = "two seeds: (pre,pre) vs (pre,post), (post,pre), (post,post) with fit and R^2 (Figs. 7, 8)"
    options = (AGAINST, MEASURE, *TASKS)

    def evaluate(self, run, options) -> dict:
        other, measure_name, measure, episodes, pairs = _paired_activations(run, options)
        layers = [name for name, _ in analysed_layers(run.model) if name != "head"]
        points = {"pre,pre": [], "pre,post": [], "post,pre": [], "post,post": []}
        for (a_pre, a_post, _), (b_pre, b_post, _) in pairs:
            for layer in layers:
                points["pre,pre"].append(_similarity(measure, a_pre[layer], b_pre[layer]))
                points["pre,post"].append(_similarity(measure, a_pre[layer], b_post[layer]))
                points["post,pre"].append(_similarity(measure, a_post[layer], b_pre[layer]))
                points["post,post"].append(_similarity(measure, a_post[layer], b_post[layer]))
        x = np.asarray(points["pre,pre"])
        fits, rows = {}, []
        for key in ("pre,post", "post,pre", "post,post"):
            y = np.asarray(points[key])
            slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (float("nan"), float("nan"))
            residual = y - (slope * x + intercept)
            total = np.sum((y - y.mean()) ** 2)
            r2 = float(1 - np.sum(residual**2) / total) if total > 0 else float("nan")
            fits[key] = {"slope": float(slope), "intercept": float(intercept), "r2": r2}
            mean, ci95 = mean_and_ci95(y)
            rows.append(
                {
                    "name": f"({key}) vs (pre,pre): slope {slope:.3f}, R^2 {r2:.3f}",
                    "layer": key,
                    "mean": mean,
                    "ci95": ci95,
                    "tasks": episodes.num_tasks,
                    **fits[key],
                }
            )
        figure = run.path / f"analysis-{self.name}-{measure_name}{_variant(options)}.png"
        self._figure(figure, points, fits, measure_name)
        return {
            "rows": rows,
            "fits": fits,
            "points": points,
            "layers": layers,
            "measure": measure_name,
            "against": str(other.path),
            "figure": str(figure),
        }

    @staticmethod
    def _figure(path, points, fits, measure_name):
        fig, axes = new_figure(1, 3, figsize=(11, 3.5), sharey=True)
        x = np.asarray(points["pre,pre"])
        for ax, key in zip(axes, ("pre,post", "post,pre", "post,post")):
            ax.scatter(x, points[key], s=8, alpha=0.6)
            fit = fits[key]
            grid = np.linspace(x.min(), x.max(), 10)
            ax.plot(grid, fit["slope"] * grid + fit["intercept"], color="C3", label=f"R^2 = {fit['r2']:.3f}")
            ax.set_xlabel(f"{measure_name} (pre,pre)")
            ax.set_title(f"({key})", fontsize=10)
            ax.legend(fontsize=8)
        axes[0].set_ylabel(f"{measure_name}")
        save_figure(fig, path)


@harness.hookimpl
def register_evaluators(registry):
    for evaluator in (PrePostSimilarity(), WeightDistance(), RunSimilarity(), SeedSimilarity()):
        registry.add(evaluator)
