"""The example third-party plugin, installed for real and run through its entry point."""

import json
import os
import subprocess
import sys

import pytest
from conftest import HANG_SECONDS, REPO, run_cli


@pytest.fixture(scope="module")
def reptile_site(tmp_path_factory):
    """``pip install --no-deps`` of examples/harness-reptile into a private site directory."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--target",
            str(target),
            str(REPO / "examples" / "harness-reptile"),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        env={**os.environ, "TMPDIR": str(build)},
    )
    assert result.returncode == 0, result.stderr
    return target


def with_site(site):
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def test_reptile_is_found_through_its_entry_point(reptile_site):
    result = run_cli("plugins", env_extra=with_site(reptile_site))
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("reptile"))
    assert "entry point reptile = harness_reptile" in line and "algorithms: reptile" in line


def test_reptile_runs_end_to_end(reptile_site, data_root, tmp_path):
    out = tmp_path / "reptile"
    result = run_cli(
        "run",
        "--algo",
        "reptile",
        "--data",
        "omniglot-5w1s",
        "--iterations",
        "30",
        "--meta-batch-size",
        "4",
        "--inner-steps",
        "3",
        "--val-every",
        "15",
        "--val-tasks",
        "10",
        "--test-tasks",
        "40",
        "--no-progress",
        "--no-download",
        "--data-root",
        data_root,
        "--out",
        out,
        env_extra=with_site(reptile_site),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "reptile" and summary["iterations"] == 30
    assert summary["test"]["accuracy"] > 0.3  # chance is 20 %


def test_blocking_the_entry_point_removes_reptile(reptile_site):
    result = run_cli(
        "run",
        "--algo",
        "reptile",
        "--data",
        "omniglot-5w1s",
        env_extra={**with_site(reptile_site), "HARNESS_BLOCK_PLUGINS": "reptile"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "harness: error: unknown algorithm 'reptile'; valid algorithms: "
        "anil, anil-rl, boil, fomaml, maml, maml++, maml-rl, meta-sgd, multiclass, multitask, nil-train, protonet, random-features, unicorn-maml"
    )


@pytest.mark.realdata
def test_the_example_ci_runs_both_checks_against_its_committed_baselines(reptile_site, data_root, tmp_path):
    """What the example's GitHub Actions and GitLab CI jobs run, here with the plugin installed for real."""
    env = {
        **with_site(reptile_site),
        "HARNESS_DATA_ROOT": str(data_root),
        "CHECK_OUT": str(tmp_path),
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
    }
    script = REPO / "examples" / "harness-reptile" / "ci" / "checks.sh"
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env={**os.environ, **env}, timeout=HANG_SECONDS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no step regressed by more than 50% against baseline" in result.stdout
    report = json.loads((tmp_path / "learning.json").read_text())
    assert report["passed"] and report["algorithm"] == "reptile" and (tmp_path / "learning.xml").exists()
