"""What users install is a range; what CI tests is pinned, in one constraints file that CI uses."""

from __future__ import annotations

import tomllib

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
