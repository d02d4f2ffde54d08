"""Speed: the Table 6 workloads and speed suite, measured floors, peer libraries and per-algorithm step timing."""
