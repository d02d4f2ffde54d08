"""Every evaluation records where it came from; evaluations of another source never overwrite each other."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest
import torch
from conftest import REPO, run_cli

from harness.run.rundir import lock_holder, prepare_run_dir

FLAGS = ["--algo", "anil", "--data", "omniglot-5w1s", "--meta-batch-size", "2", "--iterations", "4"]
FLAGS += ["--val-every", "2", "--val-tasks", "4", "--test-tasks", "8", "--no-progress", "--no-download"]


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("provenance") / "run"
    result = run_cli("run", *FLAGS, "--data-root", data_root, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def _eval(run, data_root, *extra):
    return run_cli("eval", run, "--evaluator", "nil", "--data-root", data_root, "--no-download", *extra)


@pytest.mark.realdata
def test_an_evaluation_with_other_options_sits_beside_the_first_and_records_its_provenance(finished, data_root):
    assert _eval(finished, data_root).returncode == 0
    first = (finished / "eval-nil.json").read_bytes()
    fewer = _eval(finished, data_root, "--test-tasks", "4")
    assert fewer.returncode == 0, fewer.stderr
    assert fewer.stdout.endswith(f"written to {finished / 'eval-nil-num_tasks=4.json'}\n")
    assert (finished / "eval-nil.json").read_bytes() == first  # the default-task evaluation untouched
    provenance = json.loads((finished / "eval-nil-num_tasks=4.json").read_text())["provenance"]
    best = finished / "best.pt"
    assert provenance["evaluator"] == "nil" and provenance["given"] == {"num_tasks": "4"}
    assert provenance["options"]["num_tasks"] == 4
    assert provenance["checkpoint"] == {
        "file": "best.pt",
        "step": torch.load(best, weights_only=True)["step"],
        "sha256": hashlib.sha256(best.read_bytes()).hexdigest(),
    }
    assert json.loads(first)["provenance"]["given"] == {} and json.loads(first)["rows"][0]["tasks"] == 8


@pytest.mark.realdata
def test_an_earlier_evaluation_of_another_checkpoint_is_kept_under_its_own_name(finished, data_root, tmp_path):
    stale = {
        "rows": [],
        "provenance": {"evaluator": "nil", "given": {}, "checkpoint": {"step": 2, "sha256": "ab" * 32}},
    }
    (finished / "eval-nil.json").write_text(json.dumps(stale))
    result = _eval(finished, data_root)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "harness: kept the earlier eval-nil.json (checkpoint step 2) as eval-nil@abababab.json\n"
    assert json.loads((finished / "eval-nil@abababab.json").read_text()) == stale
    (finished / "eval-nil.json").write_text('{"rows": []}')  # written before evaluations recorded provenance
    again = _eval(finished, data_root)
    assert "kept the earlier eval-nil.json (no recorded provenance) as eval-nil@unrecorded.json" in again.stderr
    assert json.loads((finished / "eval-nil@unrecorded.json").read_text()) == {"rows": []}


@pytest.mark.realdata
def test_a_run_another_process_holds_is_not_evaluated(data_root, tmp_path):
    out = tmp_path / "run"
    assert run_cli("run", *FLAGS, "--data-root", data_root, "--out", out).returncode == 0
    prepare_run_dir(out, lock=True)  # this process holds it, as a training `harness run` would
    before = sorted(p.name for p in out.iterdir())
    result = _eval(out, data_root)
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        2,
        f"harness: error: {out} is in use by another harness process ({lock_holder()}); "
        f"evaluate it when that has ended, or evaluate a copy",
    )
    assert sorted(p.name for p in out.iterdir()) == before


DEFINITION = """
title = "NIL row"
[budgets.cpu]
note = "4 iterations"
image = { iterations = 4, val_every = 2, val_tasks = 4, test_tasks = 8, meta_batch_size = 2 }
[[rows]]
label = "Omniglot 5w1s, NIL"
algo = "anil"
data = "omniglot-5w1s"
evaluator = "nil"
paper = [96.7, 0.3]
"""


@pytest.mark.realdata
def test_reproduce_uses_an_evaluation_only_when_its_provenance_matches(data_root, tmp_path):
    definition = tmp_path / "nil.toml"
    definition.write_text(DEFINITION)
    args = ["reproduce", definition, "--root", tmp_path / "root", "--results", tmp_path / "results"]
    args += ["--data-root", data_root]
    assert run_cli(*args).returncode == 0
    table = tmp_path / "results" / "reproduced" / "nil-cpu.json"
    measured = json.loads(table.read_text())["rows"][0]["mean"]
    (run,) = [p for p in (tmp_path / "root" / "runs").iterdir() if p.is_dir()]
    evaluation = json.loads((run / "eval-nil.json").read_text())
    planted = dict(evaluation, rows=[dict(evaluation["rows"][0], mean=0.0123)])
    planted["provenance"] = dict(evaluation["provenance"], checkpoint={"step": 2, "sha256": "cd" * 32})
    (run / "eval-nil.json").write_text(json.dumps(planted))  # as if written while the run was at step 2
    rebuilt = run_cli(*args, "--no-train")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(table.read_text())["rows"][0]["mean"] == measured  # evaluated again, same numbers
    assert json.loads((run / "eval-nil@cdcdcdcd.json").read_text()) == planted  # kept, not overwritten
    unchanged = (run / "eval-nil.json").read_bytes()
    assert run_cli(*args, "--no-train").returncode == 0
    assert (run / "eval-nil.json").read_bytes() == unchanged  # a matching evaluation is reused as it is
    for checkpoint in ("best.pt", "checkpoint.pt"):  # committed without its checkpoints: summary.json vouches
        (run / checkpoint).rename(tmp_path / checkpoint)
    assert run_cli(*args, "--no-train").returncode == 0
    assert (run / "eval-nil.json").read_bytes() == unchanged
    assert json.loads(table.read_text())["rows"][0]["mean"] == measured
    summary = json.loads((run / "summary.json").read_text())
    del summary["tested_checkpoint"]["sha256"]  # as summaries written before it was recorded
    (run / "summary.json").write_text(json.dumps(summary))
    refused = run_cli(*args, "--no-train")
    assert (refused.returncode, refused.stderr) == (
        2,
        f"harness: error: {table} has 1 measured row(s) that --root {tmp_path / 'root'} cannot measure again "
        f"(first: 'Omniglot 5w1s, NIL': evaluation failed: {run} has no checkpoint (best.pt, checkpoint.pt) and its "
        "summary.json records none: its evaluations cannot be checked or run again; train the run again (harness "
        "reproduce without --no-train after moving the directory aside)); not rewritten: point --root at the runs, "
        "or move nil-cpu.json away\n",
    )
    assert json.loads(table.read_text())["rows"][0]["mean"] == measured


@pytest.mark.realdata
def test_a_run_records_the_commit_of_the_code_that_ran_it(finished):
    """From a git checkout (the tests' own), the summary names HEAD, with ``+ changes`` when tracked files differ."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the tests do not run from a git checkout")
    source = json.loads((finished / "summary.json").read_text())["environment"]["harness_source"]
    assert source.split(" + ")[0] == head.stdout.strip()
    assert source in (head.stdout.strip(), head.stdout.strip() + " + changes")


def backfill_script():
    spec = importlib.util.spec_from_file_location("backfill", REPO / "scripts" / "backfill-provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_backfill_reads_the_given_options_from_the_file_name_as_harness_eval_writes_them():
    given = backfill_script().given_options
    assert given("eval-freeze-adapt_as=maml-all_checkpoints=1.json", "freeze") == {
        "adapt_as": "maml",
        "all_checkpoints": "1",
    }
    assert given("eval-nil.json", "nil") == {}
    assert given(
        "eval-run-similarity-against=anil-omniglot-20w1s-seed1-0da3f35d4ece-measure=cca.json", "run-similarity"
    ) == {"against": "anil-omniglot-20w1s-seed1-0da3f35d4ece", "measure": "cca"}
    assert given("eval-nil.json", "freeze") is None  # another evaluator's file
    assert given("eval-nilx.json", "nil") is None


def test_every_committed_evaluation_of_a_released_checkpoint_records_its_provenance():
    """The tables built from released runs reuse these files; without a record they would be evaluated again."""
    released = [line.split()[-1] for line in (REPO / "results" / "SHA256SUMS").read_text().splitlines() if line]
    for checkpoint in released:
        for evaluation in (REPO / checkpoint).parent.glob("eval-*.json"):
            if "@" not in evaluation.name:
                assert "provenance" in json.loads(evaluation.read_text()), evaluation
