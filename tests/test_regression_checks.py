"""Benchmark regression checks for any algorithm: ``harness bench --algo`` (speed) and ``harness check`` (learning).

The algorithm under test is a plugin from outside the package, found through its entry point:
ANIL, with switches that make it slower (it sleeps a multiple of the time each step took, so the
slowdown is the same on any machine) or change its inner learning rate.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from harness.run import learning_check

PLUGIN = """
import os
import time

import harness
from harness_plugins.algorithms.anil import ANIL


def _slowed(step):
    def run(self, *args):
        started = time.perf_counter()
        result = step(self, *args)
        time.sleep(float(os.environ.get("ALTERED_SLOWDOWN", "0")) * (time.perf_counter() - started))
        return result

    return run


class Altered(ANIL):
    name = "altered"
    description = "ANIL with switches: ALTERED_SLOWDOWN, ALTERED_LR_FACTOR"
    train_step = _slowed(ANIL.train_step)
    predict = _slowed(ANIL.predict)

    def inner_lr(self, hp):
        return hp.inner_lr * float(os.environ.get("ALTERED_LR_FACTOR", "1"))


@harness.hookimpl
def register_algorithms(registry):
    registry.add(Altered())
"""
BUNDLED = sorted(p.name.removesuffix("-omniglot-5w1s.json") for p in (REPO / "results" / "checks").glob("*.json"))


@pytest.fixture(scope="module")
def altered_site(tmp_path_factory) -> dict:
    """The plugin module and a dist-info naming its entry point, on PYTHONPATH (what pip install leaves)."""
    site = tmp_path_factory.mktemp("site")
    (site / "altered_plugin.py").write_text(PLUGIN)
    info = site / "altered_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: altered-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness]\naltered = altered_plugin\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def _bench(site, tmp_path, *args, **env):
    # ANIL as the reference keeps the test short (MAML's steps are ten times longer); the default is MAML
    shape = ["--config", "omniglot-20w1s", "--rounds", "3", "--reference", "anil"]
    return run_cli("bench", "--algo", "altered", *shape, *args, env_extra={**site, **env}, cwd=tmp_path)


def test_a_slowed_plugin_algorithm_fails_the_speed_comparison_naming_step_size_and_baseline(altered_site, tmp_path):
    saved = _bench(altered_site, tmp_path, "--save", "before")
    assert saved.returncode == 0, saved.stderr
    baseline = json.loads((tmp_path / ".benchmarks" / "ratios" / "before.json").read_text())
    assert baseline["measured_on"]["reference"] == "anil"
    assert sorted(baseline["ratios"]) == ["omniglot-20w1s inference", "omniglot-20w1s train"]
    same = _bench(altered_site, tmp_path, "--compare", "before", "--max-regression", "100%")
    assert same.returncode == 0, same.stderr
    slowed = _bench(altered_site, tmp_path, "--compare", "before", "--max-regression", "100%", ALTERED_SLOWDOWN="4")
    assert slowed.returncode == 1, slowed.stderr
    prefix = "harness: regression: "
    lines = [line.removeprefix(prefix) for line in slowed.stderr.splitlines() if line.startswith(prefix)]
    assert {line.split(":")[0] for line in lines} == {"omniglot-20w1s train", "omniglot-20w1s inference"}
    assert all("altered takes" in line and "the time of anil, baseline before" in line for line in lines), lines


@pytest.mark.parametrize(
    "args, baseline, message",
    [
        (["--algo", "nosuch"], None, "unknown algorithm 'nosuch'; valid algorithms: "),
        (["--algo", "anil", "--backbone", "conv9"], None, "unknown backbone 'conv9'; valid backbones: "),
        (["--algo", "anil", "--reference", "nosuch"], None, "unknown algorithm 'nosuch'; valid algorithms: "),
        (["--reference", "maml"], None, "--reference names what --algo is timed against; give --algo too"),
        (["--algo", "multiclass"], None, "multiclass trains on classification batches, not episodes: "),
        (["--algo", "anil", "--paths"], None, "--algo times one algorithm against a reference; --paths does not"),
        (["--algo", "anil", "--compare", "gone"], None, "--compare gone: no baseline at .benchmarks/ratios/gone.json"),
        (["--algo", "anil", "--compare", "b.json"], {"algorithm": "boil"}, "baseline b.json was measured with "),
        (["--algo", "anil", "--compare", "b.json"], {"harness": "0.0.1"}, "baseline b.json was measured with harness"),
        (
            ["--algo", "anil", "--config", "mini-5w1s", "--compare", "b.json"],
            {},
            "baseline b.json was measured with steps ['omniglot-20w1s inference', 'omniglot-20w1s train']",
        ),
    ],
)
def test_bad_bench_input_is_one_line_before_any_timing(args, baseline, message, tmp_path):
    if baseline is not None:
        measured_on = {"harness": learning_check.harness.__version__, "algorithm": "anil", "reference": "maml"}
        measured_on |= {"backbone": "default", **baseline}
        ratios = {"omniglot-20w1s train": 0.2, "omniglot-20w1s inference": 0.2}
        record = {"kind": "harness-bench-ratios", "measured_on": measured_on, "ratios": ratios}
        (tmp_path / "b.json").write_text(json.dumps(record))
    result = run_cli("bench", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"harness: error: {message}") and result.stderr.count("\n") == 1, result.stderr


def _check(algo, data_root, tmp_path, *args, env=None):
    files = ["--report", tmp_path / "report.json", "--junit", tmp_path / "report.xml"]
    return run_cli(
        "check", "--algo", algo, "--data", "omniglot-5w1s", "--data-root", data_root, *files, *args, env_extra=env
    )


@pytest.mark.realdata
@pytest.mark.parametrize("algo", BUNDLED)
def test_every_bundled_algorithm_learns_as_its_committed_baseline(algo, data_root, tmp_path):
    baseline = REPO / "results" / "checks" / f"{algo}-omniglot-5w1s.json"
    result = _check(algo, data_root, tmp_path, "--baseline", baseline)
    report = json.loads((tmp_path / "report.json").read_text())
    assert result.returncode == 0, (result.stderr, report["failures"])
    assert report["passed"] and report["comparison"].startswith(("exact", "within the 95% intervals"))
    suite = ElementTree.parse(tmp_path / "report.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("1", "0")


@pytest.mark.realdata
def test_a_changed_inner_learning_rate_fails_the_learning_check_on_real_data(altered_site, data_root, tmp_path):
    baseline = tmp_path / "altered.json"
    assert _check("altered", data_root, tmp_path, "--save", baseline, env=altered_site).returncode == 0
    unchanged = _check("altered", data_root, tmp_path, "--baseline", baseline, env=altered_site)
    assert unchanged.returncode == 0, unchanged.stderr
    changed = _check(
        "altered", data_root, tmp_path, "--baseline", baseline, env={**altered_site, "ALTERED_LR_FACTOR": "3"}
    )
    assert changed.returncode == 1, changed.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["comparison"].startswith("exact: the same machine") and not report["passed"]
    assert changed.stderr.startswith("harness: check failed: metrics row 1: ")
    failure = ElementTree.parse(tmp_path / "report.xml").getroot().find("testcase/failure")
    assert failure is not None and failure.get("message") == report["failures"][0]


def test_the_default_speed_reference_follows_the_derivative_order():
    from harness.plugin.manager import get_plugins
    from harness.speed import algorithm_speed

    algorithms = get_plugins().algorithms
    assert [algorithm_speed.reference_for(algorithms.get(name)) for name in ("anil", "fomaml", "protonet")] == [
        "maml",
        "fomaml",
        "maml",
    ]


def test_across_machines_the_test_accuracies_must_agree_within_their_intervals():
    here = {"host": "a", "device_name": "cpu x", "torch_threads": 2, "torch": "2.14.1", "harness": "0.1.0"}
    baseline = {"machine": here, "metrics": [{"step": 1}], "test": {"accuracy": 0.70, "ci95": 0.04, "tasks": 100}}
    elsewhere = {**here, "host": "b"}
    close = {"machine": elsewhere, "metrics": [{"step": 2}], "test": {"accuracy": 0.63, "ci95": 0.04, "tasks": 100}}
    comparison, failures = learning_check.compare(baseline, close)
    assert comparison.startswith("within the 95% intervals") and "host a" in comparison and failures == []
    far = {**close, "test": {"accuracy": 0.61, "ci95": 0.04, "tasks": 100}}
    assert learning_check.compare(baseline, far)[1] == [
        "test accuracy 61.00 ± 4.00 % does not agree with the baseline's 70.00 ± 4.00 % (differ by more than 8.00)"
    ]
    assert learning_check.compare(baseline, {**close, "machine": here})[0].startswith("exact")


@pytest.mark.parametrize(
    "args, edit, message",
    [
        (["--baseline", "{tmp}/none.json"], None, "no baseline at {tmp}/none.json; save one with "),
        (
            ["--baseline", "{tmp}/b.json"],
            {"algorithm": "maml"},
            "baseline {tmp}/b.json was measured with algorithm 'maml'",
        ),
        (["--baseline", "{tmp}/b.json", "--iterations", "50"], {}, "baseline {tmp}/b.json was measured with budget "),
        (
            ["--baseline", "{tmp}/b.json"],
            {"harness": "0.0.1"},
            "baseline {tmp}/b.json was measured with harness '0.0.1'",
        ),
        (["--baseline", "{tmp}/b.json"], {"kind": "x"}, "{tmp}/b.json is not a harness check baseline"),
    ],
)
def test_bad_check_input_is_one_line_before_training(args, edit, message, tmp_path):
    if edit is not None:
        baseline = {"kind": learning_check.BASELINE_KIND, **learning_check.check_identity("anil", "omniglot-5w1s", {})}
        baseline["budget"] = {**learning_check.BUDGET, "seed": 0}
        (tmp_path / "b.json").write_text(json.dumps({**baseline, **edit}))
    args = [a.format(tmp=tmp_path) for a in args]
    result = run_cli("check", "--algo", "anil", "--data", "omniglot-5w1s", "--data-root", "/nonexistent", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("harness: error: " + message.format(tmp=tmp_path)), result.stderr
    assert result.stderr.count("\n") == 1 and not list(Path(REPO).glob("harness-check-*"))
