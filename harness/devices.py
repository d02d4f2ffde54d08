"""Choosing the torch device and describing the machine for ``summary.json``."""

from __future__ import annotations

import platform
import sys

import torch

import harness
from harness.errors import HarnessError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"--device {name} requested but CUDA is not available on this machine (use cpu or auto)")
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise HarnessError(f"unknown device {name!r}; valid devices: {', '.join(DEVICE_CHOICES)}, cuda:N")
    return torch.device(name)


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "harness": harness.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    return info
