"""``--report-to``: each tracker's own reader shows every scalar of a run that stopped and resumed, as one
tracker run; a tracker that fails costs one line and changes no number. All offline."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from harness.run.stopping import EXIT_STOPPED, SIMULATED_SECONDS
from harness.run.trackers import RunTrackers, Tracker, TrackerRun, parse_report_to

# ANIL, Omniglot 5-way 1-shot, 20 iterations; a 3 s limit at a simulated 0.25 s per iteration stops it at step 11.
FLAGS = [
    "--algo",
    "anil",
    "--data",
    "omniglot-5w1s",
    "--meta-batch-size",
    "2",
    "--iterations",
    "20",
    "--val-every",
    "10",
    "--log-every",
    "5",
    "--val-tasks",
    "4",
    "--test-tasks",
    "8",
    "--no-progress",
    "--no-download",
]


def offline(tmp_path: Path) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": f"file:{tmp_path / 'mlruns'}",
        "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 asks for a database; its file store is the offline one
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }


def stopped_and_resumed(data_root, tmp_path: Path, report_to: str) -> Path:
    out, env = tmp_path / "run", offline(tmp_path)
    stopped = run_cli(
        "run", *FLAGS, "--report-to", report_to, "--time-limit", "3s", "--data-root", data_root, "--out", out,
        env_extra={**env, SIMULATED_SECONDS: "0.25"},
    )  # fmt: skip
    assert stopped.returncode == EXIT_STOPPED, stopped.stderr
    assert "stopped at step 11 of 20" in stopped.stderr
    resumed = run_cli("run", "--resume", out, "--no-progress", "--data-root", data_root, env_extra=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "warning" not in resumed.stderr + stopped.stderr, resumed.stderr + stopped.stderr
    return out


def expected_scalars(out: Path) -> dict[str, dict[int, float]]:
    """Every scalar a tracker must show: metrics rows at their steps, the test results at the last step."""
    expected: dict[str, dict[int, float]] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key not in ("step", "split") and isinstance(value, int | float):
                expected.setdefault(f"{row['split']}/{key}", {})[row["step"]] = float(value)
    summary = json.loads((out / "summary.json").read_text())
    for key, value in summary["test"].items():
        if isinstance(value, int | float):
            expected[f"test/{key}"] = {summary["iterations"]: float(value)}
    return expected


@pytest.mark.realdata
def test_tensorboard_event_files_hold_every_scalar_of_a_stopped_and_resumed_run(data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = stopped_and_resumed(data_root, tmp_path, "tensorboard")
    evaluated = run_cli("eval", out, "--test-tasks", "4", "--data-root", data_root)  # reported to the same files
    assert evaluated.returncode == 0, evaluated.stderr
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    shown = {
        tag: {event.step: pytest.approx(event.value, rel=1e-6) for event in events.Scalars(tag)}
        for tag in events.Tags()["scalars"]
    }
    evaluation = json.loads((out / "eval-fewshot-num_tasks=4.json").read_text())["rows"][0]
    assert shown.pop(f"eval/fewshot/omniglot-5w1s/{evaluation['name']}") == {20: pytest.approx(evaluation["mean"])}
    assert shown.pop(f"eval/fewshot/omniglot-5w1s/{evaluation['name']} ci95") == {20: pytest.approx(evaluation["ci95"])}
    assert shown == expected_scalars(out)
    assert "config" in {tag.split("/")[0] for tag in events.Tags()["tensors"]}  # the text plugin's config


def test_a_meta_rl_run_reports_every_scalar_too(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "rl"
    result = run_cli(
        "run", "--algo", "maml", "--env", "2d-navigation", "--meta-batch-size", "5", "--iterations", "2",
        "--test-tasks", "10", "--no-progress", "--report-to", "tensorboard", "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    shown = {
        tag: {event.step: pytest.approx(event.value, rel=1e-6) for event in events.Scalars(tag)}
        for tag in events.Tags()["scalars"]
    }
    assert shown == expected_scalars(out) and "train/return" in shown


@pytest.mark.realdata
def test_mlflow_holds_one_run_with_every_scalar_and_the_artifacts(data_root, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = stopped_and_resumed(data_root, tmp_path, "mlflow")
    evaluated = run_cli("eval", out, "--test-tasks", "4", "--data-root", data_root, env_extra=offline(tmp_path))
    assert evaluated.returncode == 0 and "warning" not in evaluated.stderr, evaluated.stderr
    client = MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    experiment = client.get_experiment_by_name("harness")
    (run,) = client.search_runs([experiment.experiment_id])  # the resumed start continued the same run
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    shown = {
        name: {metric.step: metric.value for metric in client.get_metric_history(run.info.run_id, name)}
        for name in run.data.metrics
        if not name.startswith("eval/")
    }
    assert shown == expected_scalars(out)
    assert any(name.startswith("eval/fewshot/omniglot-5w1s/") for name in run.data.metrics)
    assert run.data.params["algo"] == "anil" and run.data.params["meta_batch_size"] == "2"
    artifacts = {info.path for info in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.json", "summary.json", "best.pt", "evaluations"}
    evaluations = {info.path for info in client.list_artifacts(run.info.run_id, "evaluations")}
    assert evaluations == {"evaluations/eval-fewshot-num_tasks=4.json"}


def wandb_records(path: Path):
    """The records of a W&B ``.wandb`` file: LevelDB's log format (32 KiB blocks of CRC, length, type chunks)
    after W&B's 7-byte header. Hand-written because wandb 0.31 no longer ships a Python reader."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or a record's last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def items_of(items) -> dict:
    """W&B stores ``train/loss`` as the nested key ``["train", "loss"]``."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


@pytest.mark.realdata
def test_wandb_offline_files_hold_every_scalar_under_one_run_id(data_root, tmp_path):
    out = stopped_and_resumed(data_root, tmp_path, "wandb")
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2  # one per start, under one id: `wandb sync` uploads them as one run
    assert len({path.stem for path in files}) == 1
    shown: dict[str, dict[int, float]] = {}
    summary: dict[str, float] = {}
    for path in files:
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                for key, value in items_of(record.history.item).items():
                    if not key.startswith("_"):
                        shown.setdefault(key, {})[record.history.step.num] = float(value)
            elif kind == "summary":
                summary.update(items_of(record.summary.update))
    expected = expected_scalars(out)
    tests = {key: expected.pop(key) for key in list(expected) if key.startswith("test/")}
    assert shown == expected
    assert {key: summary[key] for key in tests} == {
        key: value for key, (value,) in ((k, v.values()) for k, v in tests.items())
    }


@pytest.mark.realdata
def test_a_failing_tracker_is_one_line_and_changes_no_number(data_root, tmp_path):
    plain = run_cli("run", *FLAGS, "--data-root", data_root, "--out", tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr
    env = {**offline(tmp_path), "MLFLOW_TRACKING_URI": f"file:{tmp_path / 'plain' / 'metrics.jsonl'}/mlruns"}
    tracked = run_cli(
        "run", *FLAGS, "--report-to", "tensorboard,mlflow", "--data-root", data_root, "--out", tmp_path / "tracked",
        env_extra=env,
    )  # fmt: skip
    assert tracked.returncode == 0, tracked.stderr
    warnings = [line for line in tracked.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("harness: warning: tracker 'mlflow' failed (start: ")
    assert warnings[0].endswith("; the run goes on without it")
    assert numbers(tmp_path / "tracked") == numbers(tmp_path / "plain")


def numbers(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows] + [summary["test"]]


def test_unknown_tracker_is_one_line_before_any_work(tmp_path):
    result = run_cli("run", *FLAGS, "--report-to", "tensorboard,neptune", "--out", tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr == (
        "harness: error: --report-to 'tensorboard,neptune': unknown tracker 'neptune'; "
        "trackers: mlflow, tensorboard, wandb, or none\n"
    )
    assert not (tmp_path / "run").exists()


class Registry:
    def __init__(self, *trackers):
        self.trackers = {tracker.name: tracker for tracker in trackers}

    def get(self, name):
        return self.trackers[name]

    def names(self):
        return list(self.trackers)


class NeedsMissingLibrary(Tracker):
    name, requirement = "missing", "missing-extra"

    def start(self, run_dir, config, step, kept):
        import harness_test_no_such_library  # noqa: F401

        raise AssertionError("unreachable")


class Recording(Tracker):
    name = "recording"

    def __init__(self):
        self.calls: list = []

    def start(self, run_dir, config, step, kept):
        self.calls.append(("start", step, kept))
        tracker = self

        class Run(TrackerRun):
            def log_scalars(self, step, scalars):
                tracker.calls.append(("log", step, scalars))
                if step == 2:
                    raise OSError("disk gone\nsecond line")

            def state(self):
                return {"id": "r1"}

        return Run()


def test_a_missing_library_and_a_raising_tracker_cost_one_line_each(tmp_path, capsys):
    recording = Recording()
    trackers = RunTrackers(Registry(NeedsMissingLibrary(), recording), tmp_path, ["missing", "recording"])
    trackers.start({"algo": "anil"}, 0)
    trackers.log({"step": 1, "split": "train", "loss": 0.5, "accuracy": 1, "flag": True, "nested": {"a": 2}})
    trackers.log({"step": 2, "split": "val", "accuracy": 0.25})
    trackers.log({"step": 3, "split": "val", "accuracy": 0.5})  # the raising tracker is left out by now
    trackers.finish({"test": {"accuracy": 0.5}})
    assert capsys.readouterr().err.splitlines() == [
        "harness: warning: tracker 'missing' failed (start: ModuleNotFoundError: No module named "
        "'harness_test_no_such_library'; pip install 'feature-reuse-harness[missing-extra]'); the run goes on without it",
        "harness: warning: tracker 'recording' failed (log_scalars: OSError: disk gone); the run goes on without it",
    ]
    assert recording.calls == [
        ("start", 0, {}),
        ("log", 1, {"train/loss": 0.5, "train/accuracy": 1.0, "train/flag": 1.0, "train/nested/a": 2.0}),
        ("log", 2, {"val/accuracy": 0.25}),
    ]
    kept = json.loads((tmp_path / "trackers.json").read_text())
    assert kept == {"report_to": ["missing", "recording"], "runs": {"recording": {"id": "r1"}}}
    resumed = RunTrackers(Registry(NeedsMissingLibrary(), recording), tmp_path, None)  # --resume keeps the list
    sys.modules.pop("harness_test_no_such_library", None)
    resumed.start({"algo": "anil"}, 7)
    assert resumed.names == ["missing", "recording"] and recording.calls[-1] == ("start", 7, {"id": "r1"})


def test_report_to_none_and_duplicates():
    registry = Registry(Recording())
    assert parse_report_to(None, registry) is None
    assert parse_report_to("none", registry) == []
    assert parse_report_to("recording, recording", registry) == ["recording"]
