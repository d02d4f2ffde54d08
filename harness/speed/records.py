"""What the speed commands (``harness bench``) write and compare against: the suite's folder, the peer
libraries' published-here times, and the name and description of the machine a measurement is from."""

from __future__ import annotations

import os
import re
from pathlib import Path

#: The speed suite (pytest-benchmark), shipped in the package; measurements go to ``RESULTS`` under the working directory.
SUITE = Path(__file__).resolve().parent / "suite"
RESULTS = Path("results") / "benchmarks"

#: Peer libraries on this 2-core CPU, torch 2.14.1 (issue 7's table): (MAML, FOMAML, ANIL) seconds.
PEERS_LEARN2LEARN = {
    ("omniglot-20w1s", "train"): (1.86, 0.53, 0.16),
    ("omniglot-20w1s", "inference"): (0.59, 0.46, 0.069),
    ("mini-5w1s", "train"): (0.37, 0.11, 0.028),
    ("mini-5w5s", "train"): (1.60, 0.43, 0.080),
}


def device_file_name(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch

    return "cuda-" + re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-").lower()


def machine_description(device: str) -> str:
    import torch

    if device != "cpu":
        return torch.cuda.get_device_name(0)
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
