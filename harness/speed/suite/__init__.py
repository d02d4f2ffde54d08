"""The Table 6 speed suite (pytest-benchmark), run by ``harness bench`` and CI's speed gate; shipped in the package so that an installed harness can time itself."""
