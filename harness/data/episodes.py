"""Episodes (meta-batches of few-shot tasks) and the class-pool sampler that draws them.

The pool is either dense, ``[classes, images_per_class, C, H, W]`` in memory (Omniglot,
MiniImageNet: every class the same size, the fastest gather), or ragged: one flat
``[images, C, H, W]`` uint8 array, class after class, with each class's image count, so
classes of unequal size are kept whole, and a numpy memory map of it is read lazily, only
the images a task draws (data larger than RAM, e.g. tieredImageNet's ~9.5 GB at 84x84).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.errors import HarnessError


@dataclass
class Episodes:
    """A meta-batch of ``tasks`` N-way K-shot tasks with Q queries per class."""

    support_x: torch.Tensor  # [tasks, ways*shots, C, H, W] float32
    support_y: torch.Tensor  # [tasks, ways*shots] int64 in 0..ways-1
    query_x: torch.Tensor  # [tasks, ways*queries, C, H, W]
    query_y: torch.Tensor  # [tasks, ways*queries]
    ways: int

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> Episodes:
        return Episodes(
            self.support_x.to(device, non_blocking=True),
            self.support_y.to(device, non_blocking=True),
            self.query_x.to(device, non_blocking=True),
            self.query_y.to(device, non_blocking=True),
            self.ways,
        )

    def chunk(self, start: int, stop: int) -> Episodes:
        return Episodes(
            self.support_x[start:stop],
            self.support_y[start:stop],
            self.query_x[start:stop],
            self.query_y[start:stop],
            self.ways,
        )


def _rotate(pixels: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotate ``pixels[i]`` by ``quarter_turns[i] * 90`` degrees (indices over the leading dims of ``quarter_turns``)."""
    rotated = pixels.clone()
    for k in (1, 2, 3):
        mask = quarter_turns == k
        if mask.any():
            rotated[mask] = torch.rot90(pixels[mask], k, dims=(-2, -1))
    return rotated


class ClassPoolSampler:
    """Samples episodes from a uint8 image pool, dense or ragged (see the module docstring).

    Each task draws ``ways`` distinct classes, then ``shots + queries``
    distinct images of each class. Class ``i`` of a task gets label ``i``;
    support and query are ordered class-major. ``rotate_classes`` applies a
    random multiple of 90 degrees per sampled class (the same rotation for all
    of that class's images in the task), as the reference MAML code does for
    Omniglot. ``invert`` maps pixel ``v`` to ``1 - v/255`` (strokes = 1).
    """

    def __init__(
        self,
        images,
        ways: int,
        shots: int,
        queries: int,
        *,
        rotate_classes: bool,
        invert: bool = False,
        split_name: str = "split",
        class_names=None,
        counts=None,
    ):
        """``images``: a dense uint8 tensor ``[classes, images_per_class, C, H, W]``; or, with ``counts``
        (images per class), a flat uint8 array ``[sum(counts), C, H, W]`` (tensor, ndarray or memory map)."""
        if counts is None:
            if images.dtype != torch.uint8 or images.dim() != 5:
                raise ValueError("images must be uint8 [classes, images_per_class, C, H, W]")
            self.counts = np.full(images.shape[0], images.shape[1])
        else:
            if images.dtype not in (torch.uint8, np.uint8) or images.ndim != 4 or sum(counts) != images.shape[0]:
                raise ValueError("a ragged pool is uint8 [sum(counts), C, H, W] with its images class after class")
            self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])  # first image of each class
        self.ragged = counts is not None
        if ways > len(self.counts):
            raise HarnessError(
                f"{ways}-way tasks need {ways} classes but the {split_name} split has only {len(self.counts)}"
            )
        if shots + queries > self.counts.min():
            smallest = int(self.counts.argmin())
            which = f" (class {class_names[smallest]})" if class_names is not None else ""
            raise HarnessError(
                f"{shots}-shot tasks with {queries} queries need {shots + queries} images per class but the "
                f"{split_name} split has {int(self.counts.min())}{which}"
            )
        self.images = images
        self.ways, self.shots, self.queries = ways, shots, queries
        self.rotate_classes = rotate_classes
        self.invert = invert
        self.class_names = class_names

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def in_channels(self) -> int:
        return self.images.shape[-3]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def _gather(self, classes: np.ndarray, picks: np.ndarray) -> torch.Tensor:
        """Images ``picks`` (indices within their class) of ``classes`` (shapes broadcast) -> ``[*shape, C, H, W]``."""
        if not self.ragged:
            return self.images[torch.from_numpy(classes), torch.from_numpy(picks)]
        rows = self.offsets[classes] + picks
        if isinstance(self.images, torch.Tensor):
            pixels = self.images[torch.from_numpy(rows.reshape(-1))]
        else:  # a memory map reads just these images
            pixels = torch.from_numpy(np.ascontiguousarray(self.images[rows.reshape(-1)]))
        return pixels.view(*rows.shape, *pixels.shape[1:])

    def _to_float(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., C, H, W]`` -> float in [0, 1], inverted if configured."""
        x = pixels.float().div_(255.0)
        return 1.0 - x if self.invert else x

    def sample_classification(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A plain labelled batch over all classes of the split (labels = class indices), for pretraining."""
        classes = rng.integers(0, self.num_classes, size=batch_size)
        if self.ragged:
            picks = (rng.random(batch_size) * self.counts[classes]).astype(np.int64)
        else:
            picks = rng.integers(0, int(self.counts[0]), size=batch_size)
        pixels = self._gather(classes, picks)  # [batch, C, H, W]
        if self.rotate_classes:  # the same augmentation as episodes, per image here
            pixels = _rotate(pixels, torch.from_numpy(rng.integers(0, 4, size=batch_size)))
        return self._to_float(pixels), torch.from_numpy(classes)

    def sample(self, num_tasks: int, rng: np.random.Generator) -> Episodes:
        ways, shots, per_class = self.ways, self.shots, self.shots + self.queries
        # Sorting uniform keys gives independent uniform permutations per row.
        classes = rng.random((num_tasks, self.num_classes)).argsort(axis=1)[:, :ways]  # [tasks, ways]
        keys = rng.random((num_tasks, ways, int(self.counts.max())))
        if self.ragged:  # positions past a smaller class's end sort last, so never get picked
            keys[np.arange(keys.shape[2]) >= self.counts[classes][:, :, None]] = np.inf
        picks = keys.argsort(axis=2)[:, :, :per_class]  # [tasks, ways, K+Q], distinct within a class
        pixels = self._gather(classes[:, :, None], picks)  # [tasks, ways, K+Q, C, H, W]
        if self.rotate_classes:
            pixels = _rotate(pixels, torch.from_numpy(rng.integers(0, 4, size=(num_tasks, ways))))
        x = self._to_float(pixels)
        tasks, _, _, c, h, w = x.shape
        labels = torch.arange(ways).view(1, ways, 1)
        support_x = x[:, :, :shots].reshape(tasks, ways * shots, c, h, w)
        query_x = x[:, :, shots:].reshape(tasks, ways * self.queries, c, h, w)
        support_y = labels.expand(tasks, ways, shots).reshape(tasks, ways * shots)
        query_y = labels.expand(tasks, ways, self.queries).reshape(tasks, ways * self.queries)
        return Episodes(
            support_x.contiguous(), support_y.contiguous(), query_x.contiguous(), query_y.contiguous(), ways
        )
