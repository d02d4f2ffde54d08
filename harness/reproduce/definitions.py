"""Table definitions: the TOML files in ``experiments/``, read and checked before anything is planned.

The format is described in ``harness.reproduce.planning``; every mistake in a definition is one line naming
the file, the row and what is wrong, so a misspelt field never surfaces hours into a reproduction.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

from harness.errors import HarnessError
from harness.reproduce.until_plateau import check_until_plateau


def _experiments_folder() -> Path:
    """``experiments/``, installed as the data package ``harness_experiments`` (so a wheel install can
    reproduce); a source tree run without installing reads the folder itself."""
    spec = importlib.util.find_spec("harness_experiments")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "experiments"


EXPERIMENTS = _experiments_folder()


def load_definition(name: str) -> dict:
    path = Path(name) if name.endswith(".toml") else EXPERIMENTS / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS.glob("*.toml")))
        raise HarnessError(f"unknown table {name!r}; defined tables: {known} (or give a .toml file)")
    try:
        definition = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path} is not valid TOML: {exc}") from None
    if "grid" in definition:
        definition["rows"] = definition.get("rows", []) + expand_grid(definition["grid"], path)
    for needed in ("title", "budgets", "rows"):
        if needed not in definition:
            raise HarnessError(f"{path} has no {needed!r}")
    check_definition(definition, path)
    definition["name"] = path.stem
    return definition


def check_definition(definition: dict, path: Path) -> None:
    """The shape of a definition, checked before anything is planned: each mistake is one line naming it."""
    budgets, rows = definition["budgets"], definition["rows"]
    if not isinstance(budgets, dict) or not all(isinstance(b, dict) for b in budgets.values()):
        raise HarnessError(f"{path}: 'budgets' must be tables ([budgets.cpu], [budgets.paper]), got {budgets!r}")
    for name, budget in budgets.items():
        for kind, overrides in budget.items():
            if kind == "until_plateau":
                check_until_plateau(overrides, f"{path}: budgets.{name}.until_plateau")
            if kind in ("image", "rl") and not isinstance(overrides, dict):
                raise HarnessError(
                    f"{path}: budgets.{name}.{kind} must be a table of harness run flags, got {overrides!r}"
                )
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise HarnessError(f"{path}: 'rows' must be a non-empty array of tables ([[rows]]), got {rows!r}")
    speed = definition.get("kind") == "speed"
    labels = [row.get("label") for row in rows]
    repeated = sorted({label for label in labels if isinstance(label, str) and labels.count(label) > 1})
    if repeated:  # rows are pooled by label: two rows of one label would be reported as seeds of one
        raise HarnessError(f"{path}: two rows are labelled {repeated[0]!r}; every row needs a label of its own")
    for number, row in enumerate(rows, start=1):
        where = f"{path}: row {number}" + (f" ({row['label']!r})" if isinstance(row.get("label"), str) else "")
        for key in ("label",) if speed else ("label", "algo"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise HarnessError(f"{where} needs {key!r} (a string)")
        if speed:
            continue
        if not isinstance(row.get("data", row.get("env")), str):
            raise HarnessError(f"{where} needs 'data' (a task spec) or 'env' (a meta-RL environment), a string")
        for key in ("options", "overrides", "skip"):
            if not isinstance(row.get(key, {}), dict):
                raise HarnessError(f"{where}: {key!r} must be a table ({{ key = value }}), got {row[key]!r}")
        if "result_row" in row:
            raise HarnessError(
                f'{where}: result_row (a position) is replaced by result = "KEY" (the row\'s key, e.g. '
                f'"body.2" or "frozen 1-4"; harness.reproduce.tables.row_keys)'
            )
        if not isinstance(row.get("eval_data", ""), str):
            raise HarnessError(f"{where}: 'eval_data' must be a task spec (a string), got {row['eval_data']!r}")
        if not isinstance(row.get("result", ""), str):
            raise HarnessError(f"{where}: 'result' must be a row key (a string), got {row['result']!r}")
        offset = row.get("seed_offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise HarnessError(f"{where}: 'seed_offset' must be an integer >= 0, got {offset!r}")
        paper = row.get("paper")
        if paper is not None and (
            not isinstance(paper, list)
            or len(paper) not in (1, 2)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in paper)
        ):
            raise HarnessError(f"{where}: 'paper' must be [mean, interval] or [value] (numbers), got {paper!r}")
    if not speed:
        refuse_cycles(rows, path)


def refuse_cycles(rows: list[dict], path: Path) -> None:
    """Rows name other rows with ``"@LABEL"`` options (a comparison against that row's run); a row that
    names itself, or a chain of rows that comes back to where it started, compares a run with itself."""
    named = {
        row["label"]: [v[1:] for v in row.get("options", {}).values() if isinstance(v, str) and v.startswith("@")]
        for row in rows
    }

    def follow(chain: list[str]) -> None:
        for other in named.get(chain[-1], []):
            if other in chain:
                loop = " -> ".join(repr(label) for label in [*chain[chain.index(other) :], other])
                raise HarnessError(
                    f"{path}: rows name each other in a cycle ({loop}); a row cannot compare with itself"
                )
            follow([*chain, other])

    for label in named:
        follow([label])


def expand_grid(grid: dict, path: Path) -> list[dict]:
    """Rows of a scoreboard: every (data set, algorithm, column) of a ``[grid]`` table as one row.

    ``grid.data``: ``[{ data, eval_data, skip }]`` (``eval_data``: evaluate the runs trained on ``data`` on
    this task spec's test classes instead, ``harness eval --data``; shown as ``"DATA on EVAL_DATA"``); ``grid.algorithms``: ``[{ group, algo, overrides, inner_loop }]``;
    ``grid.columns``: ``[{ column, evaluator, options, result, unit, needs_inner_loop, skip }]``;
    ``grid.published`` (optional): ``[{ data, group, column, paper }]``, a published value for one cell
    (each must name a cell of the grid, so a typo cannot leave a value silently unattached). A row's
    label is ``"DATA, GROUP: COLUMN"``; it carries ``group`` and ``column`` so the report lays the rows
    out as one line per algorithm. A column with ``needs_inner_loop = true`` (freezing, similarity
    before vs after adaptation, weight distance) has no cell for an algorithm with
    ``inner_loop = false``: nothing adapts at test time. A cell is skipped under a budget when its data set
    or its column skips it (``skip = { BUDGET = "why" }``; the data set's reason is shown when both do).
    """
    for key in ("data", "algorithms", "columns"):
        if not isinstance(grid.get(key), list) or not grid[key] or not all(isinstance(e, dict) for e in grid[key]):
            raise HarnessError(f"{path}: grid.{key} must be a non-empty array of tables, got {grid.get(key)!r}")
    for kind, needed in (("data", "data"), ("algorithms", "group"), ("algorithms", "algo"), ("columns", "column")):
        for entry in grid[kind]:
            if not isinstance(entry.get(needed), str) or not entry[needed]:
                raise HarnessError(f"{path}: every grid.{kind} entry needs {needed!r} (a string), got {entry!r}")
    rows = []
    for data in grid["data"]:
        shown = f"{data['data']} on {data['eval_data']}" if data.get("eval_data") else data["data"]
        for algorithm in grid["algorithms"]:
            for column in grid["columns"]:
                if column.get("needs_inner_loop") and not algorithm.get("inner_loop", True):
                    continue
                row = {
                    "label": f"{shown}, {algorithm['group']}: {column['column']}",
                    "group": f"{shown}, {algorithm['group']}",
                    "column": column["column"],
                    "algo": algorithm["algo"],
                    "data": data["data"],
                    "overrides": dict(algorithm.get("overrides", {})),
                }
                for key in ("evaluator", "options", "result", "unit"):
                    if key in column:
                        row[key] = column[key]
                if "eval_data" in data:
                    row["eval_data"] = data["eval_data"]
                skip = {**column.get("skip", {}), **data.get("skip", {})}
                if skip:
                    row["skip"] = skip
                rows.append(row)
    by_cell = {tuple(row["group"].split(", ", 1)) + (row["column"],): row for row in rows}
    for entry in grid.get("published", []):
        cell = (entry.get("data"), entry.get("group"), entry.get("column")) if isinstance(entry, dict) else None
        if cell not in by_cell or "paper" not in entry:
            raise HarnessError(
                f"{path}: grid.published entry {entry!r} must name a cell of the grid (data, group, column) and its paper value"
            )
        by_cell[cell]["paper"] = entry["paper"]
    return rows
