"""A scoreboard: a reproduced table whose rows are cells (``group`` x ``column``), one line per algorithm.

Definitions with a ``[grid]`` (``harness.reproduce.definitions.expand_grid``) give every row a ``group``
(data set and algorithm) and a ``column`` (the measurement); ``harness report`` lays them out
here, below the long table, and, when the definition names a ``scoreboard = { x, y, y_minus }``,
draws each group as one point: ``x`` = the cell of column ``x``, ``y`` = column ``y`` minus
column ``y_minus`` (the feature-reuse scoreboard: body similarity before vs after adaptation
against the accuracy lost when the body is frozen).
"""

from __future__ import annotations

from pathlib import Path

from harness.reproduce.figures import new_figure, save_figure

NO_CELL = "—"  # the column does not apply to that algorithm (e.g. freezing without an inner loop)


def is_scoreboard(result: dict) -> bool:
    return any("column" in row for row in result["rows"])


def _cell(row: dict | None) -> str:
    if row is None:
        return NO_CELL
    if row.get("mean") is None:
        return "not run"
    if row["unit"] == "%":
        return f"{row['mean']:.1f} ± {row['ci95']:.1f}"
    if row["unit"] == "s":
        return f"{row['mean']:.2f}"
    if row["unit"] == "iterations":
        return f"{row['mean']:,.0f}"
    return f"{row['mean']:.3f} ± {row['ci95']:.3f}"


def _grid(result: dict) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    groups, columns, cells = [], [], {}
    for row in result["rows"]:
        if "column" not in row:
            continue
        groups += [row["group"]] if row["group"] not in groups else []
        columns += [row["column"]] if row["column"] not in columns else []
        cells[(row["group"], row["column"])] = row
    return groups, columns, cells


def render_scoreboard(result: dict) -> str:
    """Markdown: one line per group whose cells were run, one column per measurement."""
    from tabulate import tabulate

    groups, columns, cells = _grid(result)
    # a column this budget skips everywhere (listed under "Not run" with its reason) is left out
    columns = [c for c in columns if any(cells.get((g, c), {}).get("mean") is not None for g in groups)]
    units = {column: next(cells[g, column]["unit"] for g in groups if (g, column) in cells) for column in columns}
    bare = ("CCA", "CKA", "iterations")  # units the column's name already says
    headers = ["algorithm"] + [f"{c} ({units[c]})" if units[c] not in bare else c for c in columns]
    lines = []
    for group in groups:
        if all(cells.get((group, c), {}).get("mean") is None for c in columns):
            continue  # nothing of this group was run under this budget (listed under "Not run")
        lines.append([group] + [_cell(cells.get((group, c))) for c in columns])
    if not lines:
        return ""
    return "\n".join(
        [
            f"One line per algorithm (± the 95% CI over test tasks; {NO_CELL}: the measurement does not apply, "
            "no inner loop adapts anything at test time):",
            "",
            tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True),
            "",
        ]
    )


MARKERS = ("o", "s", "^", "D")


def plot_scoreboard(result: dict, axes: dict, out: Path) -> Path | None:
    """Each group as a point at (column ``x``, column ``y`` - column ``y_minus``), in the legend; None if no point."""
    groups, _, cells = _grid(result)
    points = []
    for group in groups:
        x, y, minus = (cells.get((group, axes[k])) or {} for k in ("x", "y", "y_minus"))
        if all(c.get("mean") is not None for c in (x, y, minus)):
            points.append((group, x["mean"], y["mean"] - minus["mean"]))
    if not points:
        return None
    figure, axis = new_figure(figsize=(9, 4.5))
    for number, (group, x, y) in enumerate(points):  # a colour and marker each, named in the legend: labels overlap
        marker = MARKERS[number // 10 % len(MARKERS)]
        axis.scatter([x], [y], color=f"C{number % 10}", marker=marker, s=40, label=group.split(", ", 1)[-1])
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axis.set_xlabel(axes.get("x_label", axes["x"]))
    axis.set_ylabel(axes.get("y_label", f"{axes['y']} - {axes['y_minus']}"))
    axis.axhline(0, color="grey", linewidth=0.6)
    axis.set_title(f"{result['title']}\nfeature reuse: right and low; rapid learning: left and high", fontsize=9)
    return save_figure(figure, out, dpi=110)
