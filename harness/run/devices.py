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
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"--device {name} requested but CUDA is not available on this machine (use cpu or auto)")
    elif name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise HarnessError(f"unknown device {name!r}; valid devices: {', '.join(DEVICE_CHOICES)}, cuda:N")
    else:
        device = torch.device(name)
    if device.type == "cuda":
        full_float32_on_cuda()
    return device


def full_float32_on_cuda() -> None:
    """float32 means float32 on a GPU too: no TF32 in convolutions or matrix products.

    PyTorch lets cuDNN convolutions use TF32 by default (10-bit mantissa, ~1e-3 relative error),
    which would make a GPU run a different computation from the CPU one and from the paper's
    float32. Speed on a GPU comes from the fast paths and ``--precision bf16`` (body features),
    both explicit choices recorded in the run's config.
    """
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_commit() -> str:
    """The git commit of the harness source a run imported (``+ changes`` when its tracked files differ from
    it), or why there is none (an installed wheel has no repository): results name the code that made them."""
    import subprocess
    from pathlib import Path

    root = Path(harness.__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    try:
        found = subprocess.run(
            [*git, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True, timeout=30
        )
        # an installed package inside some other repository (a venv in a project) is not that repository's code
        if found.returncode != 0 or Path(found.stdout.split()[0]).resolve() != root:
            return "not a git checkout"
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    return found.stdout.split()[1] + (" + changes" if changed.stdout.strip() else "")


def describe_device(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "harness": harness.__version__,
        "harness_source": source_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except Exception as exc:  # noqa: BLE001 - a torchvision built for another torch fails with RuntimeError
        info["torchvision"] = f"unavailable ({type(exc).__name__}: {exc})"
    return info
