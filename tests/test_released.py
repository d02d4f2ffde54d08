"""Released meta-initialisations: their checksums, safe loading, and evaluation from a clean checkout."""

import hashlib
import json
import os
import shutil

import pytest
import torch
from conftest import REPO, run_cli

from harness.errors import HarnessError
from harness.run.files import load_torch

SUMS = REPO / "results" / "SHA256SUMS"


def released() -> list[tuple[str, str]]:
    """``(sha256, path)`` per line of ``results/SHA256SUMS`` (``sha256sum`` format, paths from the repository root)."""
    return [tuple(line.split(maxsplit=1)) for line in SUMS.read_text().splitlines() if line.strip()]


def test_every_released_file_matches_its_checksum_and_is_tracked():
    entries = released()
    assert entries, "results/SHA256SUMS lists no released checkpoint"
    for digest, path in entries:
        data = (REPO / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, path
        assert len(data) < 1_000_000  # a Conv4 meta-initialisation, not a training state


def test_released_checkpoints_load_without_pickle_code():
    for _, path in released():
        state = load_torch(REPO / path)
        assert set(state) >= {"model", "step", "config", "geometry"}
        assert state["config"]["iterations"] == 30_000  # full budget only


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "best.pt"
    torch.save({"model": RunsCode(), "step": 1}, evil)
    with pytest.raises(HarnessError) as error:
        load_torch(evil)
    assert str(error.value) == (
        f"refusing to load {evil}: it would run code when loaded (Trying to load unsupported "
        f"GLOBAL posix.system whose module posix is blocked); a harness checkpoint holds only "
        f"tensors, numbers and strings"
    )
    assert not marker.exists()


@pytest.mark.realdata
def test_released_anil_initialisation_evaluates_from_a_clean_checkout(data_root, tmp_path):
    """What a user does with a fresh clone: the committed config.json and best.pt, harness eval and analyze."""
    best = next(path for _, path in released() if "anil-omniglot-20w1s" in path)
    run = tmp_path / "released-anil"
    run.mkdir()
    for name in ("config.json", "best.pt"):
        shutil.copy(REPO / best.replace("best.pt", name), run / name)
    result = run_cli("eval", run, "--test-tasks", "40", "--data-root", data_root, "--no-download")
    assert result.returncode == 0, result.stderr
    accuracy = json.loads((run / "eval-fewshot-num_tasks=40.json").read_text())["rows"][0]["mean"]
    assert accuracy > 0.85, accuracy  # 30,000 iterations: far above the 300-iteration runs' ~49 %
    analysis = run_cli(
        "analyze", "weights", run, "--tasks", "4", "--adapt-as", "maml", "--data-root", data_root, "--no-download"
    )
    assert analysis.returncode == 0, analysis.stderr
    rows = json.loads((run / "analysis-weight-distance-adapt-as-maml-num_tasks=4.json").read_text())["rows"]
    assert [row["layer"] for row in rows] == ["body.0", "body.1", "body.2", "body.3", "head", "body"]
    assert all(row["mean"] > 0 for row in rows)  # adapted as MAML, every layer moves
    # The whole body's distance is at least each body layer's, task by task, so on average too.
    assert rows[-1]["mean"] >= max(row["mean"] for row in rows[:4])


@pytest.mark.realdata
def test_resume_on_a_copy_of_the_released_run_refuses_and_changes_no_file(data_root, tmp_path):
    """The released folder has summary.json and best.pt but no checkpoint.pt: nothing to continue, nothing to redo."""
    best = next(path for _, path in released() if "anil-omniglot-20w1s" in path)
    run = tmp_path / "released-anil"
    shutil.copytree((REPO / best).parent, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    plain = run_cli("run", "--resume", run, "--data-root", data_root, "--no-progress")
    assert (plain.returncode, plain.stderr) == (
        2,
        f"harness: error: {run} is finished (30000 iterations, tested; summary.json); --resume continues an "
        f"unfinished run, or extends a finished one with --iterations above 30000\n",
    )
    extended = run_cli("run", "--resume", run, "--iterations", "40000", "--data-root", data_root, "--no-progress")
    assert (extended.returncode, extended.stderr) == (
        2,
        f"harness: error: {run} is finished and keeps no checkpoint to continue from (checkpoint.pt or "
        f"checkpoints/step-N.pt), so it cannot be extended; start a new run with --iterations 40000\n",
    )
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
