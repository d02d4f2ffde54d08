"""harness reproduce / report: expansion and hashing, skip-if-done and resume, rendering, agreement, Ray."""

import json
import textwrap

import pytest

from conftest import run_cli
from harness.plugin_manager import get_plugins
from harness.reproduce import agrees, aggregate, load_definition, plan

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
    assert [(r.label, r.seed) for r in runs][:2] == [("MAML", 0), ("MAML", 1)]
    anil, nil = [r for r in runs if r.label == "ANIL"], [r for r in runs if r.label.startswith("NIL")]
    assert [r.run_dir for r in anil] == [r.run_dir for r in nil]  # NIL evaluates the ANIL runs: trained once
    assert nil[0].evaluator == "nil" and anil[0].evaluator == "fewshot"
    assert len({r.key for r in runs}) == 4  # 2 algorithms x 2 seeds
    paper = plan(get_plugins(), load_definition("table4"), "paper", 1, tmp_path)
    assert paper[0].key != runs[0].key  # the budget is part of the resolved config
    assert runs[0].run_dir.name == f"maml-omniglot-20w1s-seed0-{runs[0].key}"
    command = runs[0].command("/data")
    assert command[3:] == ["run", "--algo", "maml", "--data", "omniglot-20w1s", "--seed", "0", "--out",
                           str(runs[0].run_dir), "--iterations", "300", "--val-every", "100", "--data-root", "/data",
                           "--no-progress"]


def test_agreement_and_aggregation():
    assert agrees(95.0, 0.5, [96.2, 0.5]) == "no"
    assert agrees(95.5, 0.5, [96.2, 0.5]) == "yes"
    assert agrees(-18.0, 1.0, [-20.1, 2.3]) == "yes"
    assert agrees(1.0, 0.1, None) == "n/a"
    assert aggregate([{"mean": 90.0, "ci95": 0.7}]) == (90.0, 0.7)
    mean, ci = aggregate([{"mean": 90.0, "ci95": 0.7}, {"mean": 92.0, "ci95": 0.7}])
    assert mean == 91.0 and ci == pytest.approx(1.96 * 2 ** 0.5 / 2 ** 0.5)


def test_bad_definitions_are_one_line_errors(tmp_path):
    result = run_cli("reproduce", "table9")
    assert result.returncode == 2
    assert result.stderr.strip() == "harness: error: unknown table 'table9'; defined tables: figure2, figure3, figure6, table1, table2, table3, table4, table5, table6 (or give a .toml file)"
    result = run_cli("reproduce", tiny_definition(tmp_path), "--budget", "paper")
    assert result.stderr.strip() == "harness: error: table 'tiny' has no budget 'paper'; budgets: cpu"


def test_reproduce_skips_finished_runs_resumes_started_ones_and_reports(tmp_path):
    definition = tiny_definition(tmp_path)
    args = ["reproduce", definition, "--root", tmp_path / "root", "--results", tmp_path / "results", "--workers", "2"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "results" / "reproduced" / "tiny.json").read_text())
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
    assert (tmp_path / "results" / "reproduced" / "tiny-curves.png").stat().st_size > 10_000
    assert run_cli("report", "--results", tmp_path / "results").returncode == 0
    assert (tmp_path / "results" / "README.md").read_text().count("<!-- reproduced:start -->") == 1


def test_label_references_and_seed_offsets_resolve_to_run_directories(tmp_path):
    runs = plan(get_plugins(), load_definition("table3"), "cpu", 1, tmp_path)
    by_label = {run.label: run for run in runs}
    assert by_label["MAML, second seed"].seed == 1 and by_label["MAML"].seed == 0
    maml_vs_anil = by_label["body CCA, MAML vs ANIL"]
    assert maml_vs_anil.run_dir == by_label["MAML"].run_dir  # evaluates the MAML row's run, trained once
    assert maml_vs_anil.resolved_options == {"against": str(by_label["ANIL"].run_dir), "measure": "cca", "num_tasks": 50}
    assert by_label["body CCA, MAML vs MAML (two seeds)"].resolved_options["against"] == str(by_label["MAML, second seed"].run_dir)
    assert maml_vs_anil.unit == "CCA" and by_label["MAML"].unit == "%"
    command = maml_vs_anil.command(None)
    assert "--seed" in command and command[command.index("--seed") + 1] == "0"
    bad = tmp_path / "bad.toml"
    bad.write_text(textwrap.dedent("""
        title = "Bad"
        [budgets.cpu]
        image = {}
        [[rows]]
        label = "A"
        algo = "maml"
        data = "omniglot-20w1s"
        evaluator = "run-similarity"
        options = { against = "@B" }
    """))
    result = run_cli("reproduce", bad, "--plan")
    assert result.returncode == 2
    assert result.stderr.strip() == "harness: error: row 'A' of bad: option against = '@B' names no row; rows: A"


def test_speed_table_measures_speedups_against_the_paper_floor(tmp_path):
    from harness.reproduce import speed_table

    definition = {"budgets": {"cpu": {"rounds": 1}}, "rows": [
        {"label": "fast enough", "config": "mini-5w1s", "phase": "inference", "algorithm": "anil", "paper": [1.0, 0.0]},
        {"label": "never", "config": "mini-5w1s", "phase": "inference", "algorithm": "anil", "paper": [1000.0, 0.0]}]}
    rows = speed_table(definition, "cpu")
    assert rows[0]["mean"] > 1.0 and rows[0]["mean"] == rows[1]["mean"]  # the MAML and ANIL medians are measured once
    assert [row["agree"] for row in rows] == ["yes", "no"] and rows[0]["unit"] == "x"
    assert set(rows[0]["seconds"]) == {"maml", "anil"}
    assert agrees(2.0, 0.0, [1.7, 0.0], "at_least") == "yes" and agrees(1.6, 0.0, [1.7, 0.0], "at_least") == "no"


def test_report_renders_similarity_units_and_copies_evaluator_figures(tmp_path):
    figure = tmp_path / "bars.png"
    figure.write_bytes(b"\x89PNG fixture")
    fixture = {"name": "fig", "title": "Figure X", "source": "paper", "budget": "cpu", "budget_note": "tiny",
               "rows": [{"label": "layer 1", "mean": 0.95, "ci95": 0.01, "seeds": 1, "paper": None, "agree": "n/a",
                         "unit": "CCA", "runs": [], "tasks": 50, "figures": [str(figure)]},
                        {"label": "speed", "mean": 7.25, "ci95": 0.0, "seeds": 1, "paper": [1.7, 0.0], "agree": "yes",
                         "unit": "x", "runs": [], "tasks": "5 rounds"}]}
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
    fixture = {"name": "t", "title": "Table X", "source": "paper", "budget": "cpu", "budget_note": "tiny",
               "rows": [{"label": "A", "mean": 95.5, "ci95": 0.5, "seeds": 1, "paper": [96.2, 0.5], "agree": "yes",
                         "unit": "%", "runs": [], "tasks": 600},
                        {"label": "B", "mean": 90.0, "ci95": 0.5, "seeds": 3, "paper": [96.2, 0.5], "agree": "no",
                         "unit": "%", "runs": [], "tasks": 600}]}
    (tmp_path / "reproduced").mkdir()
    (tmp_path / "reproduced" / "t.json").write_text(json.dumps(fixture))
    (tmp_path / "README.md").write_text("# Results\n\nhand-written part\n")
    result = run_cli("report", "--results", tmp_path)
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "reproduced" / "t.md").read_text()
    assert "| A     | 95.50 ± 0.50 % | 96.2 ± 0.5 % | yes     |" in markdown
    assert "| B     | 90.00 ± 0.50 % | 96.2 ± 0.5 % | no      |" in markdown
    assert (tmp_path / "README.md").read_text().startswith("# Results\n\nhand-written part\n")
    assert run_cli("report", "--results", tmp_path / "empty").stderr.strip().startswith("harness: error: nothing reproduced yet")


def test_ray_executor_on_a_local_instance(tmp_path):
    definition = tiny_definition(tmp_path)
    result = run_cli("reproduce", definition, "--root", tmp_path / "root", "--results", tmp_path / "results",
                     "--executor", "ray")
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "results" / "reproduced" / "tiny.json").read_text())
    assert len(table["rows"]) == 2 and all(len(row["runs"]) == 1 for row in table["rows"])
    for run_dir in (row["runs"][0] for row in table["rows"]):
        assert json.loads((tmp_path / "root" / "runs" / run_dir.rsplit("/", 1)[1] / "summary.json").read_text())
