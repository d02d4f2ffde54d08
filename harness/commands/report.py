"""``harness report``: every reproduced table as Markdown beside the paper, learning curves, and the results index.

    harness report                     # reads results/reproduced/*.json, writes *.md, *-curves.png, results/README.md

The index is the part of ``results/README.md`` between the markers
``<!-- reproduced:start -->`` and ``<!-- reproduced:end -->`` (added at the end
when missing); the rest of the file is left as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import harness
from harness.errors import HarnessError
from harness.reproduce.figures import discard_figure, new_figure, save_figure
from harness.reproduce.rendering import checked_rows, render_table
from harness.reproduce.scoreboard import is_scoreboard, plot_scoreboard
from harness.run.files import read_json, read_metrics

START, END = "<!-- reproduced:start -->", "<!-- reproduced:end -->"


def plot_curves(result: dict, out: Path) -> Path | None:
    """Validation accuracy (few-shot) or post-adaptation return (RL) against iteration, one line per run."""
    figure, axes = new_figure(1, 2, figsize=(11, 4))
    drawn = set()
    for row in result["rows"]:
        for run_dir in row.get("runs", []):
            metrics = Path(run_dir) / "metrics.jsonl"
            if run_dir in drawn or not metrics.exists():
                continue
            drawn.add(run_dir)
            rows = read_metrics(metrics)
            if any("return" in r for r in rows):  # a meta-RL run
                points = [(r["step"], r["return"]) for r in rows if r.get("split") == "train"]
                axis = axes[1]
            else:
                points = [(r["step"], 100 * r["accuracy"]) for r in rows if r.get("split") == "val"]
                axis = axes[0]
            if points:
                name = Path(run_dir).name.rsplit("-", 1)[0]
                (line,) = axis.plot(*zip(*points), label=f"{name} val" if axis is axes[0] else name)
                train = [
                    (r["step"], 100 * r["accuracy"]) for r in rows if r.get("split") == "train" and "accuracy" in r
                ]
                if axis is axes[0] and train:  # training accuracy (query sets of the meta-batch), as Figures 5 and 10
                    axis.plot(
                        *zip(*train), linestyle="--", linewidth=0.8, color=line.get_color(), label=f"{name} train"
                    )
    if not drawn:
        discard_figure(figure)
        return None
    axes[0].set(title="few-shot: validation (solid) and training (dashed) accuracy", xlabel="iteration", ylabel="%")
    axes[1].set(title="meta-RL: return after adaptation (training tasks)", xlabel="iteration", ylabel="return")
    for axis in axes:
        if axis.lines:
            axis.legend(fontsize=7)
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
