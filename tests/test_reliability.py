"""Results cannot be silently wrong or lost: the catalogue of bad inputs and faults, each with its answer.

Every bad input ends in one ``harness: error:`` line and exit status 2, with no traceback, and
leaves what was already written exactly as it was. Faults (a kill at a precise point, a full
disk, a damaged decoded-image cache) lose nothing: resuming ends bit-identical to a run that
was never interrupted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_SECONDS, REPO, run_cli

FLAGS = [
    "--algo",
    "anil",
    "--data",
    "omniglot-5w1s",
    "--meta-batch-size",
    "2",
    "--iterations",
    "10",
    "--val-every",
    "5",
    "--log-every",
    "5",
    "--checkpoint-every",
    "5",
    "--val-tasks",
    "4",
    "--test-tasks",
    "8",
    "--no-progress",
    "--no-download",
]


class RunsCode:
    """Unpickling this would create the file named by ``MARKER``: a checkpoint crafted to run code."""

    def __reduce__(self):
        return (open, (os.environ.get("HARNESS_TEST_MARKER", "/nonexistent/marker"), "w"))


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
    """A finished run and, beside it, the files the catalogue feeds to harness."""
    root = tmp_path_factory.mktemp("reliability")
    out = root / "run"
    result = run_cli("run", *FLAGS, "--data-root", data_root, "--out", out)
    assert result.returncode == 0, result.stderr
    state = torch.load(out / "best.pt", weights_only=True)
    torch.save(state["model"], root / "plain.pt")  # a bare state dict, as other code bases save
    os.environ["HARNESS_TEST_MARKER"] = str(root / "code-ran")
    torch.save({"model": RunsCode(), "geometry": state["geometry"], "step": 1}, root / "evil.pt")
    (root / "no-algo.toml").write_text('title = "t"\n[budgets.cpu]\n[[rows]]\nlabel = "a"\ndata = "omniglot-5w1s"\n')
    (root / "rows-5.toml").write_text('title = "t"\nrows = 5\n[budgets.cpu]\n')
    (root / "sixty.toml").write_text(
        'title = "t"\n[budgets.cpu]\nimage = { iterations = "sixty" }\n'
        '[[rows]]\nlabel = "a"\nalgo = "anil"\ndata = "omniglot-5w1s"\n'
    )
    (root / "cycle.toml").write_text(
        'title = "t"\n[budgets.cpu]\n'
        + "".join(
            f'[[rows]]\nlabel = "{a}"\nalgo = "anil"\ndata = "omniglot-5w1s"\noptions = {{ against = "@{b}" }}\n'
            for a, b in (("a", "b"), ("b", "a"))
        )
    )
    (root / "results" / "reproduced").mkdir(parents=True)
    (root / "results" / "reproduced" / "t-cpu.json").write_text('{"title": "t", "rows": [')
    (root / "results-mean" / "reproduced").mkdir(parents=True)
    (root / "results-mean" / "reproduced" / "t-cpu.json").write_text(
        json.dumps({"title": "t", "budget": "cpu", "rows": [{"label": "a", "unit": "%", "mean": "96.7", "ci95": 1}]})
    )
    (root / "results-wrong" / "reproduced").mkdir(parents=True)
    (root / "results-wrong" / "reproduced" / "t-cpu.json").write_text("[1, 2]")
    return out


def _files(directory: Path) -> dict:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# (arguments, the one error line; "..." at the end: a prefix). {run}: the finished run, {root}: its folder.
CATALOGUE = [
    (["eval", "{run}", "-o", "num_tasks=abc"], "option num_tasks of evaluator 'fewshot' must be an integer, got 'abc'"),
    (
        ["eval", "{run}", "-o", "num_tasks=100x"],
        "option num_tasks of evaluator 'fewshot' must be an integer, got '100x'",
    ),
    (
        ["eval", "{run}", "--evaluator", "nil", "-o", "num_tasks=abc"],
        "option num_tasks of evaluator 'nil' must be an integer, got 'abc'",
    ),
    (
        ["eval", "{run}", "--evaluator", "maml-head", "-o", "head_iterations=x"],
        "option head_iterations of evaluator 'maml-head' must be an integer, got 'x'",
    ),
    (
        ["eval", "{run}", "--evaluator", "maml-head", "-o", "head_iterations=-5"],
        "option head_iterations of evaluator 'maml-head' must be at least 1, got -5",
    ),
    (
        ["eval", "{run}", "--evaluator", "maml-head", "-o", "seed=-1"],
        "option seed of evaluator 'maml-head' must be at least 0, got -1",
    ),
    (["eval", "{run}", "--test-tasks", "-5"], "--test-tasks must be at least 1, got -5"),
    (["eval", "{run}", "--test-tasks", "0"], "--test-tasks must be at least 1, got 0"),
    (["eval", "{run}", "--test-inner-steps", "-2"], "--test-inner-steps must be at least 0, got -2"),
    (
        ["eval", "{run}", "-o", "nmu_tasks=5"],
        "evaluator 'fewshot' has no option 'nmu_tasks'; its options: num_tasks, "
        "test_inner_steps, split (harness list evaluators --options)",
    ),
    (
        ["eval", "{run}", "--evaluator", "nil", "--test-inner-steps", "3"],
        "evaluator 'nil' has no --test-inner-steps (option 'test_inner_steps'); its options: num_tasks "
        "(harness list evaluators --options)",
    ),
    (
        ["eval", "{run}", "-o", "split=tset"],
        "option split of evaluator 'fewshot' must be one of train, val, test; got 'tset'",
    ),
    (
        ["eval", "{run}", "--evaluator", "freeze", "-o", "all_checkpoints=maybe"],
        "option all_checkpoints of evaluator 'freeze' must be 1 or 0 (true/false), got 'maybe'",
    ),
    (
        ["eval", "{run}", "--evaluator", "freeze", "-o", "adapt_as=mmal"],
        "unknown algorithm 'mmal'; valid algorithms: ...",
    ),
    (["eval", "{run}", "-o", "num_tasks"], "malformed option 'num_tasks': expected KEY=VALUE"),
    (
        ["eval", "{run}", "--test-tasks", "5", "-o", "num_tasks=5"],
        "--test-tasks and -o num_tasks= say the same thing; give one",
    ),
    (
        ["eval", "{run}", "--checkpoint", "{root}/plain.pt"],
        "{root}/plain.pt is not a harness checkpoint (a bare state dict?): a dict without 'model', 'geometry'; "
        "harness checkpoints (best.pt, checkpoint.pt) hold model, geometry",
    ),
    (
        ["eval", "{run}", "--checkpoint", "{root}/evil.pt"],
        "refusing to load {root}/evil.pt: it would run code when loaded ...",
    ),
    (["eval", "{run}", "--checkpoint", "{root}/missing.pt"], "{root}/missing.pt does not exist"),
    (["analyze", "similarity", "{run}", "--tasks", "0"], "--tasks must be at least 1, got 0"),
    (
        ["analyze", "weights", "{run}", "--measure", "cka"],
        "evaluator 'weight-distance' has no --measure (option 'measure'); its options: num_tasks, queries, "
        "test_inner_steps, adapt_as, adapt_lr (harness list evaluators --options)",
    ),
    (["analyze", "seeds", "{run}"], "this analysis compares two runs: pass --against OTHER_RUN_DIR"),
    (
        ["run", *FLAGS, "--seed", "-1", "--out", "{root}/new"],
        "--seed must be between 0 and 4294967295 (numpy and torch seed range), got -1",
    ),
    (
        ["run", *FLAGS, "--seed", "99999999999999999999999", "--out", "{root}/new"],
        "--seed must be between 0 and 4294967295 (numpy and torch seed range), got 99999999999999999999999",
    ),
    (["run", *FLAGS, "--data-root", "{root}/no-data", "--out", "{root}/new"], "Omniglot not found: expected ..."),
    (["run", *FLAGS, "--backbone", "conv5", "--out", "{root}/new"], "unknown backbone 'conv5'; valid backbones: ..."),
    (
        ["run", *FLAGS, "--meta-batch-size", "10000000", "--out", "{root}/new"],
        "a meta-batch of 10000000 tasks (100,000,000 images) needs at least ...",
    ),
    (
        ["run", *FLAGS, "--algo", "protonet", "--head-init", "normal", "--out", "{root}/new"],
        "protonet does not use --head-init (class prototypes replace the head); leave it out",
    ),
    (
        ["run", *FLAGS, "--out", "{run}"],
        "{run} already holds a run (finished); continue it with --resume {run}, or choose another --out",
    ),
    (
        ["run", "--resume", "{run}", "--seed", "3"],
        "a resumed run keeps its config: --seed cannot be changed; "
        "only --iterations (to extend it), --device and --data-root can",
    ),
    (["run", "--resume", "{root}"], "cannot resume: {root} is not a run directory (no config.json)"),
    (["reproduce", "{root}/no-algo.toml", "--plan"], "{root}/no-algo.toml: row 1 ('a') needs 'algo' (a string)"),
    (
        ["reproduce", "{root}/rows-5.toml", "--plan"],
        "{root}/rows-5.toml: 'rows' must be a non-empty array of tables ([[rows]]), got 5",
    ),
    (
        ["reproduce", "{root}/sixty.toml", "--plan"],
        "row 'a' of sixty (budget cpu): iterations must be an integer, got 'sixty'",
    ),
    (
        ["reproduce", "{root}/cycle.toml", "--plan"],
        "{root}/cycle.toml: rows name each other in a cycle ('a' -> 'b' -> 'a'); a row cannot compare with itself",
    ),
    (["report", "--results", "{root}/results"], "{root}/results/reproduced/t-cpu.json is not valid JSON: ..."),
    (
        ["report", "--results", "{root}/results-wrong"],
        "{root}/results-wrong/reproduced/t-cpu.json is not a reproduced table (harness reproduce writes title and rows); "
        "rebuild it with harness reproduce t --no-train",
    ),
    (
        ["report", "--results", "{root}/results-mean"],
        "{root}/results-mean/reproduced/t-cpu.json: row 1 ('a') mean must be a number or null, got '96.7'",
    ),
    (["bench", "--compare", "nosuch"], "--compare nosuch: no saved baseline matches in ..."),
]


@pytest.mark.realdata
@pytest.mark.parametrize("args, message", CATALOGUE, ids=[" ".join(a)[:70] for a, _ in CATALOGUE])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(args, message, finished, data_root):
    root = finished.parent
    fill = {"run": str(finished), "root": str(root)}
    args = [a.format(**fill) for a in args]
    if args[0] in ("run", "eval", "analyze") and "--data-root" not in args:
        args += ["--data-root", str(data_root)]
    before = _files(root)
    result = run_cli(*args, cwd=root)
    expected = "harness: error: " + message.format(**fill)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    if expected.endswith("..."):
        assert result.stderr.startswith(expected[:-3]), result.stderr
    else:
        assert result.stderr == expected + "\n"
    assert _files(root) == before  # nothing written, nothing lost, no empty run directory left behind
    assert not (root / "new").exists() and not (root / "code-ran").exists()


def test_failed_write_is_one_line_naming_the_file_and_the_full_disk(tmp_path, monkeypatch):
    import errno

    import harness.run.files as run_files

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_files.os, "fsync", full)
    with pytest.raises(run_files.DiskFullError) as error:
        run_files.write_json(tmp_path / "summary.json", {"a": 1})
    mount = run_files._mount_point(tmp_path)
    assert str(error.value) == f"no space left on {mount} writing {tmp_path / 'summary.json'}"
    assert list(tmp_path.iterdir()) == []  # the temporary file is removed too

    def read_only(_fd):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(run_files.os, "fsync", read_only)
    with pytest.raises(run_files.HarnessError) as error:
        run_files.write_json(tmp_path / "eval-fewshot.json", {"a": 1})
    assert (
        str(error.value) == f"cannot write {tmp_path / 'eval-fewshot.json'}: {tmp_path} is on a read-only file system"
    )


# -- faults: kill or fail at a precise point, then resume; the result must equal the uninterrupted run's -------


def _outcome(run_dir: Path) -> dict:
    """Everything that must not depend on where a run was interrupted (timings aside)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [
        {k: v for k, v in json.loads(line).items() if k != "train_seconds"}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    tensors = {f"model.{k}": v for k, v in state["model"].items()}
    for index, moments in state["optimizer"]["state"].items():
        tensors.update({f"adam.{index}.{k}": v for k, v in moments.items()})
    return {
        "test": summary["test"],
        "best_val": summary["best_val"],
        "iterations": summary["iterations"],
        "rows": rows,
        "tensors": {k: v.numpy().tobytes() for k, v in tensors.items()},
        "files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"),
        "periodic": {p.name: torch.load(p, weights_only=False)["step"] for p in (run_dir / "checkpoints").glob("*.pt")},
    }


def _inject(fault: str, run_dir: Path, data_root, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "tests" / "inject_fault.py"), fault, *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )


def _resume(run_dir: Path, data_root) -> None:
    result = run_cli("run", "--resume", run_dir, "--no-progress", "--no-download", "--data-root", data_root)
    assert result.returncode == 0, result.stderr


@pytest.mark.realdata
@pytest.mark.parametrize(
    "fault",
    [
        "kill-after-first-row",
        "kill-writing-checkpoint:2",
        "kill-writing-periodic:1",
        "kill-writing-periodic:2",
        "kill-in-test",
    ],
)
def test_a_kill_at_any_point_then_resume_equals_the_uninterrupted_run(fault, finished, data_root, tmp_path):
    out = tmp_path / "run"
    killed = _inject(fault, out, data_root, "run", *FLAGS, "--data-root", str(data_root), "--out", str(out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if fault == "kill-after-first-row":  # no checkpoint yet: the same command starts over, no row twice
        again = run_cli("run", *FLAGS, "--data-root", data_root, "--out", out)
        assert again.returncode == 0, again.stderr
    else:
        _resume(out, data_root)
    assert _outcome(out) == _outcome(finished)  # incl. no leftover temporary file, every periodic checkpoint


@pytest.mark.realdata
def test_a_full_disk_stops_with_one_line_and_resume_loses_nothing(finished, data_root, tmp_path):
    out = tmp_path / "run"
    full = _inject(
        "enospc-writing-checkpoint:2", out, data_root, "run", *FLAGS, "--data-root", str(data_root), "--out", str(out)
    )
    assert full.returncode == 2, full.stderr
    from harness.run.files import _mount_point

    last = full.stderr.splitlines()[-1]
    assert last == (
        f"harness: error: no space left on {_mount_point(out)} writing {out / 'checkpoint.pt'}; the last good "
        f"checkpoint is step 5 ({out / 'checkpoint.pt'}); free space, then continue with "
        f"harness run --resume {out}"
    )
    assert "Traceback" not in full.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 5
    _resume(out, data_root)
    assert _outcome(out) == _outcome(finished)


@pytest.mark.realdata
def test_sigkill_in_random_iterations_then_resume_equals_the_uninterrupted_run(finished, data_root, tmp_path):
    """Three SIGKILLs, each in the middle of a training iteration drawn at random (one before the first
    checkpoint at step 5, two after it), placed by iteration rather than by time so that they land where meant
    on any machine; each process continues what the last one left."""
    draw = random.Random(16)
    out, iterations = tmp_path / "run", [draw.randint(1, 5), *sorted(draw.sample(range(6, 11), 2))]
    fresh = ["run", *FLAGS, "--data-root", str(data_root), "--out", str(out)]
    resume = ["run", "--resume", str(out), "--no-progress", "--data-root", str(data_root)]
    for iteration in iterations:
        args = resume if (out / "checkpoint.pt").exists() else fresh
        killed = subprocess.run(
            [sys.executable, str(REPO / "tests" / "inject_fault.py"), f"kill-in-iteration:{iteration}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=HANG_SECONDS,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "checkpoint.pt").exists() == (iterations[-1] > 5)
    if (out / "checkpoint.pt").exists():
        _resume(out, data_root)
    else:
        assert run_cli(*fresh).returncode == 0
    assert _outcome(out) == _outcome(finished)


# -- the decoded-image cache ---------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("damage", ["random bytes", "zero bytes"])
def test_a_damaged_decoded_cache_is_decoded_again_never_trained_on(damage, finished, data_root, tmp_path):
    cache = tmp_path / "cache"
    env = {"HARNESS_CACHE_DIR": str(cache)}
    warm = run_cli(
        "run",
        *FLAGS,
        "--iterations",
        "1",
        "--val-every",
        "0",
        "--test-tasks",
        "2",
        "--data-root",
        data_root,
        "--out",
        tmp_path / "warm",
        env_extra=env,
    )
    assert warm.returncode == 0, warm.stderr
    (npy,) = cache.glob("omniglot-*.npy")
    size = npy.stat().st_size
    npy.write_bytes(
        np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes() if damage == "random bytes" else b""
    )
    out = tmp_path / "run"
    result = run_cli("run", *FLAGS, "--data-root", data_root, "--out", out, env_extra=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        f"harness: decoded-image cache {npy} cannot be trusted (its contents do not match "
        f"the checksum written with it); decoding again\n"
    )
    assert _outcome(out) == _outcome(finished)
    assert npy.stat().st_size == size  # rebuilt, with a matching checksum: the next run reads it silently
    again = run_cli(
        "run",
        *FLAGS,
        "--iterations",
        "1",
        "--val-every",
        "0",
        "--test-tasks",
        "2",
        "--data-root",
        data_root,
        "--out",
        tmp_path / "again",
        env_extra=env,
    )
    assert again.returncode == 0 and "cannot be trusted" not in again.stderr and "decoding" not in again.stderr, (
        again.stderr
    )


# -- stops and the first seconds ------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize(
    "signum, status, how",
    [
        (signal.SIGINT, 130, "interrupted"),
        (signal.SIGTERM, 143, "terminated (SIGTERM)"),
        (signal.SIGUSR1, 138, "terminated (SIGUSR1)"),
    ],
)
def test_a_signal_before_training_is_one_line_and_leaves_nothing(signum, status, how, data_root, tmp_path):
    """The signal lands while the images are decoded (an empty cache: seconds of work before training, on
    any machine), so neither a fast machine nor a slow one moves it into training."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", *FLAGS, "--data-root", str(data_root), "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HARNESS_CACHE_DIR": str(cache)},
        # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored:
        # give the run the disposition a terminal's Ctrl-C meets, whatever started this test.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    first = process.stderr.readline()
    assert first.startswith("harness: decoding 32460 Omniglot images"), first
    while not any(cache.glob("*.tmp")):  # into the decode (about 10 s on 2 cores): its memory map is on disk
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signum)
    _, rest = process.communicate(timeout=HANG_SECONDS)
    stderr = rest.splitlines()[-1] if rest.strip() else ""
    assert process.returncode == status, first + rest
    assert stderr == f"harness: {how} before training started; nothing was written"
    assert not out.exists()
    # The half-decoded cache removed with it. Its empty lock file stays: removing one lets a process that waits
    # on the old file and one that opens a new file hold "the" lock together.
    left = [path.name for path in cache.iterdir()]
    assert len(left) == 1 and left[0].startswith(".omniglot-28x28-lanczos-") and left[0].endswith(".npy.lock"), left


def test_a_terminal_hears_from_harness_before_torch_loads(monkeypatch, capsys):
    """The first line comes before the plugins (and torch) are imported, so a user sees it at once."""
    import harness.cli as cli

    class Terminal:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

        def isatty(self):
            return True

    terminal = Terminal()
    seen_at_plugin_load = []

    def get_plugins():
        seen_at_plugin_load.append(terminal.text)
        raise cli.HarnessError("stop here")

    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(cli, "get_plugins", get_plugins)
    assert cli.main(["run", "--algo", "anil", "--data", "omniglot-5w1s"]) == 2
    assert seen_at_plugin_load == ["harness run: starting (loading torch and the plugins takes a few seconds)\n"]
    assert cli.main(["run", "--help"]) == 2 and len(seen_at_plugin_load) == 2
    assert seen_at_plugin_load[1].count("starting") == 1  # --help: no notice


@pytest.mark.realdata
def test_the_progress_bar_shows_no_placeholder_before_the_first_validation(data_root, tmp_path):
    flags = [f for f in FLAGS if f != "--no-progress"]
    result = run_cli("run", *flags, "--data-root", data_root, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "best_val=-1" not in result.stderr and "best_val=0." in result.stderr


@pytest.mark.parametrize(
    "words, unknown",
    [
        (["eval", "RUN", "--check", "best.pt"], "--check best.pt"),  # not a prefix of --checkpoint
        (["run", "--algo", "anil", "--dat", "omniglot-5w1s"], "--dat omniglot-5w1s"),
        (["reproduce", "table2", "--plan", "--budg", "paper"], "--budg paper"),
    ],
)
def test_an_abbreviated_or_misspelt_flag_is_refused_never_read_as_another(words, unknown, tmp_path):
    result = run_cli(*[str(tmp_path / "run") if w == "RUN" else w for w in words])
    assert (result.returncode, result.stderr) == (
        2,
        f"harness: error: harness: unrecognized arguments: {unknown} (see harness --help)\n",
    )


def test_bench_without_the_test_extra_names_it_before_any_work(monkeypatch, capsys):
    import importlib.util

    from harness.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pytest_benchmark" else real(name)
    )
    assert main(["bench"]) == 2
    assert capsys.readouterr().err == (
        "harness: error: harness bench runs the pytest-benchmark suite, and pytest_benchmark is not installed: "
        "pip install 'feature-reuse-harness[test]' (--floor, --paths and --peers do without it)\n"
    )
    assert main(["bench", "--max-regression", "ten"]) == 2  # flags are checked first, extra or not
    assert "--max-regression must look like 10%, got 'ten'" in capsys.readouterr().err


@pytest.mark.realdata
def test_a_cache_location_that_is_a_file_is_refused_and_leaves_no_run(data_root, tmp_path):
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("")
    out = tmp_path / "run"
    result = run_cli(
        "run", *FLAGS, "--data-root", data_root, "--out", out, env_extra={"HARNESS_CACHE_DIR": str(not_a_directory)}
    )
    assert (result.returncode, result.stderr) == (
        2,
        f"harness: error: HARNESS_CACHE_DIR={not_a_directory} is not a directory; point it at a directory "
        f"(created if missing) or unset it\n",
    )
    assert not out.exists()


def test_two_rows_with_one_label_are_refused(tmp_path):
    definition = tmp_path / "twice.toml"
    row = '[[rows]]\nlabel = "Omniglot 20w1s"\nalgo = "{algo}"\ndata = "omniglot-20w1s"\n'
    definition.write_text('title = "t"\n[budgets.cpu]\n' + row.format(algo="anil") + row.format(algo="maml"))
    result = run_cli("reproduce", definition, "--plan")
    assert (result.returncode, result.stderr) == (
        2,
        f"harness: error: {definition}: two rows are labelled 'Omniglot 20w1s'; every row needs a label of its own\n",
    )


# -- processes sharing the decoded-image cache ---------------------------------------------------------------------

DECODER = """
import sys, time
from pathlib import Path
import numpy as np
from harness.data.root import load_or_build_array

marks = Path(sys.argv[1])

def build(allocate):
    with open(marks / "builds", "a") as log:
        log.write(sys.argv[2] + "\\n")
    (marks / "building").touch()
    while not (marks / "release").exists():  # held open until the test has seen the other process wait
        time.sleep(0.01)
    pixels = allocate((4, 3), np.uint8)
    pixels[:] = np.arange(12, dtype=np.uint8).reshape(4, 3)
    return pixels

print(int(load_or_build_array("shared", "k1", build).sum()))
"""


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"hung waiting for {what}"
        time.sleep(0.01)


def test_two_processes_decode_a_shared_cache_once(tmp_path):
    """``reproduce --workers 2`` starts both runs at once on a cold cache: the second waits for the first's
    decoding and reads its file, instead of decoding too (or removing the file the first is about to open)."""
    cache, marks = tmp_path / "cache", tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache)}
    logs = {name: open(marks / f"{name}.err", "w+") for name in ("first", "second")}

    def decoder(name: str) -> subprocess.Popen:
        command = [sys.executable, "-c", DECODER, str(marks), name]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=logs[name], text=True)

    builds = marks / "builds"
    first = decoder("first")
    _wait_for((marks / "building").exists, "the first process to start decoding")
    second = decoder("second")
    _wait_for(
        lambda: "waiting" in (marks / "second.err").read_text() or builds.read_text().count("\n") == 2,
        "the second process to wait for the first, or to decode too",
    )
    (marks / "release").touch()
    outputs = [process.communicate(timeout=HANG_SECONDS)[0] for process in (first, second)]
    errors = {name: (marks / f"{name}.err").read_text() for name in logs}
    assert [process.returncode for process in (first, second)] == [0, 0], errors
    assert builds.read_text() == "first\n"
    assert errors["second"] == f"harness: waiting for another process decoding into {cache / 'shared-k1.npy'}\n"
    assert outputs == ["66\n", "66\n"]
    for log in logs.values():
        log.close()
