"""A budget's until_plateau: a finished run still rising is lengthened (exactly), up to a cap, never past it."""

import json
import sys

import pytest
import torch
from conftest import run_cli

from harness.errors import HarnessError
from harness.plugin.manager import get_plugins
from harness.reproduce.definitions import load_definition
from harness.reproduce.executors import run_all
from harness.reproduce.planning import PlannedRun, plan
from harness.reproduce.until_plateau import check_until_plateau, lengthen_to

UNTIL = {"every": 2500, "max_iterations": 20000}
STEPS = range(250, 10001, 250)  # validations every 250 iterations, as the converged budget
RISING = [0.90 + step * 1e-5 + (0.002 if step % 500 else -0.002) for step in STEPS]  # +2.5 points a quarter
FLAT = [0.95 + (0.002 if step % 500 else -0.002) for step in STEPS]


def finished_run(path, accuracies, tested=10000, configured=None, steps=STEPS):
    path.mkdir(parents=True)
    rows = [{"split": "val", "step": step, "accuracy": accuracy} for step, accuracy in zip(steps, accuracies)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (path / "summary.json").write_text(json.dumps({"iterations": tested}))
    (path / "config.json").write_text(json.dumps({"iterations": configured or tested}))
    (path / "checkpoint.pt").write_bytes(b"")  # --resume needs one; never read here
    return path


@pytest.mark.parametrize(
    "accuracies, tested, configured, spans, expected",
    [
        (RISING, 10000, None, False, 12500),  # still rising: one more block
        (FLAT, 10000, None, False, None),  # on its plateau: done
        (RISING, 18000, None, False, 20000),  # the last block stops at the cap
        (RISING, 20000, None, False, None),  # at the cap: done, rising or not
        (RISING, 10000, None, True, None),  # MAML++: its cosine would start over
        (FLAT, 10000, 12500, False, 12500),  # stopped while being lengthened: finish that first
        (FLAT, 10000, 12500, True, 12500),
    ],
)
def test_a_finished_run_is_lengthened_only_while_its_validation_rises(
    tmp_path, accuracies, tested, configured, spans, expected
):
    run = finished_run(tmp_path / "run", accuracies, tested, configured)
    assert lengthen_to(run, UNTIL, progress_spans_run=spans) == expected
    assert lengthen_to(run, None, progress_spans_run=spans) == (configured if configured else None)


def test_an_unfinished_run_is_not_lengthened_and_an_untestable_one_is_one_line(tmp_path):
    run = finished_run(tmp_path / "run", RISING)
    (run / "summary.json").unlink()
    assert lengthen_to(run, UNTIL, progress_spans_run=False) is None  # still training: --resume continues it
    sparse = finished_run(tmp_path / "sparse", RISING[-4:], steps=STEPS[-4:])  # validated at 9,250-10,000 only
    with pytest.raises(HarnessError) as error:
        lengthen_to(sparse, UNTIL, progress_spans_run=False)
    assert str(error.value) == (
        f"{sparse}: until_plateau cannot test it: the plateau test needs at least 3 validations in each window "
        f"of 2500 iterations, the run has 0 and 4 (validate more often: --val-every)"
    )


def test_the_planned_command_lengthens_a_rising_run_and_its_state_says_why(tmp_path):
    run_dir = finished_run(tmp_path / "run", RISING)
    run = PlannedRun("MAML", "maml", "omniglot-5w1s", "image", 0, {}, "key", run_dir, until_plateau=UNTIL)
    assert not run.done
    assert run.state == "finished, validation still rising: trained on to 12,500 iterations"
    command = run.command("DATA")
    assert command[command.index("run") :] == [
        "run",
        "--resume",
        str(run_dir),
        "--iterations",
        "12500",
        "--data-root",
        "DATA",
        "--no-progress",
    ]
    flat = PlannedRun("ANIL", "anil", "omniglot-5w1s", "image", 0, {}, "key", finished_run(tmp_path / "flat", FLAT))
    flat.until_plateau = UNTIL
    assert flat.done and flat.state == "done"


class Lengthened:
    """A run whose every command raises its iterations by one block until ``blocks`` are done."""

    def __init__(self, run_dir, blocks, stuck=False):
        self.run_dir, self.skipped, self.blocks, self.stuck = run_dir, None, blocks, stuck
        self.count = run_dir / "count"

    def _runs(self) -> int:
        return len(self.count.read_text()) if self.count.exists() else 0

    @property
    def done(self) -> bool:
        return self._runs() > self.blocks

    @property
    def lengthen_to(self) -> int | None:
        return None if self._runs() == 0 else (1 if self.stuck else self._runs())

    def command(self, data_root, time_limit=None, run_flags=()):
        return [sys.executable, "-c", f"open({str(self.count)!r}, 'a').write('x')"]


def test_reproduce_runs_a_lengthened_run_again_until_done_and_never_twice_to_one_length(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rising, stuck = Lengthened(tmp_path / "a", blocks=2), Lengthened(tmp_path / "b", blocks=5, stuck=True)
    failures, stopped = run_all([rising, stuck], data_root=None, workers=2)
    assert (failures, stopped) == ([], 0)
    assert rising._runs() == 3  # trained, then lengthened twice
    assert stuck._runs() == 2  # a length that does not move is not asked for again


def test_the_converged_board_lengthens_every_algorithm_but_maml_plus_plus(tmp_path):
    definition = load_definition("feature-reuse")
    assert definition["budgets"]["converged"]["until_plateau"] == {"every": 2500, "max_iterations": 30000}
    runs = [run for run in plan(get_plugins(), definition, "converged", 1, tmp_path) if not run.skipped]
    assert {run.algo for run in runs if run.progress_spans_run} == {"maml++"}
    assert all(run.until_plateau == definition["budgets"]["converged"]["until_plateau"] for run in runs)
    assert all(run.until_plateau is None for run in plan(get_plugins(), definition, "cpu", 1, tmp_path))


@pytest.mark.parametrize(
    "value, message",
    [
        ("2500", "must be a table { every = N, max_iterations = M }, got '2500'"),
        ({"every": 2500}, ".max_iterations must be a whole number of iterations >= 1, got None"),
        ({"every": 0, "max_iterations": 10}, ".every must be a whole number of iterations >= 1, got 0"),
        ({"every": 1, "max_iterations": 10, "fraction": 0.75}, ".fraction must be in (0, 0.5], got 0.75"),
        ({"every": 1, "max_iterations": 10, "until": 3}, " has no key 'until'; keys: every, max_iterations, fraction"),
    ],
)
def test_a_malformed_until_plateau_is_one_line(value, message):
    with pytest.raises(HarnessError) as error:
        check_until_plateau(value, "budgets.converged.until_plateau")
    assert str(error.value) == "budgets.converged.until_plateau" + (" " if message[0] == "m" else "") + message


def test_a_definition_with_a_malformed_until_plateau_is_refused_before_any_work(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        'title = "t"\n[budgets.cpu]\nimage = { iterations = 4 }\nuntil_plateau = { every = -1, max_iterations = 8 }\n'
        '[[rows]]\nlabel = "MAML"\nalgo = "maml"\ndata = "omniglot-5w1s"\n'
    )
    result = run_cli("reproduce", path, "--root", tmp_path / "root", "--results", tmp_path / "results")
    assert (result.returncode, result.stderr) == (
        2,
        f"harness: error: {path}: budgets.cpu.until_plateau.every must be a whole number of iterations >= 1, got -1\n",
    )
    assert not (tmp_path / "root").exists()


FLAGS = ["--algo", "anil", "--data", "omniglot-5w1s", "--meta-batch-size", "2", "--val-every", "5"]
FLAGS += ["--log-every", "5", "--val-tasks", "4", "--test-tasks", "8", "--no-progress", "--no-download"]


def _trained(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows]


@pytest.mark.realdata
def test_a_lengthened_run_trains_exactly_as_one_set_that_long_from_the_start(data_root, tmp_path):
    lengthened, straight = tmp_path / "lengthened", tmp_path / "straight"
    first = run_cli("run", *FLAGS, "--iterations", "10", "--data-root", data_root, "--out", lengthened)
    assert first.returncode == 0, first.stderr
    more = run_cli("run", "--resume", lengthened, "--iterations", "15", "--data-root", data_root, "--no-progress")
    assert more.returncode == 0, more.stderr
    once = run_cli("run", *FLAGS, "--iterations", "15", "--data-root", data_root, "--out", straight)
    assert once.returncode == 0, once.stderr
    assert _trained(lengthened) == _trained(straight)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (lengthened, straight)]
    assert summaries[0]["test"] == summaries[1]["test"]
    bests = [torch.load(run / "best.pt", weights_only=True) for run in (lengthened, straight)]
    assert bests[0]["step"] == bests[1]["step"] == summaries[0]["tested_checkpoint"]["step"]
    assert bests[0]["model"].keys() == bests[1]["model"].keys()
    assert all(torch.equal(bests[0]["model"][name], bests[1]["model"][name]) for name in bests[0]["model"])
