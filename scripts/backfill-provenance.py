"""Give the committed evaluations written before provenance was recorded the record they lack, where git
proves which checkpoint they evaluated; list the others.

    python scripts/backfill-provenance.py            # what it would do
    python scripts/backfill-provenance.py --write    # add the records

``harness reproduce`` reuses an evaluation only when its ``provenance`` names the run's current checkpoint
(``harness.run.provenance``); an ``eval-*.json`` written before that record existed is evaluated again, and
one that needs files no longer kept (``freeze -o all_checkpoints=1`` on a run whose ``checkpoints/`` was
dropped) cannot be. A record is added only when all of these hold:

- the file names its checkpoint, which exists, is tracked by git and is unchanged in the working tree;
- the checkpoint was last changed in the commit that last changed the evaluation, or in one before it,
  and that commit holds the run's ``summary.json`` (the run had finished; its checkpoint has not changed);
- the file's name is ``eval-<its evaluator><-key=value ...>.json`` (the options it was given).

The record says it was added afterwards (``"backfilled"``: the commit it rests on) and, as the harness's own
records do, gives the checkpoint's step and sha256. It has no ``options`` (the defaults the evaluator filled
in were not written down) and no harness version.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.run.files import read_json, write_json  # noqa: E402
from harness.run.provenance import checkpoint_record  # noqa: E402


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def last_commit(path: Path) -> str | None:
    return git("log", "-1", "--format=%H", "--", str(path.relative_to(REPO))) or None


def settled_before(path: Path, commit: str) -> bool:
    """``path`` is tracked, unchanged in the working tree, and last changed in ``commit`` or before it."""
    changed = last_commit(path)
    if changed is None or git("status", "--porcelain", "--", str(path.relative_to(REPO))):
        return False
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", changed, commit], cwd=REPO)
    return ancestor.returncode == 0


def given_options(name: str, evaluator: str) -> dict[str, str] | None:
    """The options a file name records (``eval-freeze-adapt_as=maml-all_checkpoints=1.json``), or None."""
    prefix = f"eval-{evaluator}"
    if not name.startswith(prefix) or not name.endswith(".json"):
        return None
    suffix = name[len(prefix) : -len(".json")]
    if not suffix:
        return {}
    if not suffix.startswith("-"):
        return None
    pairs = re.split(r"-(?=[a-z_]+=)", suffix[1:])
    given = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    return given if len(given) == len(pairs) else None


def record_for(path: Path) -> tuple[dict | None, str]:
    """The provenance to add to ``path``, or None and why not."""
    evaluation = read_json(path)
    checkpoint = REPO / str(evaluation.get("checkpoint", ""))
    given = given_options(path.name, str(evaluation.get("evaluator")))
    commit = last_commit(path)
    if given is None:
        return None, "its name does not give its options"
    if not evaluation.get("checkpoint") or not checkpoint.is_file():
        return None, f"its checkpoint {evaluation.get('checkpoint')!r} is not here"
    if commit is None or git("status", "--porcelain", "--", str(path.relative_to(REPO))):
        return None, "the evaluation is not committed as it is"
    if not settled_before(checkpoint, commit):
        return None, f"{checkpoint.name} changed after the evaluation was committed ({commit[:7]})"
    summary = (checkpoint.parent / "summary.json").relative_to(REPO)
    if subprocess.run(["git", "cat-file", "-e", f"{commit}:{summary}"], cwd=REPO, capture_output=True).returncode:
        return None, f"the run had no summary.json (had not finished) in {commit[:7]}"
    return {
        "evaluator": evaluation["evaluator"],
        "given": dict(sorted(given.items())),
        "checkpoint": checkpoint_record(checkpoint),
        "backfilled": f"scripts/backfill-provenance.py: evaluation committed in {commit[:12]}, its checkpoint unchanged since",
    }, "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="add the records (default: only list)")
    args = parser.parse_args()
    for path in sorted((REPO / "results").glob("reproduce/runs/*/eval-*.json")):
        if "@" in path.name or "provenance" in read_json(path):
            continue
        record, why = record_for(path)
        print(f"{'add' if record else 'skip'}: {path.relative_to(REPO)}{'' if record else f' ({why})'}")
        if record and args.write:
            write_json(path, {**read_json(path), "provenance": record})
    return 0


if __name__ == "__main__":
    sys.exit(main())
