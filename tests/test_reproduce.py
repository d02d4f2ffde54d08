"""harness reproduce / report: expansion and hashing, skip-if-done and resume, rendering, agreement, Ray."""

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from harness.commands.report import learning_curves, plateau_windows, plot_curves
from harness.plugin.manager import get_plugins
from harness.reproduce.definitions import load_definition
from harness.reproduce.planning import plan
from harness.reproduce.tables import aggregate, agrees
from harness.run.stopping import SIMULATED_SECONDS

TINY = """
title = "Tiny: 2D-Navigation smoke table"
source = "Raghu et al. 2020, Table 2 (RL rows)"
[budgets.cpu]
note = "2 iterations, 2 tasks"
rl = {{ iterations = 2, meta_batch_size = 2, test_tasks = 2 }}
[[rows]]
label = "2D-Navigation, MAML"
algo = "maml"
env = "2d-navigation"
paper = [-20.3, 3.2]
[[rows]]
label = "2D-Navigation, ANIL"
algo = "anil"
env = "2d-navigation"
paper = [{anil_paper}, 2.3]
"""


def tiny_definition(tmp_path, anil_paper=-20.1):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(TINY.format(anil_paper=anil_paper)))
    return path


def test_table4_expands_to_keyed_runs_shared_between_rows(tmp_path):
    runs = plan(get_plugins(), load_definition("table4"), "cpu", 2, tmp_path)
    maml, anil = "Omniglot 20w1s, MAML", "Omniglot 20w1s, ANIL"
    assert [(r.label, r.seed) for r in runs][:2] == [(maml, 0), (maml, 1)]
    anil_runs = [r for r in runs if r.label == anil]
    nil = [r for r in runs if r.label == "Omniglot 20w1s, NIL at test time (ANIL-trained body)"]
    assert [r.run_dir for r in anil_runs] == [r.run_dir for r in nil]  # NIL evaluates the ANIL runs: trained once
    assert nil[0].evaluator == "nil" and anil_runs[0].evaluator == "fewshot"
    runnable = [r for r in runs if not r.skipped]
    assert len({r.key for r in runnable}) == 4  # 2 algorithms x 2 seeds; the other benchmarks are not run on CPU
    assert len({r.key for r in runs}) == 16  # 4 benchmarks x 2 algorithms x 2 seeds, all planned
    paper = plan(get_plugins(), load_definition("table4"), "paper", 1, tmp_path)
    assert paper[0].key != runs[0].key  # the budget is part of the resolved config
    assert not any(r.skipped for r in paper)  # the paper budget runs every row
    assert runs[0].run_dir.name == f"maml-omniglot-20w1s-seed0-{runs[0].key}"
    command = runs[0].command("/data")
    assert command[3:] == [
        "run",
        "--algo",
        "maml",
        "--data",
        "omniglot-20w1s",
        "--seed",
        "0",
        "--out",
        str(runs[0].run_dir),
        "--iterations",
        "300",
        "--val-every",
        "100",
        "--data-root",
        "/data",
        "--no-progress",
    ]
    assert runs[0].command("/data", time_limit=90.7)[-3:] == ["--time-limit", "90", "--no-progress"]


@pytest.mark.parametrize(
    "name",
    [
        "table1",
        "table2",
        "table3",
        "table4",
        "table5",
        "table7",
        "table8",
        "figure2",
        "figure3",
        "figure5",
        "figure6",
        "figure10",
    ],
)
def test_every_paper_definition_plans_under_both_budgets(name, tmp_path):
    """Every row is planned under both budgets; rows the CPU budget skips say why, the paper budget skips only
    a row that others of it replace (naming them: 'the rows starting "..."')."""
    definition = load_definition(name)
    cpu = plan(get_plugins(), definition, "cpu", 1, tmp_path)
    paper = plan(get_plugins(), definition, "paper", 1, tmp_path)
    assert [r.label for r in cpu] == [r.label for r in paper] == [row["label"] for row in definition["rows"]]
    for row in (r for r in paper if r.skipped):
        replacement = re.search(r'the rows starting "([^"]+)"', row.skipped)
        assert replacement, row.skipped
        assert any(r.label.startswith(replacement[1]) and not r.skipped for r in paper), row.skipped
    assert all(len(r.skipped) > 40 for r in cpu if r.skipped)  # a reason, not a flag
    published = [row for row in definition["rows"] if row.get("paper")]
    assert all(not row["label"].startswith("Omniglot analogue") or row.get("compare") for row in published)


def test_full_budget_runs_share_one_key_across_tables(tmp_path):
    keys = {
        name: {r.label: r.key for r in plan(get_plugins(), load_definition(name), "paper", 1, tmp_path)}
        for name in ("table2", "table4", "figure2", "figure3", "figure10")
    }
    anil = keys["table2"]["Omniglot 20w1s, ANIL"]
    assert keys["table4"]["Omniglot 20w1s, NIL at test time (ANIL-trained body)"] == anil
    assert keys["figure2"]["Omniglot analogue: ANIL network adapted as MAML, CCA head"] == anil
    assert keys["figure3"]["Omniglot analogue: ANIL network adapted as MAML, iteration 10000, nothing frozen"] == anil
    assert keys["figure10"]["Omniglot 20w1s, ANIL"] == anil
    assert (
        keys["table2"]["MiniImageNet 5w5s, MAML"]
        == keys["figure3"]["MiniImageNet 5w5s, MAML, iteration 10000, nothing frozen"]
    )


def test_rewording_a_source_keeps_the_key():
    from harness.reproduce.planning import config_key

    config = {"algo": "anil", "iterations": 30000, "sources": {"iterations": "Raghu et al. 2020 App. A"}}
    reworded = {**config, "sources": {"iterations": "Raghu et al. 2020 App. C.4"}}
    assert config_key(config) == config_key(reworded)
    assert config_key(config) != config_key({**config, "iterations": 29999})


def test_agreement_and_aggregation():
    assert agrees(95.0, 0.5, [96.2, 0.5]) == "no"
    assert agrees(95.5, 0.5, [96.2, 0.5]) == "yes"
    assert agrees(-18.0, 1.0, [-20.1, 2.3]) == "yes"
    assert agrees(1.0, 0.1, None) == "n/a"
    assert agrees(61.0, 0.5, [61.3]) == "yes" and agrees(60.0, 0.5, [61.3]) == "no"  # no published interval
    assert agrees(0.45, 0.01, [0.5], "at_most") == "yes" and agrees(0.55, 0.01, [0.5], "at_most") == "no"
    assert agrees(0.95, 0.01, [0.9], "at_least") == "yes"
    assert aggregate([{"mean": 90.0, "ci95": 0.7}]) == (90.0, 0.7)
    mean, spread = aggregate([{"mean": 90.0, "ci95": 0.7}, {"mean": 92.0, "ci95": 0.7}, {"mean": 94.0, "ci95": 0.7}])
    assert mean == 92.0 and spread == pytest.approx(2.0)  # the sample standard deviation, as the paper's tables


def test_bad_definitions_are_one_line_errors(tmp_path):
    result = run_cli("reproduce", "table9")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "harness: error: unknown table 'table9'; defined tables: cross-domain, feature-reuse, figure10, figure2, figure3, figure5, figure6, table1, table2, table3, table4, table5, table6, table7, table8 (or give a .toml file)"
    )
    result = run_cli("reproduce", tiny_definition(tmp_path), "--budget", "paper")
    assert result.stderr.strip() == "harness: error: table 'tiny' has no budget 'paper'; budgets: cpu"


def test_reproduce_skips_finished_runs_resumes_started_ones_and_reports(tmp_path):
    definition = tiny_definition(tmp_path)
    args = ["reproduce", definition, "--root", tmp_path / "root", "--results", tmp_path / "results", "--workers", "2"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "results" / "reproduced" / "tiny-cpu.json").read_text())
    assert [row["label"] for row in table["rows"]] == ["2D-Navigation, MAML", "2D-Navigation, ANIL"]
    assert all(row["seeds"] == 1 and row["tasks"] == 2 and row["agree"] in ("yes", "no") for row in table["rows"])
    assert "| 2D-Navigation, MAML |" in result.stdout and "-20.3 ± 3.2" in result.stdout

    maml_dir = tmp_path / "root" / "runs"
    runs = sorted(p for p in maml_dir.iterdir() if p.is_dir())
    logs = {run: (run.parent / (run.name + ".log")).read_text() for run in runs}
    (runs[0] / "summary.json").unlink()  # interrupted after its last checkpoint
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert (runs[1].parent / (runs[1].name + ".log")).read_text() == logs[runs[1]]  # finished: not run again
    assert len((runs[0] / "metrics.jsonl").read_text().splitlines()) == 2  # resumed at step 2, not restarted
    assert (runs[0] / "summary.json").exists()

    report = run_cli("report", "--results", tmp_path / "results")
    assert report.returncode == 0, report.stderr
    readme = (tmp_path / "results" / "README.md").read_text()
    assert readme.count("<!-- reproduced:start -->") == 1 and "Tiny: 2D-Navigation smoke table" in readme
    assert (tmp_path / "results" / "reproduced" / "tiny-cpu-curves.png").stat().st_size > 10_000
    assert run_cli("report", "--results", tmp_path / "results").returncode == 0
    assert (tmp_path / "results" / "README.md").read_text().count("<!-- reproduced:start -->") == 1


def test_label_references_and_seed_offsets_resolve_to_run_directories(tmp_path):
    runs = plan(get_plugins(), load_definition("table3"), "cpu", 1, tmp_path)
    by_label = {run.label: run for run in runs}
    assert by_label["MAML, second seed"].seed == 1 and by_label["MAML"].seed == 0
    maml_vs_anil = by_label["Omniglot analogue: body CCA, MAML vs ANIL (same seed)"]
    assert maml_vs_anil.run_dir == by_label["MAML"].run_dir  # evaluates the MAML row's run, trained once
    assert maml_vs_anil.resolved_options == {
        "against": str(by_label["ANIL"].run_dir),
        "measure": "cca",
        "num_tasks": 50,
    }
    assert by_label["Omniglot analogue: body CCA, MAML vs MAML (two seeds)"].resolved_options["against"] == str(
        by_label["MAML, second seed"].run_dir
    )
    assert maml_vs_anil.unit == "CCA" and by_label["MAML"].unit == "%"
    command = maml_vs_anil.command(None)
    assert "--seed" in command and command[command.index("--seed") + 1] == "0"
    # A row whose "@LABEL" names a row this budget does not run is not run either, and says why.
    table8 = {run.label: run for run in plan(get_plugins(), load_definition("table8"), "cpu", 1, tmp_path)}
    random_vs_maml = table8["MiniImageNet 5w5s, (Random features, MAML) CCA"]
    assert random_vs_maml.skipped.startswith(
        "needs row 'MiniImageNet 5w5s, MAML', not run: MiniImageNet at the paper's"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(
        textwrap.dedent("""
        title = "Bad"
        [budgets.cpu]
        image = {}
        [[rows]]
        label = "A"
        algo = "maml"
        data = "omniglot-20w1s"
        evaluator = "run-similarity"
        options = { against = "@B" }
    """)
    )
    result = run_cli("reproduce", bad, "--plan")
    assert result.returncode == 2
    assert result.stderr.strip() == "harness: error: row 'A' of bad: option against = '@B' names no row; rows: A"


def test_a_chosen_row_brings_the_rows_it_compares_against(tmp_path):
    from harness.commands.reproduce import chosen_runs

    runs = plan(get_plugins(), load_definition("table3"), "cpu", 1, tmp_path)
    chosen = chosen_runs(runs, ["Omniglot analogue: body CCA, MAML vs ANIL (same seed)"])
    assert sorted(run.label for run in chosen) == ["ANIL", "Omniglot analogue: body CCA, MAML vs ANIL (same seed)"]
    assert [run.label for run in chosen_runs(runs, ["MAML"])] == ["MAML"]


def test_speed_table_measures_speedups_against_the_paper_floor(tmp_path):
    from harness.reproduce.tables import speed_table

    definition = {
        "budgets": {"cpu": {"rounds": 1}},
        "rows": [
            {
                "label": "fast enough",
                "config": "mini-5w1s",
                "phase": "inference",
                "algorithm": "anil",
                "paper": [1.0, 0.0],
            },
            {
                "label": "never",
                "config": "mini-5w1s",
                "phase": "inference",
                "algorithm": "anil",
                "paper": [1000.0, 0.0],
            },
        ],
    }
    rows = speed_table(definition, "cpu")
    assert rows[0]["mean"] > 1.0 and rows[0]["mean"] == rows[1]["mean"]  # the MAML and ANIL medians are measured once
    assert [row["agree"] for row in rows] == ["yes", "no"] and rows[0]["unit"] == "x"
    assert set(rows[0]["seconds"]) == {"maml", "anil"}
    assert agrees(2.0, 0.0, [1.7, 0.0], "at_least") == "yes" and agrees(1.6, 0.0, [1.7, 0.0], "at_least") == "no"


def test_report_renders_similarity_units_and_copies_evaluator_figures(tmp_path):
    figure = tmp_path / "bars.png"
    figure.write_bytes(b"\x89PNG fixture")
    fixture = {
        "name": "fig",
        "title": "Figure X",
        "source": "paper",
        "budget": "cpu",
        "budget_note": "tiny",
        "rows": [
            {
                "label": "layer 1",
                "mean": 0.95,
                "ci95": 0.01,
                "seeds": 1,
                "paper": None,
                "agree": "n/a",
                "unit": "CCA",
                "runs": [],
                "tasks": 50,
                "figures": [str(figure)],
            },
            {
                "label": "speed",
                "mean": 7.25,
                "ci95": 0.0,
                "seeds": 1,
                "paper": [1.7, 0.0],
                "agree": "yes",
                "unit": "x",
                "runs": [],
                "tasks": "5 rounds",
            },
        ],
    }
    (tmp_path / "reproduced").mkdir()
    (tmp_path / "reproduced" / "fig.json").write_text(json.dumps(fixture))
    result = run_cli("report", "--results", tmp_path)
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "reproduced" / "fig.md").read_text()
    assert "| layer 1 | 0.950 ± 0.010 (CCA) | n/a" in markdown
    assert "| speed   | 7.25x               | 1.7x (a floor) | yes" in markdown
    assert (tmp_path / "reproduced" / "fig-figure1.png").read_bytes() == figure.read_bytes()
    assert "![Figure X](reproduced/fig-figure1.png)" in (tmp_path / "README.md").read_text()


def test_report_renders_fixture_results_with_the_agreement_column(tmp_path):
    fixture = {
        "name": "t",
        "title": "Table X",
        "source": "paper",
        "budget": "cpu",
        "budget_note": "tiny",
        "rows": [
            {
                "label": "A",
                "mean": 95.5,
                "ci95": 0.5,
                "seeds": 1,
                "paper": [96.2, 0.5],
                "agree": "yes",
                "unit": "%",
                "runs": [],
                "tasks": 600,
            },
            {
                "label": "B",
                "mean": 90.0,
                "ci95": 0.5,
                "seeds": 3,
                "paper": [96.2, 0.5],
                "agree": "no",
                "unit": "%",
                "runs": [],
                "tasks": 600,
            },
        ],
    }
    (tmp_path / "reproduced").mkdir()
    (tmp_path / "reproduced" / "t.json").write_text(json.dumps(fixture))
    (tmp_path / "README.md").write_text("# Results\n\nhand-written part\n")
    result = run_cli("report", "--results", tmp_path)
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "reproduced" / "t.md").read_text()
    assert "| A     | 95.50 ± 0.50 % | 96.2 ± 0.5 % | yes     |" in markdown
    assert "| B     | 90.00 ± 0.50 % | 96.2 ± 0.5 % | no      |" in markdown
    assert (tmp_path / "README.md").read_text().startswith("# Results\n\nhand-written part\n")
    assert (
        run_cli("report", "--results", tmp_path / "empty")
        .stderr.strip()
        .startswith("harness: error: nothing reproduced yet")
    )


def test_ray_executor_on_a_local_instance(tmp_path):
    definition = tiny_definition(tmp_path)
    result = run_cli(
        "reproduce", definition, "--root", tmp_path / "root", "--results", tmp_path / "results", "--executor", "ray"
    )
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "results" / "reproduced" / "tiny-cpu.json").read_text())
    assert len(table["rows"]) == 2 and all(len(row["runs"]) == 1 for row in table["rows"])
    for run_dir in (row["runs"][0] for row in table["rows"]):
        assert json.loads((tmp_path / "root" / "runs" / run_dir.rsplit("/", 1)[1] / "summary.json").read_text())


LONGER = """
title = "Tiny: stopped and resumed"
[budgets.cpu]
note = "40 iterations, 2 tasks"
rl = { iterations = 40, meta_batch_size = 2, test_tasks = 2 }
[[rows]]
label = "2D-Navigation, MAML"
algo = "maml"
env = "2d-navigation"
paper = [-20.3, 3.2]
[[rows]]
label = "2D-Navigation, ANIL"
algo = "anil"
env = "2d-navigation"
paper = [-20.1, 2.3]
[[rows]]
label = "HalfCheetah-Velocity, ANIL"
algo = "anil"
env = "halfcheetah-vel"
paper = [-120.9, 6.3]
skip = { cpu = "HalfCheetah at 500 iterations does not fit this budget (measured 28.3 s/iteration)" }
"""


def test_reproduce_time_limit_stops_runs_and_the_next_call_resumes_them(tmp_path):
    """On a simulated machine (0.25 s per iteration, tests only): the first run gets the 2 whole seconds left
    of 3 s after its launch and stops at iteration 7 on any machine; the second is not started."""
    definition = tmp_path / "longer.toml"
    definition.write_text(LONGER)
    args = ["reproduce", definition, "--root", tmp_path / "root", "--results", tmp_path / "results"]
    stopped = run_cli(*args, "--time-limit", "3s", env_extra={SIMULATED_SECONDS: "0.25"})
    assert stopped.returncode == 75, stopped.stderr
    assert stopped.stderr.startswith("harness: stopped (time limit 3s reached): ") and stopped.stderr.count("\n") == 1
    assert stopped.stderr.rstrip().endswith(
        f"run(s) unfinished, their checkpoints kept; continue with: "
        f"harness reproduce {definition} --budget cpu --root {tmp_path / 'root'} "
        f"--results {tmp_path / 'results'} --time-limit 3s"  # every flag given, so the same call continues
    )
    assert not (tmp_path / "results" / "reproduced" / "longer-cpu.json").exists()
    started = [p for p in (tmp_path / "root" / "runs").iterdir() if p.is_dir()]
    assert len(started) == 1 and not (started[0] / "summary.json").exists()  # the second run never started
    assert json.loads((started[0] / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 7
    plan = run_cli(*args, "--plan")
    assert plan.returncode == 0, plan.stderr
    assert re.search(r"\| started \(step [1-7] of 40\) +\|", plan.stdout), plan.stdout  # where it continues

    finished = run_cli(*args)
    assert finished.returncode == 0, finished.stderr
    rows = (started[0] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in rows] == list(range(1, 41))  # resumed, not restarted
    table = json.loads((tmp_path / "results" / "reproduced" / "longer-cpu.json").read_text())
    cheetah = table["rows"][2]
    assert cheetah["mean"] is None and cheetah["agree"] == "not run"
    assert cheetah["not_run"] == "HalfCheetah at 500 iterations does not fit this budget (measured 28.3 s/iteration)"
    markdown = (tmp_path / "results" / "reproduced" / "longer-cpu.md").read_text()
    assert re.search(r"\| HalfCheetah-Velocity, ANIL \| not run +\| -120\.9 ± 6\.3 +\| not run +\|", markdown)
    assert "Not run:\n\n- HalfCheetah-Velocity, ANIL: HalfCheetah at 500 iterations does not fit" in markdown


def test_no_train_builds_the_table_from_finished_runs_only(tmp_path):
    definition = tiny_definition(tmp_path)
    result = run_cli(
        "reproduce", definition, "--no-train", "--root", tmp_path / "root", "--results", tmp_path / "results"
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "root" / "runs").exists()  # nothing trained
    table = json.loads((tmp_path / "results" / "reproduced" / "tiny-cpu.json").read_text())
    assert [row["agree"] for row in table["rows"]] == ["not run", "not run"]
    assert table["rows"][0]["not_run"].endswith(": to run")
    plan_output = run_cli("reproduce", definition, "--plan", "--root", tmp_path / "root").stdout
    assert "| 2D-Navigation, MAML | -20.3 ± 3.2 |" in plan_output


def test_report_renders_bounds_and_values_printed_without_an_interval(tmp_path):
    fixture = {
        "name": "b",
        "title": "Figure Y",
        "source": "paper",
        "budget": "paper",
        "budget_note": "full",
        "rows": [
            {
                "label": "head",
                "mean": 0.42,
                "ci95": 0.01,
                "seeds": 1,
                "paper": [0.5],
                "compare": "at_most",
                "agree": "yes",
                "unit": "CCA",
                "runs": [],
                "tasks": 50,
            },
            {
                "label": "iteration 10000",
                "mean": 60.9,
                "ci95": 0.6,
                "seeds": 1,
                "paper": [61.3],
                "agree": "yes",
                "unit": "%",
                "runs": [],
                "tasks": 600,
            },
        ],
    }
    (tmp_path / "reproduced").mkdir()
    (tmp_path / "reproduced" / "b.json").write_text(json.dumps(fixture))
    assert run_cli("report", "--results", tmp_path).returncode == 0
    markdown = (tmp_path / "reproduced" / "b.md").read_text()
    assert "| head            | 0.420 ± 0.010 (CCA) | ≤ 0.5 (CCA) | yes " in markdown
    assert "| iteration 10000 | 60.90 ± 0.60 %      | 61.3 %      | yes " in markdown


def test_malformed_reproduce_time_limit_is_one_line(tmp_path):
    result = run_cli("reproduce", tiny_definition(tmp_path), "--time-limit", "soon", "--root", tmp_path / "root")
    assert result.returncode == 2
    assert result.stderr == (
        "harness: error: --time-limit: cannot read 'soon' as a duration; use e.g. 90m, 1h30m, 45s or 5400 (seconds)\n"
    )


RUNS = Path(__file__).resolve().parents[1] / "results" / "reproduce" / "runs"


@pytest.mark.parametrize(
    "output, expected",
    [
        (
            "anil-omniglot-20w1s-seed0-4fa624ca1196/eval-freeze-adapt_as=maml-all_checkpoints=1.json",
            [f"checkpoint {c}: frozen {s}" for c in (1, 2, 3) for s in ("none", "1", "1-2", "1-3", "1-4")]
            + [f"frozen {s}" for s in ("none", "1", "1-2", "1-3", "1-4")],
        ),
        (
            "anil-omniglot-20w1s-seed0-4fa624ca1196/eval-similarity-adapt_as=maml-measure=cca-num_tasks=50.json",
            ["body.0", "body.1", "body.2", "body.3", "head"],
        ),
        (
            "anil-omniglot-20w1s-seed0-a1f94fb11c49/eval-run-similarity-against=ANIL, second seed-measure=cca-num_tasks=50.json",
            [
                f"{layer} {when}"
                for when in ("pre", "post")
                for layer in ("body.0", "body.1", "body.2", "body.3", "head")
            ]
            + ["body mean pre"],  # written before the "body 1-3 mean" row existed
        ),
    ],
)
def test_definitions_address_evaluator_rows_by_key(output, expected):
    from harness.reproduce.tables import row_keys

    assert row_keys(json.loads((RUNS / output).read_text())["rows"]) == expected


def test_every_result_key_in_the_definitions_is_one_the_evaluators_give():
    """A misspelt key would only fail when its row is evaluated, hours later: check them all now."""
    from harness.reproduce.definitions import EXPERIMENTS

    settings = ["none", "1", "1-2", "1-3", "1-4"]
    layers = ["body.0", "body.1", "body.2", "body.3", "head"]
    possible = {
        "freeze": {f"frozen {s}" for s in settings}
        | {f"checkpoint {c}: frozen {s}" for c in (1, 2, 3) for s in settings},
        "similarity": {*layers, "body mean"},
        "weight-distance": {*layers, "body"},
        "run-similarity": {f"{layer} {w}" for layer in layers for w in ("pre", "post")}
        | {"body mean pre", "body 1-3 mean pre"},
        "seed-similarity": {"pre,post", "post,pre", "post,post"},
        "plateau": {"gain", "last", "iterations"},
    }
    used = 0
    for path in EXPERIMENTS.glob("*.toml"):
        for row in load_definition(str(path))["rows"]:  # grid cells included
            if "result" in row:
                assert row["result"] in possible[row.get("evaluator", "fewshot")], (path.name, row["label"])
                used += 1
    assert used > 100


def test_a_position_instead_of_a_key_is_refused_with_one_line(tmp_path):
    definition = tmp_path / "old.toml"
    definition.write_text(
        'title = "t"\n[budgets.cpu]\n[[rows]]\nlabel = "a"\nalgo = "anil"\ndata = "omniglot-5w1s"\n'
        'evaluator = "freeze"\nresult_row = 2\n'
    )
    result = run_cli("reproduce", definition, "--plan")
    assert result.returncode == 2
    assert result.stderr == (
        f"harness: error: {definition}: row 1 ('a'): result_row (a position) is replaced by result = "
        f'"KEY" (the row\'s key, e.g. "body.2" or "frozen 1-4"; harness.reproduce.tables.row_keys)\n'
    )


def test_a_grid_definition_expands_to_one_row_per_cell_and_skips_inner_loop_columns_without_one(tmp_path):
    definition = load_definition("feature-reuse")
    rows = [row for row in definition["rows"] if row["data"] == "omniglot-20w1s"]
    by_group = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row["column"])
    assert by_group["omniglot-20w1s, MAML"][:4] == ["accuracy", "body frozen", "layers 1-3 frozen", "NIL"]
    assert len(by_group["omniglot-20w1s, MAML"]) == 13
    # No inner loop: no freezing, similarity or distance cells.
    assert by_group["omniglot-20w1s, Prototypical Networks"] == [
        "accuracy",
        "NIL",
        "s/iteration",
        "iterations",
        "val gain, last quarter",
    ]
    boil_default = next(r for r in rows if r["group"] == "omniglot-20w1s, BOIL (PyTorch default head)")
    assert boil_default["overrides"] == {"head_init": "default"} and boil_default["algo"] == "boil"
    runs = plan(get_plugins(), definition, "cpu", 1, tmp_path)
    maml_dirs = {run.run_dir for run in runs if run.label.startswith("omniglot-20w1s, MAML:")}
    assert len(maml_dirs) == 1  # ten cells, one training run
    boil_dirs = {run.run_dir for run in runs if run.algo == "boil" and run.task == "omniglot-20w1s"}
    assert len(boil_dirs) == 2  # the head initialisation is part of the run's key
    assert all(run.skipped for run in runs if run.task == "miniimagenet-5w1s")


def test_the_converged_budget_trains_omniglot_5w1s_only_and_the_quick_board_skips_the_plateau_column(tmp_path):
    definition = load_definition("feature-reuse")
    converged = plan(get_plugins(), definition, "converged", 1, tmp_path)
    assert {run.task for run in converged if not run.skipped} == {"omniglot-5w1s"}
    assert len({run.run_dir for run in converged if not run.skipped}) == 10  # one training run per algorithm
    quick = plan(get_plugins(), definition, "cpu", 1, tmp_path)
    plateau = [run for run in quick if run.label.endswith(": val gain, last quarter")]
    assert plateau and all(run.skipped for run in plateau)
    assert plateau[0].skipped.startswith("500 iterations validate twice")  # the column's reason
    mini = next(run for run in plateau if run.task == "miniimagenet-5w1s")
    assert mini.skipped.startswith("MiniImageNet at the paper's budget")  # the data set's reason comes first
    ran = [run for run in quick if not run.skipped]
    assert {run.task for run in ran} == {"omniglot-20w1s"} and not any("val gain" in run.label for run in ran)
    lengths = [run for run in converged if run.label == "omniglot-5w1s, FOMAML: iterations"]
    assert [(run.evaluator, run.result, run.unit) for run in lengths] == [("plateau", "iterations", "iterations")]


def test_a_malformed_grid_is_one_line_naming_what_is_wrong(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        'title = "t"\n[budgets.cpu]\nimage = {}\n[grid]\ndata = [{ data = "omniglot-20w1s" }]\n'
        'algorithms = [{ algo = "maml" }]\ncolumns = [{ column = "accuracy" }]\n'
    )
    result = run_cli("reproduce", str(path), "--plan")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"harness: error: {path}: every grid.algorithms entry needs 'group' (a string), got {{'algo': 'maml'}}"
    )


def _cell(group, column, mean, ci=1.0, unit="%"):
    return {
        "label": f"{group}: {column}",
        "group": group,
        "column": column,
        "mean": mean,
        "ci95": None if mean is None else ci,
        "seeds": 1 if mean is not None else 0,
        "paper": None,
        "agree": "n/a" if mean is not None else "not run",
        "unit": unit,
        "runs": [],
        "tasks": 600,
        **({"not_run": "too slow here"} if mean is None else {}),
    }


def test_report_lays_a_scoreboard_out_one_line_per_algorithm_and_places_each_on_the_axis(tmp_path):
    rows = [
        _cell("o, MAML", "accuracy", 80.0),
        _cell("o, MAML", "body frozen", 60.0),
        _cell("o, MAML", "CCA body", 0.8, 0.02, "CCA"),
        _cell("o, MAML", "iterations", 17500.0, 0.0, "iterations"),
        _cell("o, ProtoNets", "accuracy", 90.0),
        _cell("m, MAML", "accuracy", None),
        _cell("m, MAML", "body frozen", None),
        _cell("o, MAML", "val gain", None),  # a column this budget skips everywhere
    ]
    fixture = {
        "name": "board",
        "title": "Board",
        "source": "s",
        "budget": "cpu",
        "budget_note": "n",
        "rows": rows,
        "scoreboard": {"x": "CCA body", "y": "accuracy", "y_minus": "body frozen"},
    }
    (tmp_path / "reproduced").mkdir()
    (tmp_path / "reproduced" / "board.json").write_text(json.dumps(fixture))
    result = run_cli("report", "--results", tmp_path)
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "reproduced" / "board.md").read_text()
    assert "| algorithm    | accuracy (%)   | body frozen (%)   | CCA body      | iterations   |" in markdown
    assert "| o, MAML      | 80.0 ± 1.0     | 60.0 ± 1.0        | 0.800 ± 0.020 | 17,500       |" in markdown
    assert "| o, ProtoNets | 90.0 ± 1.0     | —                 | —             | —            |" in markdown
    long_row = next(line for line in markdown.splitlines() if line.startswith("| o, MAML: iterations "))
    assert long_row.split("|")[2].strip() == "17,500 iterations"  # the long table, too
    assert "| m, MAML" not in markdown  # nothing of it was run: named once under "Not run"
    assert "val gain (%)" not in markdown  # nor a column no algorithm has
    assert markdown.count("- m, MAML: too slow here") == 1
    assert (tmp_path / "reproduced" / "board-axis.png").exists()  # only MAML has all three cells


def test_published_values_attach_to_their_grid_cells_and_a_wrong_cell_is_refused(tmp_path):
    definition = load_definition("feature-reuse")
    papers = {row["label"]: row.get("paper") for row in definition["rows"] if row.get("paper")}
    assert papers == {
        "miniimagenet-5w1s, MAML: accuracy": [48.47, 0.26],
        "miniimagenet-5w1s, BOIL (PyTorch default head): accuracy": [49.65, 0.19],
    }
    path = tmp_path / "typo.toml"
    path.write_text(
        'title = "t"\n[budgets.cpu]\nimage = {}\n[grid]\ndata = [{ data = "omniglot-20w1s" }]\n'
        'algorithms = [{ group = "MAML", algo = "maml" }]\ncolumns = [{ column = "accuracy" }]\n'
        'published = [{ data = "omniglot-20w1s", group = "MAML", column = "acuracy", paper = [1.0] }]\n'
    )
    result = run_cli("reproduce", str(path), "--plan")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"harness: error: {path}: grid.published entry {{'data': 'omniglot-20w1s', 'group': 'MAML', "
        "'column': 'acuracy', 'paper': [1.0]} must name a cell of the grid (data, group, column) and its paper value"
    )


def test_the_continue_line_repeats_every_flag_given_shell_quoted():
    from argparse import Namespace

    from harness.commands.reproduce import continue_command

    args = Namespace(table="my table.toml", budget="paper", seeds=3, executor="local", workers=2, address=None)
    args.__dict__.update(root="runs here", results="results", data_root="/data/it's", time_limit="2h", row=None)
    assert continue_command(args) == (
        "harness reproduce 'my table.toml' --budget paper --seeds 3 --workers 2 --root 'runs here' "
        """--data-root '/data/it'"'"'s' --time-limit 2h"""
    )
    args.row = ["Omniglot 20w1s, MAML", "Omniglot 20w5s, ANIL"]
    assert continue_command(args).endswith("--time-limit 2h --row 'Omniglot 20w1s, MAML' --row 'Omniglot 20w5s, ANIL'")


def test_row_trains_only_that_row_and_builds_the_rest_of_the_table_from_finished_runs(tmp_path):
    definition = tiny_definition(tmp_path)
    common = ["--root", tmp_path / "root", "--results", tmp_path / "results"]
    result = run_cli("reproduce", definition, "--row", "2D-Navigation, ANIL", *common)
    assert result.returncode == 0, result.stderr
    runs = sorted(p.name for p in (tmp_path / "root" / "runs").iterdir() if p.is_dir())
    assert len(runs) == 1 and runs[0].startswith("anil-rl-2d-navigation-seed0-")
    table = json.loads((tmp_path / "results" / "reproduced" / "tiny-cpu.json").read_text())
    assert [row["agree"] == "not run" for row in table["rows"]] == [True, False]
    assert table["rows"][0]["not_run"].endswith(": to run")

    anil_log = (tmp_path / "root" / "runs" / f"{runs[0]}.log").read_text()
    assert run_cli("reproduce", definition, *common).returncode == 0  # now the MAML row; ANIL is finished
    assert (tmp_path / "root" / "runs" / f"{runs[0]}.log").read_text() == anil_log
    table = json.loads((tmp_path / "results" / "reproduced" / "tiny-cpu.json").read_text())
    assert all(row["mean"] is not None for row in table["rows"])


def test_a_row_the_table_does_not_have_is_one_line_before_any_work(tmp_path):
    definition = tiny_definition(tmp_path)
    result = run_cli("reproduce", definition, "--row", "2D-Navigation, BOIL", "--root", tmp_path / "root")
    assert (result.returncode, result.stderr) == (
        2,
        "harness: error: --row '2D-Navigation, BOIL' names no row of this table; "
        "its rows: 2D-Navigation, MAML; 2D-Navigation, ANIL\n",
    )
    assert not (tmp_path / "root").exists()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_runs_stop_cleanly_when_reproduce_is_killed(tmp_path):
    """SIGKILL gives reproduce no chance to forward anything: its runs must notice on their own."""
    definition = tmp_path / "long.toml"
    definition.write_text(LONGER.replace("iterations = 40", "iterations = 400"))
    root = tmp_path / "root"
    parent = subprocess.Popen(
        [sys.executable, "-m", "harness", "reproduce", str(definition), "--root", str(root)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    while not rows:  # wait for the first run's first iteration
        assert parent.poll() is None
        rows = [p for p in root.glob("runs/*/metrics.jsonl") if p.stat().st_size]
        time.sleep(0.05)
    run_dir = rows[0].parent
    child = int((run_dir / ".lock").read_text().split(":")[0].removeprefix("pid "))
    parent.kill()
    parent.wait()
    while _alive(child):
        time.sleep(0.05)
    log = Path(f"{run_dir}.log").read_text()
    assert "(received SIGTERM); checkpoint written; continue with: harness run --resume" in log, log
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "summary.json").exists()


def test_no_train_never_turns_a_measured_table_into_not_run(tmp_path):
    definition = tiny_definition(tmp_path)
    out = tmp_path / "results" / "reproduced" / "tiny-cpu.json"
    out.parent.mkdir(parents=True)
    measured = {"name": "tiny", "rows": [{"label": "2D-Navigation, MAML", "mean": -17.0, "ci95": 0.9}]}
    out.write_text(json.dumps(measured))
    result = run_cli(
        "reproduce", definition, "--no-train", "--root", tmp_path / "empty", "--results", tmp_path / "results"
    )
    assert result.returncode == 2
    assert re.fullmatch(
        re.escape(f"harness: error: {out} has 1 measured row(s) that --root {tmp_path / 'empty'} cannot measure again ")
        + r"\(first: '2D-Navigation, MAML': maml-rl-2d-navigation-seed0-[0-9a-f]{12}: to run\); "
        + re.escape("not rewritten: point --root at the runs, or move tiny-cpu.json away\n"),
        result.stderr,
    ), result.stderr
    assert json.loads(out.read_text()) == measured


def test_no_train_reports_a_row_on_the_seeds_finished_so_far_and_names_the_others(tmp_path):
    definition = tiny_definition(tmp_path)
    common = ["--root", tmp_path / "root", "--results", tmp_path / "results"]
    assert run_cli("reproduce", definition, *common).returncode == 0  # seed 0 of both rows
    result = run_cli("reproduce", definition, "--seeds", "2", "--no-train", *common)
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "results" / "reproduced" / "tiny-cpu.json").read_text())
    maml = table["rows"][0]
    assert maml["seeds"] == 1 and maml["mean"] is not None and len(maml["runs"]) == 1
    assert len(maml["unfinished"]) == 1 and "-seed1-" in maml["unfinished"][0]
    assert maml["unfinished"][0].endswith(": to run")
    assert "- 2D-Navigation, MAML, seed not finished: maml-rl-2d-navigation-seed1-" in result.stdout
    assert not any(p.name.startswith("maml-rl-2d-navigation-seed1") for p in (tmp_path / "root" / "runs").iterdir())


def write_metrics(run_dir: Path, rows: list[dict]) -> str:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(run_dir)


def test_learning_curves_one_per_run_with_labels_a_reader_can_tell_apart(tmp_path):
    few_shot = [
        {"split": "train", "step": 5, "accuracy": 0.4},
        {"split": "val", "step": 10, "accuracy": 0.5, "ci95": 0.1},
    ]
    zero_head = write_metrics(tmp_path / "boil-omniglot-5w1s-seed0-aaa", few_shot)
    default_head = write_metrics(tmp_path / "boil-omniglot-5w1s-seed0-bbb", few_shot)
    no_validation = write_metrics(tmp_path / "maml-omniglot-5w1s-seed0-ccc", few_shot[:1])
    rl = write_metrics(tmp_path / "maml-rl-2d-navigation-seed0-ddd", [{"split": "train", "step": 1, "return": -9.0}])
    rows = [
        {"group": "5w1s, BOIL", "runs": [zero_head]},
        {"group": "5w1s, BOIL", "runs": [zero_head]},  # another column of the same line: the same run, drawn once
        {"group": "5w1s, BOIL", "runs": [default_head]},
        {"label": "MAML", "runs": [no_validation, str(tmp_path / "never-started")]},
        {"label": "navigation", "runs": [rl]},
    ]
    curves = learning_curves({"title": "t", "rows": rows})
    assert [(c.label, c.rl) for c in curves] == [
        ("5w1s, BOIL", False),
        ("5w1s, BOIL (boil-omniglot-5w1s-seed0-bbb)", False),
        ("maml-rl-2d-navigation-seed0", True),
    ]
    assert curves[0].points == [(10, 50.0)] and curves[0].training == [(5, 40.0)]
    assert plot_curves({"title": "t", "rows": rows[:3]}, tmp_path / "few-shot.png").stat().st_size > 10_000
    assert plot_curves({"title": "t", "rows": rows[3:4]}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_the_curves_gain_a_plateau_panel_with_the_plateau_tests_windows_once_a_run_is_long_enough(tmp_path):
    import matplotlib.image

    # validations every step to 12: the last quarter is steps 10-12, the quarter before 7-9
    accuracies = {7: 0.60, 8: 0.61, 9: 0.62, 10: 0.70, 11: 0.71, 12: 0.72}
    long_run = [{"split": "val", "step": step, "accuracy": accuracies.get(step, 0.5)} for step in range(1, 13)]
    short_run = long_run[:4]
    rows = [
        {"label": "long", "runs": [write_metrics(tmp_path / "maml-long", long_run)]},
        {"label": "short", "runs": [write_metrics(tmp_path / "maml-short", short_run)]},
    ]
    long_curve, short_curve = learning_curves({"title": "t", "rows": rows})
    windows = plateau_windows(long_curve)
    assert windows is not None and plateau_windows(short_curve) is None
    assert windows["windows"] == {"before": [6.0, 9.0], "last": [9.0, 12.0]}
    assert windows["last"] == pytest.approx(71.0) and windows["last"] - windows["gain"] == pytest.approx(61.0)
    one_panel = plot_curves({"title": "t", "rows": rows[1:]}, tmp_path / "short.png")
    two_panels = plot_curves({"title": "t", "rows": rows}, tmp_path / "long.png")
    width = {name: matplotlib.image.imread(path).shape[1] for name, path in (("one", one_panel), ("two", two_panels))}
    assert width["two"] > 1.8 * width["one"]
