"""Conv4 backbones of Raghu et al. (ICLR 2020), Appendix A, after Finn et al. (2017).

- ``conv4`` (Omniglot): 4 x [3x3 conv, 64 filters, stride 2, BatchNorm, ReLU]
  on 28x28x1 -> 2x2x64, averaged over space as the reference MAML code does
  for Omniglot (``tf.reduce_mean(hidden4, [1, 2])``) -> 64 features.
- ``conv4-pool`` (MiniImageNet): 4 x [3x3 conv, 32 filters, BatchNorm, ReLU,
  2x2 max-pool] on 84x84x3 -> 5x5x32, flattened to 800 features.

Both end in a linear head ``features -> ways``.

BatchNorm modes (``bn_mode``):

- ``"batch"`` (default): every forward pass normalises with the statistics of
  the batch it is given, at training *and* test time, and keeps no running
  averages. This is what the reference MAML code does (``tf.contrib.layers
  .batch_norm`` with its default ``is_training=True``); since support and query
  are separate forward passes, each is normalised with its own statistics.
- ``"none"``: no normalisation layer (an ablation; weights and head unchanged).

Running-average statistics are deliberately not offered: under a vmapped inner
loop they cannot be updated per task, and evaluating with them changes the
model the paper evaluated.

The network is plain PyTorch layers; its fast paths (tasks side by side as
grouped convolutions, the body once per meta-batch) come from the rules in
``harness.engine.side_by_side`` that every such backbone gets.
"""

from __future__ import annotations

import torch
from torch import nn

import harness
from harness.errors import HarnessError

BN_MODES = ("batch", "none")


class ConvBlock(nn.Sequential):
    """conv -> BatchNorm -> ReLU [-> 2x2 max-pool]; layers addressed as ``body.<i>``.

    With pooling the block runs the max-pool before the ReLU: ReLU is monotone, so
    ``relu(max(x)) == max(relu(x))`` and the gradients are identical too (the max is
    taken at the same element), but ReLU and its backward touch a quarter of the map.
    At the paper's MiniImageNet settings one 32x84x84 map of 320 images is 289 MB.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, pool: bool, bn_mode: str):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)]
        if bn_mode == "batch":
            layers.append(nn.BatchNorm2d(out_channels, track_running_stats=False))
        if pool:
            layers.append(nn.MaxPool2d(2))
        layers.append(nn.ReLU())
        super().__init__(*layers)


class SpatialMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C]
        return x.mean(dim=(2, 3))


class Conv4(nn.Module):
    """``body`` (4 conv blocks + pooling/flatten) and a linear ``head``."""

    def __init__(self, in_channels: int, image_size: int, ways: int, filters: int, max_pool: bool, bn_mode: str):
        super().__init__()
        if bn_mode not in BN_MODES:
            raise HarnessError(f"unknown bn_mode {bn_mode!r}; valid modes: {', '.join(BN_MODES)}")
        stride = 1 if max_pool else 2
        blocks = [ConvBlock(in_channels if i == 0 else filters, filters, stride, max_pool, bn_mode) for i in range(4)]
        if max_pool:
            final = image_size
            for _ in range(4):
                final //= 2  # 84 -> 42 -> 21 -> 10 -> 5
            readout: nn.Module = nn.Flatten()
            features = filters * final * final  # 32 * 5 * 5 = 800
        else:
            readout = SpatialMean()
            features = filters  # 64
        self.body = nn.Sequential(*blocks, readout)
        self.head = nn.Linear(features, ways)
        self.feature_dim = features
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # The reference code initialises conv kernels with Xavier-uniform
                # (tf.contrib.layers.xavier_initializer_conv2d) and zero biases.
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # The head starts at zero (all logits equal, so every task starts from
        # the uniform prediction). The TF reference draws w5 ~ N(0, 1) for
        # Omniglot; measured here (ANIL, Omniglot 20w1s, meta-batch 16, seed 0,
        # train query accuracy over iterations 250-300): N(0, 1) 6.4 %
        # (stuck at chance), PyTorch's default Linear init ~21 % (at 150-200),
        # zeros 41.9 %. Zero heads are also the "zeroing trick" of Kao et al.
        # (ICLR 2022).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, ways]
        return self.head(self.body(x))


class Conv4Backbone:
    name = "conv4"
    description = "Omniglot Conv4: 4 x [3x3 conv 64, stride 2, BN, ReLU] -> spatial mean (64 features) -> linear head"

    def build(self, in_channels: int, image_size: int, ways: int, bn_mode: str = "batch") -> Conv4:
        return Conv4(in_channels, image_size, ways, filters=64, max_pool=False, bn_mode=bn_mode)


class Conv4PoolBackbone:
    name = "conv4-pool"
    description = (
        "MiniImageNet Conv4: 4 x [3x3 conv 32, BN, ReLU, 2x2 max-pool] -> flatten (800 on 84x84) -> linear head"
    )

    def build(self, in_channels: int, image_size: int, ways: int, bn_mode: str = "batch") -> Conv4:
        return Conv4(in_channels, image_size, ways, filters=32, max_pool=True, bn_mode=bn_mode)


@harness.hookimpl
def register_backbones(registry):
    registry.add(Conv4Backbone())
    registry.add(Conv4PoolBackbone())
