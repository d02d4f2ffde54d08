"""Checks at every load: a checkpoint is the file that was recorded, and it belongs to the run it sits in.

- A checkpoint whose sha256 is recorded (a ``SHA256SUMS`` file in its directory or an ancestor, in
  ``sha256sum`` format, or its run's ``summary.json`` as the tested checkpoint) must match it: a
  damaged or altered file is refused instead of evaluated.
- A checkpoint records the config it was trained with; its algorithm, data and backbone must be the
  run's (a ProtoNets ``best.pt`` copied into an ANIL run, a 20-way one into a 5-way run, are refused),
  and a resumed run's ``config.json`` must equal its checkpoint's, but for what ``--resume`` may change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.files import read_json
from harness.run.provenance import file_sha256

IDENTITY = ("algo", "data", "backbone")  # what makes a checkpoint another run's
MAY_DIFFER_ON_RESUME = {"iterations", "device", "data_root", "sources", "eval_batch_size"}
_SEARCH_LEVELS = 6  # SHA256SUMS up to this many directories above the checkpoint (results/ is 4 above best.pt)


def recorded_sha256(path: Path) -> tuple[str, str] | None:
    """``(sha256, where recorded)`` for ``path``, or None when nothing records it."""
    path = Path(path).resolve()
    summary = path.parent / "summary.json"
    if summary.exists():
        tested = read_json(summary).get("tested_checkpoint") or {}
        if tested.get("file") == path.name and tested.get("sha256"):
            return tested["sha256"], str(summary)
    for directory in list(path.parents)[:_SEARCH_LEVELS]:
        sums = directory / "SHA256SUMS"
        if sums.is_file():
            for line in sums.read_text().splitlines():
                digest, _, name = line.strip().partition("  ")
                # sha256sum -c reads names from where it runs: the file's own directory or the one above it
                if name and any((base / name).resolve() == path for base in (directory, directory.parent)):
                    return digest, str(sums)
    return None


def verify_checkpoint(path: Path) -> None:
    recorded = recorded_sha256(path)
    if recorded is not None and file_sha256(path) != recorded[0]:
        raise HarnessError(
            f"{path} does not match the sha256 recorded in {recorded[1]} ({recorded[0][:12]}...): the file was "
            f"damaged or changed after it was recorded; restore it (git checkout, or a fresh copy)"
        )


def refuse_foreign_checkpoint(path: Path, state: dict[str, Any], config: dict[str, Any]) -> None:
    """Raise when the checkpoint's own config names another algorithm, data set or backbone than the run's."""
    own = state.get("config")
    if not isinstance(own, dict):
        return  # checkpoints from before configs were recorded in them
    differing = [k for k in IDENTITY if k in own and k in config and own[k] != config[k]]
    if differing:
        what = ", ".join(f"{k} {own[k]!r} (the run: {config[k]!r})" for k in differing)
        raise HarnessError(f"{path} belongs to another run: it was trained with {what}")


def refuse_changed_config(path: Path, state: dict[str, Any], config: dict[str, Any]) -> None:
    """On ``--resume``: the run's ``config.json`` must be the config its checkpoint was trained with."""
    own = state.get("config")
    if not isinstance(own, dict):
        return
    changed = sorted(k for k in own.keys() & config.keys() if k not in MAY_DIFFER_ON_RESUME and own[k] != config[k])
    if changed:
        what = ", ".join(f"{k} {config[k]!r} (checkpoint: {own[k]!r})" for k in changed)
        raise HarnessError(
            f"{path.parent / 'config.json'} no longer matches the config {path.name} was trained with: {what}; "
            f"restore config.json, or start a new run"
        )
