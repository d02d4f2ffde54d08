"""A lower bound on the memory a meta-batch or an evaluation chunk needs, checked before any work.

Every image of a training step goes through the network with its activations kept for the
backward pass (and every image of an evaluation chunk through the inner loop's forward passes),
so the outputs of the layers that hold parameters (convolutions, normalisations, linear layers)
for all of a step's images are alive at once. Their size, measured by one forward pass of two
images, times the step's images is a lower bound: a second-order inner loop keeps several such
graphs, and the intermediate ReLU and pooling outputs come on top. A step whose lower bound
already exceeds the memory free on its device cannot run; it is refused in one line instead
of swapping the machine or failing in an allocation minutes later.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.errors import HarnessError

MEMINFO = Path("/proc/meminfo")


def activation_bytes_per_image(model: torch.nn.Module, in_channels: int, image_size: int) -> int:
    """Bytes of the outputs of every parameter-holding layer for one image (two images' worth, halved)."""
    total = [0]

    def count(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    holders = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    handles = [m.register_forward_hook(count) for m in holders]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.zeros(2, in_channels, image_size, image_size, device=device))  # [2, C, H, W]
    finally:
        for handle in handles:
            handle.remove()
    return total[0] // 2


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new allocations on ``device``; None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu" and MEMINFO.exists():
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def size_text(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def refuse_if_too_big(what: str, flag: str, images: int, per_image: int, device: torch.device) -> None:
    """Refuse ``what`` (e.g. "a meta-batch of 16 tasks") when its lower bound exceeds the free memory."""
    free = free_bytes(device)
    need = images * per_image
    if free is not None and need > free:
        raise HarnessError(
            f"{what} ({images:,} images) needs at least {size_text(need)} for its layer outputs alone "
            f"(a lower bound); {device.type} has {size_text(free)} free; lower {flag}"
        )
