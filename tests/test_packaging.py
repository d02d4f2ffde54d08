"""What users install is a range; what CI tests is pinned, in one constraints file that CI uses."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import torch
from conftest import REPO
from packaging.requirements import Requirement
from packaging.version import Version


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name: Requirement(line) for line in project["dependencies"]}


def _constraints() -> dict[str, str]:
    lines = (REPO / ".ci" / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): version.strip() for name, version in pins}


def test_torch_and_torchvision_are_ranges_and_ci_pins_a_version_inside_them():
    requirements, pins = _requirements(), _constraints()
    for name in ("torch", "torchvision"):
        assert not any(spec.operator == "==" for spec in requirements[name].specifier), requirements[name]
        assert Version(pins[name]) in requirements[name].specifier, (name, pins[name])
    assert "-c .ci/constraints.txt" in (REPO / ".ci" / "run").read_text()
    assert "-c .ci/constraints.txt" in (REPO / "README.md").read_text()  # the README's test command is CI's


def test_the_installed_torch_is_inside_the_declared_range():
    assert Version(torch.__version__.split("+")[0]) in _requirements()["torch"].specifier


def test_a_wheel_install_reproduces_and_benches_from_an_empty_directory(tmp_path):
    """The wheel carries everything the commands read: experiment definitions, the speed suite, the data splits.
    Installed without dependencies into a fresh venv that borrows this one's packages (torch, ...), it runs
    from a directory with no source tree in reach."""
    wheels, venv, empty = tmp_path / "wheels", tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(wheels),
        str(REPO),
    ]
    subprocess.run(build, check=True, capture_output=True, env=env)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
    subprocess.run([*install, *map(str, wheels.glob("*.whl"))], check=True, capture_output=True, env=env)
    fresh_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(fresh_site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    def harness(*args: str) -> str:
        done = subprocess.run([venv / "bin" / "harness", *args], cwd=empty, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run(
        [python, "-c", "import harness; print(harness.__file__)"], cwd=empty, env=env, capture_output=True, text=True
    )
    assert where.stdout.startswith(fresh_site)
    assert "Table 2" in harness("reproduce", "table2", "--plan")
    assert "--compare" in harness("bench", "--help")
    suite = Path(fresh_site) / "harness" / "speed" / "suite" / "test_table6.py"
    assert suite.is_file() and sorted(p.name for p in empty.iterdir()) == []
