"""The speed suite is collected only when asked for: ``pytest tests/benchmarks``."""

import pytest


@pytest.fixture(scope="session")
def step_times():
    """Median seconds per benchmark id, filled by the benchmarks, read by the ratio checks."""
    return {}
