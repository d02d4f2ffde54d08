"""``harness report``: every reproduced table as Markdown beside the paper, learning curves, and the results index.

    harness report                     # reads results/reproduced/*.json, writes *.md, *-curves.png, results/README.md

The index is the part of ``results/README.md`` between the markers
``<!-- reproduced:start -->`` and ``<!-- reproduced:end -->`` (added at the end
when missing); the rest of the file is left as it is.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import harness
from harness.errors import HarnessError
from harness.evaluation.plateau import DEFAULT_FRACTION, plateau_gain
from harness.reproduce.figures import new_figure, save_figure
from harness.reproduce.rendering import checked_rows, render_table
from harness.reproduce.scoreboard import is_scoreboard, plot_scoreboard
from harness.run.files import read_json, read_metrics

START, END = "<!-- reproduced:start -->", "<!-- reproduced:end -->"


@dataclass
class Curve:
    """One run's learning curve: validation accuracy (%) or, for meta-RL, post-adaptation return."""

    label: str
    rl: bool
    points: list[tuple[int, float]]
    training: list[tuple[int, float]]  # few-shot: accuracy on the meta-batch's query sets (Figures 5 and 10)


def learning_curves(result: dict) -> list[Curve]:
    """The curve of every run the table's rows read, once each, labelled by its scoreboard line (``group``) or
    its run name; a label two runs would share names the run directory too."""
    curves: list[Curve] = []
    seen: set[str] = set()
    for row in result["rows"]:
        for run_dir in row.get("runs", []):
            metrics = Path(run_dir) / "metrics.jsonl"
            if run_dir in seen or not metrics.exists():
                continue
            seen.add(run_dir)
            rows = read_metrics(metrics)
            label = row.get("group") or Path(run_dir).name.rsplit("-", 1)[0]
            if any(curve.label == label for curve in curves):
                label = f"{label} ({Path(run_dir).name})"
            if any("return" in r for r in rows):
                points = [(r["step"], r["return"]) for r in rows if r.get("split") == "train"]
                curves.append(Curve(label, True, points, []))
            else:
                points = [(r["step"], 100 * r["accuracy"]) for r in rows if r.get("split") == "val"]
                training = [
                    (r["step"], 100 * r["accuracy"]) for r in rows if r.get("split") == "train" and "accuracy" in r
                ]
                curves.append(Curve(label, False, points, training))
    return [curve for curve in curves if curve.points]


def plateau_windows(curve: Curve) -> dict | None:
    """The plateau test (:func:`harness.evaluation.plateau.plateau_gain`, quarters) on a few-shot curve, in
    percentage points; None where a window holds too few validations (short runs)."""
    steps, accuracies = zip(*curve.points)
    try:
        return plateau_gain(steps, accuracies, DEFAULT_FRACTION)
    except HarnessError:
        return None


def draw_plateau_windows(axis, curves: list[Curve]) -> None:
    """Each run's validations over the plateau test's two windows, on a zoomed scale, with each window's mean
    as a bar (dotted: the quarter before, solid: the last quarter): the evidence the plateau column summarises."""
    for curve in curves:
        test = plateau_windows(curve)
        if test is None:
            continue
        start = test["windows"]["before"][0]
        late = [(step, accuracy) for step, accuracy in curve.points if step > start]
        (line,) = axis.plot(*zip(*late), marker=".", markersize=3, linewidth=0.7, label=curve.label)
        means = {"before": test["last"] - test["gain"], "last": test["last"]}
        for window, style in (("before", ":"), ("last", "-")):
            axis.hlines(means[window], *test["windows"][window], colors=line.get_color(), linestyles=style, linewidth=2)
    axis.set(
        title="plateau test: validation over the last two quarters, window means as bars",
        xlabel="iteration",
        ylabel="%",
    )


def plot_curves(result: dict, out: Path) -> Path | None:
    """Learning curves, one line per run, on a panel per kind present (few-shot, meta-RL), and a zoomed panel of
    the plateau test's windows where a few-shot run has enough validations; None without any curve."""
    curves = learning_curves(result)
    few_shot = [curve for curve in curves if not curve.rl]
    panels = ["few-shot"] if few_shot else []
    panels += ["plateau"] if any(plateau_windows(curve) for curve in few_shot) else []
    panels += ["meta-RL"] if len(few_shot) < len(curves) else []
    if not panels:
        return None
    figure, axes = new_figure(1, len(panels), figsize=(8 * len(panels), 4.5), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        if panel == "plateau":
            draw_plateau_windows(axis, few_shot)
            continue
        for curve in (c for c in curves if c.rl == (panel == "meta-RL")):
            (line,) = axis.plot(*zip(*curve.points), label=curve.label)
            if curve.training:
                axis.plot(*zip(*curve.training), linestyle="--", linewidth=0.8, color=line.get_color())
        if panel == "meta-RL":
            axis.set(title="meta-RL: return after adaptation (training tasks)", xlabel="iteration", ylabel="return")
        else:
            axis.set(title="few-shot: validation (solid), training (dashed) accuracy", xlabel="iteration", ylabel="%")
    for axis, panel in zip(axes[0], panels):
        if panel == "few-shot" and "plateau" in panels:
            continue  # the plateau panel beside it names the same runs
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    figure.suptitle(result["title"])
    return save_figure(figure, out, dpi=110)


def copy_figures(result: dict, folder: Path, stem: str) -> list[Path]:
    """Evaluator figures of the table's rows (one per distinct file), copied to ``folder/<stem>-figure<n>.png``."""
    import shutil

    sources = []
    for row in result["rows"]:
        sources += [f for f in row.get("figures", []) if f not in sources]
    copied = []
    for number, source in enumerate(sources, 1):
        if Path(source).exists():
            target = folder / f"{stem}-figure{number}.png"
            shutil.copyfile(source, target)
            copied.append(target)
    return copied


def update_index(readme: Path, sections: list[str]) -> None:
    text = readme.read_text() if readme.exists() else "# Results\n"
    block = "\n".join([START, "## Reproduced tables (harness reproduce / harness report)", "", *sections, END])
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)


class ReportCommand:
    name = "report"
    description = (
        "render every reproduced table (results/reproduced/*.json) as Markdown and PNG, update results/README.md"
    )

    def add_arguments(self, parser):
        parser.add_argument("--results", default="results", help="results folder (default results)")

    def run(self, args) -> int:
        results = Path(args.results)
        tables = sorted((results / "reproduced").glob("*.json"))
        if not tables:
            raise HarnessError(
                f"nothing reproduced yet: no {results / 'reproduced'}/*.json (run harness reproduce TABLE)"
            )
        sections = []
        for path in tables:
            result = read_json(path)
            if (
                not isinstance(result, dict)
                or not isinstance(result.get("rows"), list)
                or "title" not in result
                or "budget" not in result
            ):
                raise HarnessError(
                    f"{path} is not a reproduced table (harness reproduce writes title and rows); "
                    f"rebuild it with harness reproduce {path.stem.rsplit('-', 1)[0]} --no-train"
                )
            for line in checked_rows(path, result):
                print(f"harness: {line}", file=sys.stderr)
            markdown = render_table(result)
            path.with_suffix(".md").write_text(markdown)
            figure = plot_curves(result, path.with_name(f"{path.stem}-curves.png"))
            sections.append(markdown)
            if figure:
                sections.append(f"![{result['title']}: learning curves](reproduced/{figure.name})\n")
            if result.get("scoreboard") and (
                drawn := plot_scoreboard(result, result["scoreboard"], path.with_name(f"{path.stem}-axis.png"))
            ):
                sections.append(f"![{result['title']}: each algorithm's place](reproduced/{drawn.name})\n")
            for copied in [] if is_scoreboard(result) else copy_figures(result, path.parent, path.stem):
                sections.append(f"![{result['title']}](reproduced/{copied.name})\n")
            print(markdown)
        update_index(results / "README.md", sections)
        print(f"updated {results / 'README.md'}")
        return 0


@harness.hookimpl
def register_commands(registry):
    registry.add(ReportCommand())
