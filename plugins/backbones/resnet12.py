"""ResNet-12, the standard few-shot residual backbone (Lee et al., CVPR 2019, "Meta-Learning with
Differentiable Convex Optimization" (MetaOptNet), Section 4 and their released code; Oreshkin et al. 2018).

4 residual blocks of 64, 160, 320 and 640 channels. Each block: three 3x3 convolutions (no bias), each
followed by BatchNorm, LeakyReLU(0.1) after the first two; a 1x1 convolution + BatchNorm shortcut added
to the third; LeakyReLU(0.1); 2x2 max-pool. 84x84 -> 5x5x640, then the spatial mean (640 features, as
most later few-shot work reads ResNet-12 out; MetaOptNet flattens) and the linear head. MetaOptNet's
DropBlock regularisation is not included.

BatchNorm follows the harness's mode (``bn_mode``, ``plugins/backbones/conv4.py``): batch statistics at
training and test time, no running averages. The network is plain PyTorch layers, so it runs MAML-style
inner loops with the tasks side by side and ANIL-style bodies once per meta-batch through the rules of
``harness.engine.side_by_side`` without code of its own (``tests/test_side_by_side.py``).

    harness run --algo anil --data miniimagenet-5w1s --backbone resnet12
"""

from __future__ import annotations

import torch
from torch import nn

import harness
from harness.errors import HarnessError

WIDTHS = (64, 160, 320, 640)  # MetaOptNet ResNet-12
LEAK = 0.1  # LeakyReLU negative slope, MetaOptNet


def _norm(channels: int, bn_mode: str) -> nn.Module:
    return nn.BatchNorm2d(channels, track_running_stats=False) if bn_mode == "batch" else nn.Identity()


class ResidualBlock(nn.Module):
    """``body.<i>``: three conv-BN(-LeakyReLU) layers plus a 1x1 shortcut, then LeakyReLU and max-pool."""

    def __init__(self, in_channels: int, out_channels: int, bn_mode: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = _norm(out_channels, bn_mode)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = _norm(out_channels, bn_mode)
        self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn3 = _norm(out_channels, bn_mode)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), _norm(out_channels, bn_mode))
        self.relu = nn.LeakyReLU(LEAK)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in, H, W] -> [B, out, H/2, W/2]
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.pool(out + self.shortcut(x)))  # = pool(relu(.)): LeakyReLU is monotone


class SpatialMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C]
        return x.mean(dim=(2, 3))


class ResNet12(nn.Module):
    """``body`` (4 residual blocks + spatial mean) and a linear ``head``."""

    def __init__(self, in_channels: int, ways: int, bn_mode: str = "batch", widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        if bn_mode not in ("batch", "none"):
            raise HarnessError(f"unknown bn_mode {bn_mode!r}; valid modes: batch, none")
        blocks, channels = [], in_channels
        for width in widths:
            blocks.append(ResidualBlock(channels, width, bn_mode))
            channels = width
        self.body = nn.Sequential(*blocks, SpatialMean())
        self.head = nn.Linear(channels, ways)
        self.feature_dim = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # MetaOptNet's initialisation
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
        nn.init.zeros_(self.head.weight)  # as Conv4 (the harness's --head-init zero default)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, ways]
        return self.head(self.body(x))


class ResNet12Backbone:
    name = "resnet12"
    description = "ResNet-12 (MetaOptNet): 4 residual blocks 64-160-320-640, LeakyReLU, max-pool -> spatial mean (640)"

    def build(self, in_channels: int, image_size: int, ways: int, bn_mode: str = "batch") -> ResNet12:
        return ResNet12(in_channels, ways, bn_mode)


@harness.hookimpl
def register_backbones(registry):
    registry.add(ResNet12Backbone())
