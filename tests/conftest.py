"""Shared fixtures. Real data: ``$HARNESS_TEST_DATA`` (default ``<repo>/../shared/data``).

Real-data tests skip when the data are absent, unless ``HARNESS_REQUIRE_DATA=1``
(set by ``.ci/run``), where absence is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.plugin.manager import ensure_bundled_package

ensure_bundled_package()  # `harness_plugins` importable from a source checkout too

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("HARNESS_TEST_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "omniglot" / "omniglot-py").is_dir():
        message = f"real data not found under {DATA_ROOT} (set HARNESS_TEST_DATA)"
        if os.environ.get("HARNESS_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return DATA_ROOT


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (``-n N``) each worker, and every command it starts, gets its share of the cores:
    N processes each with a thread per core would fight over them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if sys.platform == "linux" else (os.cpu_count() or 1)
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_the_cores_between_workers()


@pytest.fixture(scope="session", autouse=True)
def decoded_cache(tmp_path_factory):
    """One decoded-image cache per test session, shared with CLI subprocesses and, under pytest-xdist, between
    the workers (the cache's lock makes one of them decode each split while the others wait)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.getbasetemp().parent / "decoded-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("decoded-cache")
    previous = os.environ.get("HARNESS_CACHE_DIR")
    os.environ["HARNESS_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("HARNESS_CACHE_DIR", None)
    else:
        os.environ["HARNESS_CACHE_DIR"] = previous


#: Catches a hung subprocess only: far above what any test's command takes on a slow machine (the longest
#: take a few minutes on this project's 2-core CPU), so no test depends on how fast the machine is.
HANG_SECONDS = 3600


def written_file(result: subprocess.CompletedProcess) -> Path:
    """The file ``harness eval`` / ``analyze`` wrote, from its last line (``written to FILE[ and FIGURE]``)."""
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("written to "), result.stdout
    return Path(last.removeprefix("written to ").split(" and ")[0])


def run_cli(*args, env_extra=None, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=HANG_SECONDS,
    )
