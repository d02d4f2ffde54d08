"""tieredImageNet (Ren et al., ICLR 2018): 608 ImageNet classes under 34 higher-level categories, split by
category into 351 / 97 / 160 classes, 84x84 RGB.

Two releases are read, from ``ROOT/tiered-imagenet/`` or ``ROOT/tieredImageNet/`` (or ``ROOT/``):

- MetaOptNet's (Lee et al. 2019): ``{train,val,test}_images.npz`` (``images``: uint8 N x 84 x 84 x 3)
  with ``{split}_labels.pkl`` (a dict whose ``labels`` lists each image's class);
- Ren et al.'s original: ``{split}_images_png.pkl`` (a list of PNG-encoded images) with
  ``{split}_labels.pkl`` (``label_specific``, and ``label_specific_str`` naming the classes).

The split is the files' own (the classes of ``train`` are the training classes). The first start
decodes a split once into the cache: the training split is 448,695 images, 9.5 GB as uint8 (decoded
straight to disk, image by image, for the PNG release); later runs memory-map it.

    harness run --algo anil --data tieredimagenet-5w1s
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

import harness
from harness.data.images import decode_image
from harness.data.labelled_pools import labelled_sampler, refuse_other_splits
from harness.data.root import fingerprint
from harness.errors import HarnessError
from harness_plugins.datasets.miniimagenet import MiniImageNet

IMAGE_SIZE = 84


def find_root(data_root: Path) -> Path:
    for candidate in (data_root / "tiered-imagenet", data_root / "tieredImageNet", data_root):
        if (candidate / "train_labels.pkl").is_file():
            return candidate
    raise HarnessError(
        f"tieredImageNet not found: expected {data_root / 'tiered-imagenet'}/{{train,val,test}}_labels.pkl with "
        f"{{split}}_images.npz (MetaOptNet) or {{split}}_images_png.pkl (Ren et al.); pass --data-root / set "
        f"HARNESS_DATA_ROOT"
    )


def _unpickle(path: Path):
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}") from None


def read_labels(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Each image's class, and the class names (Ren et al.'s ``label_specific_str``) where the file has them."""
    data = _unpickle(path)
    key = next((k for k in ("labels", "label_specific") if isinstance(data, dict) and k in data), None)
    if key is None:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise HarnessError(f"{path}: expected a dict with 'labels' or 'label_specific', found {found}")
    names = data.get("label_specific_str")
    return np.asarray(data[key]), (list(names) if names is not None else None)


def pixel_reader(root: Path, split: str):
    npz, png = root / f"{split}_images.npz", root / f"{split}_images_png.pkl"
    if npz.is_file():

        def from_npz(order: np.ndarray, allocate) -> np.ndarray:
            with np.load(npz) as archive:
                images = archive["images"]  # [N, 84, 84, 3]
            if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
                raise HarnessError(f"{npz}: images must be uint8 N x 84 x 84 x 3, got {images.dtype} {images.shape}")
            return np.ascontiguousarray(images[order].transpose(0, 3, 1, 2))

        return npz, from_npz
    if png.is_file():

        def from_png(order: np.ndarray, allocate) -> np.ndarray:
            encoded = _unpickle(png)
            out = allocate((len(order), 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
            for row, index in enumerate(order):
                image = decode_image(io.BytesIO(bytes(encoded[index])), "RGB", IMAGE_SIZE, "tieredImageNet")
                out[row] = image.transpose(2, 0, 1)  # [3, 84, 84]
            return out

        return png, from_png
    raise HarnessError(f"tieredImageNet {split}: neither {npz.name} nor {png.name} in {root}")


class TieredImageNet:
    name = "tieredimagenet"
    description = (
        "tieredImageNet, Ren et al. split (351/97/160 classes), 84x84 RGB; MetaOptNet .npz or Ren's PNG pickles"
    )
    default_backbone = "conv4-pool"

    def paper_defaults(self, spec) -> dict:
        return MiniImageNet().paper_defaults(spec)  # the same images; Raghu et al. have no tieredImageNet runs

    def open(self, spec, split: str, data_root: Path, options: dict):
        refuse_other_splits(options, "tieredImageNet", "ren")
        root = find_root(Path(data_root))
        labels_path = root / f"{split}_labels.pkl"
        labels, names = read_labels(labels_path)
        source, pixels = pixel_reader(root, split)
        classes = sorted(set(labels.tolist()))
        return labelled_sampler(
            spec,
            options,
            split_name=f"tieredImageNet {split}",
            cache_name=f"tieredimagenet-{split}-{IMAGE_SIZE}",
            key=fingerprint([labels_path, source], extra=f"tieredimagenet/{split}/v1"),
            labels=labels,
            classes=classes,
            pixels=pixels,
            class_names=[str(names[c]) if names else str(c) for c in classes],
        )


@harness.hookimpl
def register_task_samplers(registry):
    registry.add(TieredImageNet())
