"""A reproduced table as Markdown beside the paper, and the checks on its rows (``harness report``,
``harness reproduce``)."""

from __future__ import annotations

import math
from pathlib import Path

from harness.errors import HarnessError
from harness.reproduce.scoreboard import is_scoreboard, render_scoreboard
from harness.reproduce.tables import COMPARISONS, agrees


def format_value(mean: float, ci: float, unit: str) -> str:
    if unit == "x":  # a speedup: a ratio of medians, no interval
        return f"{mean:.2f}x"
    if unit == "iterations":  # a count: how long a run trained
        return f"{mean:,.0f} iterations"
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
            for unfinished in row.get("unfinished", []):  # a row measured on the seeds finished so far
                line = f"- {row['group'] if scoreboard else row['label']}, seed not finished: {unfinished}"
                not_run += [line] if line not in not_run else []
        rows.append([row["label"], measured, format_paper(row), row["agree"], row["seeds"], row["tasks"]])
    machine = result.get("machine", {})
    lines = [
        f"### {result['title']}",
        "",
        f"Budget `{result['budget']}`: {result.get('budget_note', '')}. Table built {result.get('date', '')} on "
        f"{machine.get('device_name', 'this machine')} ({machine.get('torch_threads', '?')} threads, "
        f"torch {machine.get('torch', '?')}; a row reuses an earlier evaluation only of the same checkpoint and "
        f"options); ± is the 95% CI over test tasks (one seed) or the standard deviation over "
        f"seeds (several, as the paper's tables)"
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
