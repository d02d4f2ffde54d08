"""CUB-200-2011 (Wah et al. 2011) with the few-shot class split of Chen et al. (ICLR 2019): 100 / 50 / 50 birds.

Reads the official release, ``ROOT/CUB_200_2011/images/<NNN.Class_name>/*.jpg`` (or under
``ROOT/cub/``); the class lists are ``splits/cub/*.txt`` (their source in the header). Every image is
resized to 84x84 RGB with Lanczos, the resolution of Chen et al.'s Conv-4 and of MiniImageNet, so that
a run trained on MiniImageNet is evaluated on CUB's classes as they are (``harness eval RUN --data
cub-5w5s``), the cross-domain setting of Chen et al. Sec. 4.4. Bounding boxes are not used.

The first start decodes the split's JPEGs once into the cache (11,788 images in all, about 250 MB),
later runs memory-map it.

    harness run --algo maml --data cub-5w1s
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import harness
from harness.data.images import decode_image
from harness.data.labelled_pools import labelled_sampler, read_split_file, refuse_other_splits
from harness.data.root import decode_all, fingerprint
from harness.errors import HarnessError
from harness_plugins.datasets.miniimagenet import MiniImageNet

SPLITS_DIR = Path(__file__).resolve().parent / "splits" / "cub"
IMAGE_SIZE = 84


def find_images(data_root: Path) -> Path:
    for candidate in (data_root / "CUB_200_2011" / "images", data_root / "cub" / "CUB_200_2011" / "images"):
        if candidate.is_dir():
            return candidate
    raise HarnessError(
        f"CUB-200-2011 not found: expected {data_root / 'CUB_200_2011' / 'images'}/<NNN.Class_name>/*.jpg (the "
        f"official CUB_200_2011.tgz, unpacked); pass --data-root / set HARNESS_DATA_ROOT"
    )


def _decode(path: Path) -> np.ndarray:
    return decode_image(path, "RGB", IMAGE_SIZE, "CUB").transpose(2, 0, 1)  # [3, 84, 84]


class CUB:
    name = "cub"
    description = "CUB-200-2011, Chen et al. 2019 split (100/50/50 birds), 84x84 RGB from the official JPEGs"
    default_backbone = "conv4-pool"

    def paper_defaults(self, spec) -> dict:
        return MiniImageNet().paper_defaults(spec)  # the same image size and kind; Raghu et al. have no CUB runs

    def open(self, spec, split: str, data_root: Path, options: dict):
        refuse_other_splits(options, "CUB", "chen")
        images = find_images(Path(data_root))
        classes = read_split_file(SPLITS_DIR / f"{split}.txt")
        missing = [name for name in classes if not (images / name).is_dir()]
        if missing:
            raise HarnessError(
                f"CUB: {len(missing)} class folders of the {split} split missing in {images}, e.g. {missing[0]}"
            )
        files = [path for name in classes for path in sorted((images / name).glob("*.jpg"))]
        labels = [path.parent.name for path in files]
        return labelled_sampler(
            spec,
            options,
            split_name=f"CUB {split}",
            cache_name=f"cub-{split}-{IMAGE_SIZE}",
            key=fingerprint(files, extra=f"cub/{split}/v1"),
            labels=labels,
            classes=classes,
            pixels=lambda order, allocate: decode_all([files[i] for i in order], _decode, f"CUB {split}", allocate),
        )


@harness.hookimpl
def register_task_samplers(registry):
    registry.add(CUB())
