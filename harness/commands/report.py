"""``harness report``: every reproduced table as Markdown beside the paper, learning curves, and the results index.

    harness report                     # reads results/reproduced/*.json, writes *.md, *-curves.png, results/README.md

The index is the part of ``results/README.md`` between the markers
``<!-- reproduced:start -->`` and ``<!-- reproduced:end -->`` (added at the end
when missing); the rest of the file is left as it is.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import harness
from harness.errors import HarnessError
from harness.figures import discard_figure, new_figure, save_figure
from harness.reproduce import COMPARISONS, agrees
from harness.rundir import read_json, read_metrics
from harness.scoreboard import is_scoreboard, plot_scoreboard, render_scoreboard

START, END = "<!-- reproduced:start -->", "<!-- reproduced:end -->"


def format_value(mean: float, ci: float, unit: str) -> str:
    if unit == "x":  # a speedup: a ratio of medians, no interval
        return f"{mean:.2f}x"
    if unit in ("%", "return"):
        return f"{mean:.2f} ± {ci:.2f}{' %' if unit == '%' else ''}"
    return f"{mean:.3f} ± {ci:.3f} ({unit})"  # similarities and distances


def format_paper(row: dict) -> str:
    paper = row.get("paper")
    if not paper:
        return "n/a"
    unit = {"%": " %", "return": "", "x": "x"}.get(row["unit"], f" ({row['unit']})")
    bound = {"at_least": "≥ ", "at_most": "≤ "}.get(row.get("compare", "interval"), "")
    if row["unit"] == "x":
        return f"{paper[0]}x (a floor)"
    if bound or len(paper) == 1:  # a bound stated in the text, or a value printed without an interval
        return f"{bound}{paper[0]}{unit}"
    return f"{paper[0]} ± {paper[1]}{unit}"  # as published


def render_table(result: dict) -> str:
    from tabulate import tabulate

    rows, not_run = [], []
    scoreboard = is_scoreboard(result)
    for row in result["rows"]:
        if row.get("mean") is None:
            measured = "not run"
            # A scoreboard names each algorithm once, not each of its cells.
            line = f"- {row['group'] if scoreboard else row['label']}: {row.get('not_run', 'no finished run')}"
            not_run += [line] if line not in not_run else []
            if scoreboard:
                continue
        else:
            measured = format_value(row["mean"], row["ci95"], row["unit"])
        rows.append([row["label"], measured, format_paper(row), row["agree"], row["seeds"], row["tasks"]])
    machine = result.get("machine", {})
    lines = [
        f"### {result['title']}",
        "",
        f"Budget `{result['budget']}`: {result.get('budget_note', '')}. Measured {result.get('date', '')} on "
        f"{machine.get('device_name', 'this machine')} ({machine.get('torch_threads', '?')} threads, "
        f"torch {machine.get('torch', '?')}); ± is the 95% CI over test tasks (one seed) or over seeds"
        f"{'; speedups are ratios of step medians, agree = at least the paper' if any(r['unit'] == 'x' for r in result['rows']) else ''}. "
        f"Paper: {result.get('source', '')} (± as published; ≥ / ≤: a bound stated in the paper's text).",
        "",
        tabulate(rows, headers=["row", "measured", "paper", "agree", "seeds", "test tasks"], tablefmt="github"),
        "",
    ]
    if scoreboard:
        lines[-2:-1] = [render_scoreboard(result), "Every cell that was run:", "", lines[-2]]
    if not_run:
        lines += ["Not run:", "", *not_run, ""]
    return "\n".join(lines)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _row_problem(row) -> str | None:
    """What is malformed in one row of a reproduced table, or None."""
    if not isinstance(row, dict) or not isinstance(row.get("label"), str):
        return "is not a table row with a string label"
    if not isinstance(row.get("unit"), str):
        return f"unit must be a string, got {row.get('unit')!r}"
    if row.get("mean") is not None and not _is_number(row["mean"]):
        return f"mean must be a number or null, got {row['mean']!r}"
    if row.get("mean") is not None and not (_is_number(row.get("ci95")) and row["ci95"] >= 0):
        return f"ci95 must be a number of at least 0, got {row.get('ci95')!r}"
    paper = row.get("paper")
    if paper is not None and not (isinstance(paper, list) and 1 <= len(paper) <= 2 and all(map(_is_number, paper))):
        return f"paper must be null or [value] or [value, interval], got {paper!r}"
    runs = row.get("runs", [])
    if not (isinstance(runs, list) and all(isinstance(run, str) for run in runs)):
        return f"runs must be a list of run directories, got {runs!r}"
    if row.get("compare", "interval") not in COMPARISONS:
        return f"compare must be one of {', '.join(COMPARISONS)}, got {row['compare']!r}"
    return None


def checked_rows(path: Path, result: dict) -> list[str]:
    """Refuse a malformed row in one line; recompute each row's agreement from its numbers.

    Returns one line per row whose stored agreement differed from the recomputed one (the
    table shows the recomputed value).
    """
    corrected = []
    for number, row in enumerate(result["rows"], 1):
        problem = _row_problem(row)
        if problem:
            label = row.get("label") if isinstance(row, dict) else None
            raise HarnessError(f"{path}: row {number}{f' ({label!r})' if label else ''} {problem}")
        if row.get("mean") is None:
            agreement = "not run"
        else:
            compare = row.get("compare", "at_least" if row["unit"] == "x" else "interval")
            agreement = agrees(row["mean"], row["ci95"], row.get("paper"), compare)
        if row.get("agree") != agreement:
            corrected.append(
                f"{path}: row {row['label']!r}: agree recomputed as {agreement!r} (file: {row.get('agree')!r})"
            )
        row["agree"] = agreement
        row.setdefault("seeds", "")
        row.setdefault("tasks", "")
    return corrected


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
