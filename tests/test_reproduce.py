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
    assert result.stderr.strip() == "harness: error: unknown table 'table9'; defined tables: table1, table2, table4, table5 (or give a .toml file)"
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
