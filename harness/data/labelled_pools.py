"""Episode samplers for data sets that come as labelled images: the classes of a split, their images
class after class, decoded once into the memory-mapped cache (``harness.data.root``).

The data-set plugins of tieredImageNet, CIFAR-FS, FC100, CUB and MiniImageNet's parquet copies differ
only in how they read labels and pixels; this is what they share. Labels are read at every start
(cheap); pixels only when the cache has no array for the source's fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from harness.data.episodes import ClassPoolSampler
from harness.data.root import load_or_build_array
from harness.errors import HarnessError


def grouped_by_class(labels: Sequence, classes: Sequence, needed: int, source: str) -> tuple[np.ndarray, list[int]]:
    """Indices of the images of ``classes`` (in that order), class after class and in source order within a
    class, and each class's count. A class with fewer than ``needed`` images, or none, is an error naming it."""
    per_image = np.asarray(labels)
    order, counts = [], []
    for name in classes:
        members = np.flatnonzero(per_image == name)
        if len(members) < needed:
            raise HarnessError(
                f"{source}: class {name} has {len(members)} images, fewer than the {needed} a task needs"
            )
        order.append(members)
        counts.append(len(members))
    return np.concatenate(order), counts


def class_pool(array, counts: list[int]) -> tuple:
    """``(images, counts)`` for :class:`ClassPoolSampler`: a dense ``[classes, images, C, H, W]`` tensor in
    memory when the classes are of equal size (the fastest gather), else the flat array, ragged."""
    if len(set(counts)) == 1:
        return torch.from_numpy(np.array(array)).view(len(counts), counts[0], *array.shape[1:]), None
    return array, counts


def labelled_sampler(
    spec,
    options: dict,
    *,
    split_name: str,
    cache_name: str,
    key: str,
    labels: Sequence,
    classes: Sequence[str],
    pixels: Callable[[np.ndarray, Callable], np.ndarray],
    class_names: Sequence[str] | None = None,
) -> ClassPoolSampler:
    """The sampler of one split: ``classes`` (values of ``labels``) with their images, decoded by
    ``pixels(indices, allocate) -> uint8 [len(indices), C, H, W]`` once per ``key`` (a fingerprint of the
    source); ``allocate`` is ``load_or_build_array``'s, for decoders that write into a memory map."""
    needed = spec.shots + options["queries"]
    order, counts = grouped_by_class(labels, classes, needed, split_name)
    array = load_or_build_array(cache_name, key, lambda allocate: pixels(order, allocate))  # [images, C, H, W]
    if array.shape[0] != len(order):
        raise HarnessError(f"{split_name}: decoded {array.shape[0]} images where the labels list {len(order)}")
    images, ragged_counts = class_pool(array, counts)
    return ClassPoolSampler(
        images,
        spec.ways,
        spec.shots,
        options["queries"],
        rotate_classes=False,
        split_name=split_name,
        class_names=list(class_names or classes),
        counts=ragged_counts,
    )


def refuse_other_splits(options: dict, dataset: str, name: str) -> None:
    """These data sets have one published class split each (``--split default`` or its name)."""
    if options.get("split", "default") not in ("default", name):
        raise HarnessError(f"unknown {dataset} split {options['split']!r}; valid splits: {name}")


def read_split_file(path: Path) -> list[str]:
    """A shipped class list: one class per line, ``#`` comments."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]
