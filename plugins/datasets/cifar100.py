"""CIFAR-FS (Bertinetto et al., ICLR 2019) and FC100 (Oreshkin et al., NeurIPS 2018): few-shot splits of CIFAR-100.

Both read CIFAR-100 in its own python format, as ``torchvision.datasets.CIFAR100`` downloads it:
``ROOT/cifar-100-python/{train,test,meta}`` (or ``ROOT/cifar100/cifar-100-python/``), pickles of
``data`` (uint8 N x 3072, channels first), ``fine_labels``, ``coarse_labels`` and, in ``meta``, the
class names. Every class keeps all 600 of its images (CIFAR's train and test files together), 32x32 RGB.

- ``cifar-fs``: 64 / 16 / 20 fine classes, drawn at random by Bertinetto et al.;
- ``fc100``: 12 / 4 / 4 superclasses (60 / 20 / 20 fine classes), split by superclass so that test
  classes are semantically far from training ones.

The class lists are ``splits/cifar-fs/*.txt`` and ``splits/fc100/*.txt`` (sources in their headers).
The first start decodes the 60,000 images once into the cache (about 180 MB, seconds).

    harness run --algo anil --data cifar-fs-5w1s
    harness run --algo maml --data fc100-5w5s
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

import harness
from harness.data.labelled_pools import labelled_sampler, read_split_file, refuse_other_splits
from harness.data.root import fingerprint
from harness.errors import HarnessError

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
FILES = ("train", "test", "meta")


def find_root(data_root: Path) -> Path:
    for candidate in (data_root / "cifar-100-python", data_root / "cifar100" / "cifar-100-python"):
        if all((candidate / name).is_file() for name in FILES):
            return candidate
    raise HarnessError(
        f"CIFAR-100 not found: expected {data_root / 'cifar-100-python'}/{{train,test,meta}} (the python version, "
        f"https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, as torchvision.datasets.CIFAR100 downloads "
        f"it); pass --data-root / set HARNESS_DATA_ROOT"
    )


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}") from None


def read_cifar100(root: Path) -> dict:
    """Labels of both files, in order (train then test), by fine and by coarse class name; and a pixel reader."""
    meta = _unpickle(root / "meta")
    parts = [_unpickle(root / name) for name in ("train", "test")]
    try:
        fine = np.asarray(meta["fine_label_names"])[np.concatenate([p["fine_labels"] for p in parts])]
        coarse = np.asarray(meta["coarse_label_names"])[np.concatenate([p["coarse_labels"] for p in parts])]
    except (KeyError, IndexError) as exc:
        raise HarnessError(f"{root}: not CIFAR-100's python format ({type(exc).__name__}: {exc})") from None

    def pixels(indices: np.ndarray, allocate) -> np.ndarray:
        data = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts])  # [60000, 3072]
        return data[indices].reshape(-1, 3, 32, 32)  # CIFAR stores channel planes: C, H, W

    return {"fine": fine, "coarse": coarse, "pixels": pixels}


#: Paper values for MiniImageNet, the nearest data set in Raghu et al. (which has no CIFAR experiments).
CIFAR_DEFAULTS = {
    "meta_batch_size": (4, "Raghu et al. 2020 App. A, MiniImageNet's value (the paper has no CIFAR experiments)"),
    "inner_steps": (5, "Raghu et al. 2020 App. A, MiniImageNet's value: 5 inner steps in training"),
    "test_inner_steps": (10, "Raghu et al. 2020 App. A, MiniImageNet's value: 10 inner steps at test"),
    "inner_lr": (0.01, "Raghu et al. 2020 App. A, MiniImageNet's value: inner lr 0.01"),
    "outer_lr": (1e-3, "cbfinn/maml main.py: meta_lr 0.001 (Adam)"),
    "queries": (15, "cbfinn/maml main.py: 15 queries per class for RGB data sets"),
    "iterations": (30_000, "Raghu et al. 2020 App. B.1, MiniImageNet's value: 30,000 iterations"),
}


class CifarSplit:
    """One few-shot split of CIFAR-100; ``unit`` says whether its lists name fine classes or superclasses."""

    default_backbone = "conv4-pool"

    def __init__(self, name: str, description: str, unit: str):
        self.name, self.description, self.unit = name, description, unit

    def paper_defaults(self, spec) -> dict:
        return dict(CIFAR_DEFAULTS)

    def open(self, spec, split: str, data_root: Path, options: dict):
        refuse_other_splits(options, self.name, self.name)
        root = find_root(Path(data_root))
        cifar = read_cifar100(root)
        listed = read_split_file(SPLITS_DIR / self.name / f"{split}.txt")
        fine = cifar["fine"]
        if self.unit == "coarse":  # every fine class of the listed superclasses, in CIFAR's order
            listed = sorted(set(fine[np.isin(cifar["coarse"], listed)]), key=list(fine).index)
        key = fingerprint([root / name for name in FILES], extra=f"{self.name}/{split}/v1")
        return labelled_sampler(
            spec,
            options,
            split_name=f"{self.name} {split}",
            cache_name=f"{self.name}-{split}-32",
            key=key,
            labels=fine,
            classes=listed,
            pixels=cifar["pixels"],
        )


@harness.hookimpl
def register_task_samplers(registry):
    registry.add(
        CifarSplit("cifar-fs", "CIFAR-FS, Bertinetto et al. split (64/16/20 CIFAR-100 classes), 32x32", "fine")
    )
    registry.add(CifarSplit("fc100", "FC100, Oreshkin et al. split by superclass (60/20/20 classes), 32x32", "coarse"))
