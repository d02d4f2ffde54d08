"""The speed suite: ``harness bench``, or ``pytest harness/speed/suite`` (outside the unit tests' ``testpaths``)."""

import pytest

from harness.run.allocator import keep_freed_memory

keep_freed_memory()  # as the harness command line does: the suite times what users get


@pytest.fixture(scope="session")
def step_times():
    """Median seconds per benchmark id, filled by the benchmarks, read by the ratio checks."""
    return {}
